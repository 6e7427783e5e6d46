"""The geometry of a net without running it: every layer's inputs, output shape and
receptive field, through nested Sequentials and Graphs.

``leaf_graph(net)`` flattens the containers into one DAG of the layers that compute:
(dotted path, layer, paths of the layers it reads), in running order; the net's input is
``"input"``. ``layer_fields(net, input_shape)`` walks it once.

Receptive fields follow :func:`minconv.geometry.receptive_field_step` (first-pixel
convention): a unit at position i of a layer sees input pixels
``start + i*jump ... start + i*jump + size - 1``. Where paths meet (Add, Concat) the
field is the union of the inputs' fields: the largest. A unit after flattening, global
average pooling or a fully connected layer sees the whole map its input saw.
"""
import numpy as np

from ..geometry import conv_output_size, pair, pool_output_size, receptive_field_step
from .container import is_container
from .conv import Conv2D
from .layers import LRN, Dropout, Flatten, Linear, MaxPool2D, ReLU
from .merge import Identity
from .norm import BatchNorm2D
from .pool import AdaptiveAvgPool2D, AvgPool2D
from .saturating import Sigmoid, Tanh

_SAME_SHAPE = (ReLU, LRN, Dropout, BatchNorm2D, Identity, Tanh, Sigmoid)

INPUT = "input"


def leaf_graph(net, prefix="", source=INPUT):
    """([(path, layer, [input paths]), ...], output path) of ``net`` (see the module)."""
    if not is_container(net):
        return [(prefix.rstrip(".") or type(net).__name__, net, [source])], \
            prefix.rstrip(".") or type(net).__name__
    nodes = []
    graph_inputs = getattr(net, "_inputs", None)
    refs, current = {INPUT: source}, source
    for name, layer in net._ordered_children():
        reads = [_ref(net, refs, i, prefix) for i in graph_inputs[name]] \
            if graph_inputs is not None else [current]
        path = f"{prefix}{name}"
        if is_container(layer):
            inner, out = leaf_graph(layer, path + ".", reads[0])
            nodes += inner
        else:
            nodes.append((path, layer, reads))
            out = path
        refs[name] = current = out
    output = refs[net.output] if graph_inputs is not None else current
    return nodes, output


def _ref(net, refs, name, prefix):
    """The leaf that gives the value a Graph node reads as ``name`` (a node, "input", or a
    dotted path inside a node)."""
    if name in refs:
        return refs[name]
    inner = net.resolve(name)   # a layer inside a nested node
    full = f"{prefix}{name}"
    return leaf_graph(inner, full + ".")[1] if is_container(inner) else full


def container_outputs(net):
    """{dotted path of every container inside: path of the leaf that gives its output}."""
    out = {}
    for path, layer in net.named_layers(leaves=False):
        if is_container(layer):
            out[path] = leaf_graph(layer, path + ".")[1]
    return out


def _window(layer):
    """(kernel, stride, padding, dilation) pairs of a conv or pooling layer, else None."""
    if isinstance(layer, Conv2D):
        return layer.kernel_size, layer.stride, layer.padding, layer.dilation
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        k = pair(layer.kernel_size, "kernel_size")
        return k, pair(layer.stride, "stride"), pair(layer.padding, "padding"), (1, 1)
    return None


def _output_shape(layer, shapes):
    """Output shape (C, H, W) or (D,) of ``layer`` for inputs of ``shapes`` (per image)."""
    shape = shapes[0]
    if getattr(layer, "takes_list", False):
        if hasattr(layer, "axis"):   # Concat
            axis = layer.axis - 1 if layer.axis > 0 else layer.axis
            return tuple(sum(s[axis] for s in shapes) if i == axis % len(shape) else n
                         for i, n in enumerate(shape))
        return shape
    window = _window(layer)
    if window is not None:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window
        if isinstance(layer, Conv2D):
            return (layer.out_channels, conv_output_size(shape[1], kh, sh, ph, dh),
                    conv_output_size(shape[2], kw, sw, pw, dw))
        return (shape[0], pool_output_size(shape[1], kh, sh, ph, layer.ceil_mode),
                pool_output_size(shape[2], kw, sw, pw, layer.ceil_mode))
    if isinstance(layer, _SAME_SHAPE):
        return tuple(shape)
    if isinstance(layer, Flatten):
        return (int(np.prod(shape)),)
    if isinstance(layer, Linear):
        return (layer.out_features,)
    if isinstance(layer, AdaptiveAvgPool2D):
        from ..functional.avgpool import adaptive_output_size
        return (shape[0],) + adaptive_output_size(layer.output_size, (1,) + tuple(shape))
    # anything else: run it once on zeros
    dtype = next(iter(layer.params.values())).dtype if layer.params else np.float32
    y = layer.forward(np.zeros((2,) + tuple(shape), dtype=dtype))
    layer.clear_cache()
    return tuple(y.shape[1:])


