"""Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Pad, and the shape subgraph's Shape,
Cast and ConstantOfShape.

Shape is folded at load time from the static shapes ONNX's shape inference gives; a
symbolic batch size becomes 0, which Reshape reads as "copy the input's size here", so
PyTorch's ``x.view(x.size(0), -1)`` (Shape-Gather-Unsqueeze-Concat-Reshape) keeps working
for any batch size. A Reshape to a fixed batch size equal to the model's (the Caffe2
exports of the light models reshape to (1, 1024)) copies the batch size the same way.
"""
import numpy as np

from ....nn import Flatten as Flatten1
from ....nn.merge import Identity
from ....nn.tensor_ops import Flatten, Pad, Reshape, Squeeze, Transpose, Unsqueeze
from ..node import ints
from ..registry import converter


@converter("Flatten")
def flatten(node):
    axis = int(node.attr("axis", 1))
    return node.layer(Flatten1() if axis == 1 else Flatten(axis))


@converter("Reshape")
def reshape_attribute(node):  # opset 1-4: the shape is an attribute
    return node.layer(Reshape(ints(node.attr("shape"))))


@converter("Reshape", since=5)
def reshape(node):
    shape = list(ints(node.required_constant(1, "shape")))
    allowzero = bool(node.attr("allowzero", 0))
    # a target that repeats the model's fixed batch size (Caffe2 exports: (1, 1024)) keeps
    # whatever batch comes: the same result at that size, and any other size works too
    batch = node.importer.batch_size()
    x_shape = node.shape(0) if batch is not None and shape and shape[0] == batch else None
    if x_shape and x_shape[0] == batch and not allowzero:
        shape[0] = 0
    return node.layer(Reshape(shape, allowzero=allowzero))


@converter("Transpose")
def transpose(node):
    perm = node.attr("perm")
    return node.layer(Transpose(None if perm is None else ints(perm)))


@converter("Squeeze")
def squeeze_attribute(node):
    axes = node.attr("axes")
    return node.layer(Squeeze(None if axes is None else ints(axes)))


@converter("Squeeze", since=13)
def squeeze(node):
    axes = node.required_constant(1, "axes") if node.has_input(1) else None
    return node.layer(Squeeze(None if axes is None else ints(axes)))


@converter("Unsqueeze")
def unsqueeze_attribute(node):
    return node.layer(Unsqueeze(ints(node.attr("axes"))))


@converter("Unsqueeze", since=13)
def unsqueeze(node):
    return node.layer(Unsqueeze(ints(node.required_constant(1, "axes"))))


def _pad_layer(node, pads, value, axes=None):
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.unsupported("mode", f"{mode!r} is not an ONNX pad mode")
    rank = node.shape(0)
    rank = len(rank) if rank is not None else len(pads) // 2
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    if len(pads) != 2 * len(axes):
        raise node.unsupported("pads", f"{tuple(pads)} has {len(pads)} values for "
                               f"{len(axes)} axes")
    widths = [(0, 0)] * rank
    for k, axis in enumerate(axes):
        widths[axis] = (int(pads[k]), int(pads[k + len(axes)]))
    return node.layer(Pad(widths, mode, value))


@converter("Pad")
def pad_attribute(node):  # opsets 2-10: pads and value are attributes
    pads = node.attr("pads")
    if pads is None:
        pads = node.attr("paddings")
    return _pad_layer(node, ints(pads), float(node.attr("value", 0.0)))


@converter("Pad", since=11)
def pad(node):
    pads = ints(node.required_constant(1, "pads"))
    value = float(np.asarray(node.required_constant(2, "constant_value")).reshape(-1)[0]) \
        if node.has_input(2) else 0.0
    axes = node.required_constant(3, "axes") if node.has_input(3) else None
    return _pad_layer(node, pads, value, axes)


@converter("Shape")
def shape(node):
    """Folded: the static shape of the input, a symbolic batch size as 0."""
    dims = node.shape(0)
    if dims is None:
        raise node.unsupported("input", f"{node.inputs[0]!r} has no static shape, so its Shape "
                               "cannot be folded at load time")
    start, end = node.attr("start", 0), node.attr("end")
    values = []
    for axis, size in enumerate(dims):
        if size is None and axis != 0:
            raise node.unsupported("input", f"{node.inputs[0]!r} has a symbolic size on axis "
                                   f"{axis} (shape {dims}); only the batch size may be symbolic")
        values.append(0 if size is None else size)
    return [np.array(values, dtype=np.int64)[start:end]]


@converter("Cast")
def cast(node):
    import onnx
    target = onnx.helper.tensor_dtype_to_np_dtype(node.attr("to"))
    if target.kind != "f":
        raise node.unsupported("to", f"{target} on a computed tensor: minconv computes in "
                               "float32/float64 only")
    return node.layer(Identity())


@converter("ConstantOfShape")
def constant_of_shape(node):
    raise node.unsupported("input", f"{node.inputs[0]!r} is computed: minconv builds "
                           "ConstantOfShape only from a shape known at load time")
