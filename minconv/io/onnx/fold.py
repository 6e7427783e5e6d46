"""Constant folding: a node whose inputs are all known at load time is evaluated then.

The operators of shape arithmetic and weight construction have NumPy versions here;
any other all-constant node goes through ONNX's own reference implementation
(:mod:`onnx.reference`, NumPy code shipped with the ``onnx`` package). Either way only
NumPy runs; nothing from the file is executed.
"""
import numpy as np


def _axes(node, index=1):
    """Unsqueeze/Squeeze axes: an attribute before opset 13, an input from 13 on."""
    if node.opset >= 13:
        return None if not node.has_input(index) else [int(a) for a in node.constant(index)]
    axes = node.attr("axes")
    return None if axes is None else [int(a) for a in axes]


def _unsqueeze(node):
    x = node.constant(0)
    axes = _axes(node)
    ndim = x.ndim + len(axes)
    shape = list(x.shape)
    for axis in sorted(a % ndim for a in axes):
        shape.insert(axis, 1)
    return [x.reshape(shape)]


def _squeeze(node):
    x = node.constant(0)
    axes = _axes(node)
    return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))]


def _reshape(node):
    from ...nn.tensor_ops import reshape_target
    x, shape = node.constant(0), node.constant(1)
    return [x.reshape(reshape_target(x.shape, shape, bool(node.attr("allowzero", 0))))]


def _constant_of_shape(node):
    from onnx import numpy_helper
    value = node.attr("value")
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else \
        np.zeros(1, np.float32)
    return [np.full([int(s) for s in node.constant(0)], fill[0], dtype=fill.dtype)]


def constant_value(node):
    """The value of a Constant node, from whichever attribute holds it."""
    from onnx import numpy_helper
    if node.attr("value") is not None:
        return numpy_helper.to_array(node.attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if node.attr(key) is not None:
            return np.array(node.attrs[key], dtype=dtype)
    raise node.unsupported(next(iter(node.attrs), "value"), "of Constant is not supported "
                           "(sparse or string constants)")


_NUMPY = {
    "Constant": lambda node: [constant_value(node)],
    "ConstantOfShape": _constant_of_shape,
    "Identity": lambda node: [node.constant(0)],
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Concat": lambda node: [np.concatenate([node.constant(i) for i in range(len(node.inputs))],
                                           axis=node.attr("axis"))],
    "Gather": lambda node: [np.take(node.constant(0), node.constant(1),
                                    axis=node.attr("axis", 0))],
    "Shape": lambda node: [np.array(node.constant(0).shape, dtype=np.int64)[
        slice(node.attr("start", 0), node.attr("end"))]],
}


def fold(node):
    """The output values of an all-constant node."""
    numpy_version = _NUMPY.get(node.op_type)
    if numpy_version is not None and not (node.op_type == "Reshape" and node.opset < 5):
        return numpy_version(node)
    return _reference(node)


def _reference(node):
    import onnx.reference
    from onnx import helper
    feeds = {name: node.constant(i) for i, name in enumerate(node.inputs) if name}
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                            value.shape) for name, value in feeds.items()]
    outputs = [helper.make_empty_tensor_value_info(name) for name in node.outputs if name]
    graph = helper.make_graph([node.proto], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", node.opset)])
    try:
        values = onnx.reference.ReferenceEvaluator(model).run(None, feeds)
    except Exception as error:
        raise ValueError(f"ONNX {node.op_type} node {node.name!r}: its constant inputs could "
                         f"not be folded at load time ({type(error).__name__}: {error})") from None
    values = iter(values)
    return [next(values) if name else None for name in node.outputs]