def _whole(field, shape):
    """The field of a unit that sees all of an input map of ``shape`` with ``field``."""
    if field is None or shape is None or len(shape) != 3:
        return None if field is None or shape is None else field
    return tuple((size + (n - 1) * jump, size + (n - 1) * jump, start)
                 for (size, jump, start), n in zip(field, shape[1:]))


def _union(fields):
    """The smallest field holding all of ``fields`` (per axis), None if any is None."""
    if any(f is None for f in fields):
        return None
    out = []
    for axis in zip(*fields):
        lo = min(start for _, _, start in axis)
        hi = max(start + size for size, _, start in axis)
        out.append((hi - lo, max(jump for _, jump, _ in axis), lo))
    return tuple(out)


def _adaptive_window(n, n_out):
    """A window (kernel, stride) covering PyTorch's adaptive bins: exact when n_out
    divides n; otherwise the widest bin, with the mean stride rounded down (at least 1)."""
    if n % n_out == 0:
        return n // n_out, n // n_out
    return -(-n // n_out) + 1, max(n // n_out, 1)


def layer_fields(net, input_shape=None):
    """{path: dict(layer, inputs, shape, field)} for every computing layer of ``net``.

    input_shape : (C, H, W) or (N, C, H, W) (N ignored), or None (shapes unknown; fields
                  past a global pooling or flattening then unknown too)
    shape       : the output shape per image, or None
    field       : ((size, jump, start) rows, (... columns)) or None (whole input, unknown size)
    """
    shape0 = None if input_shape is None else tuple(int(s) for s in input_shape)[-3:]
    if shape0 is not None and len(shape0) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    nodes, _ = leaf_graph(net)
    info = {INPUT: dict(layer=None, inputs=[], shape=shape0, field=((1, 1, 0), (1, 1, 0)),
                        flat=False)}
    for path, layer, reads in nodes:
        ins = [info[r] for r in reads]
        shapes = [i["shape"] for i in ins]
        shape = None
        if all(s is not None for s in shapes):
            try:
                shape = _output_shape(layer, shapes)
            except (ValueError, IndexError) as error:
                raise ValueError(f"layer {path!r} ({type(layer).__name__}) cannot take input "
                                 f"{shapes[0] if len(shapes) == 1 else shapes}: {error}") \
                    from None
        field, flat = _union([i["field"] for i in ins]) if len(ins) > 1 else ins[0]["field"], \
            any(i["flat"] for i in ins)
        window = _window(layer)
        if window is not None and not flat and field is not None:
            field = tuple(receptive_field_step(f, k, s, p, d) for f, k, s, p, d in
                          zip(field, *window))
        elif isinstance(layer, AdaptiveAvgPool2D) and not flat:
            if shape is None or shapes[0] is None:
                field = None
            elif shape[1:] == (1, 1):
                field = _whole(field, shapes[0])
            elif field is not None:
                field = tuple(receptive_field_step(f, *_adaptive_window(n, m), 0) for f, n, m in
                              zip(field, shapes[0][1:], shape[1:]))
        elif isinstance(layer, (Flatten, Linear)) and not flat:
            field, flat = _whole(field, shapes[0]) if shapes[0] is not None else None, True
            if field is not None and len(shapes[0]) == 3:
                field = tuple((size, size, start) for size, _, start in field)
        info[path] = dict(layer=layer, inputs=reads, shape=shape, field=field, flat=flat)
    del info[INPUT]
    return info
