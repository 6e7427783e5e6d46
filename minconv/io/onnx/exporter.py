"""minconv net -> ONNX model: one exporter per layer class, a walk over the net.

The net runs once on zeros of ``input_shape`` so that every exporter knows the shapes
it works on; the model's batch size is symbolic ("N"). Nested Sequentials and Graphs are
flattened, their layers named by dotted path (the parameters keep those names too:
``conv1.W``), so an exported net reads like its ``state_dict``.
"""
import os
import tempfile

import numpy as np

from ...nn.container import Container

OPSET = 17
_EXPORTERS = {}


def exports(*classes):
    def register(function):
        for cls in classes:
            _EXPORTERS[cls] = function
        return function
    return register


def _pair(value):
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)


class _Writer:
    """Collects nodes and initializers; ``node(...)`` returns its output name."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    def constant(self, name, array):
        array = np.require(array, requirements="C")  # (ascontiguousarray makes 0-D 1-D)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def node(self, op_type, inputs, name, outputs=None, **attributes):
        outputs = outputs or [name]
        self.nodes.append(self.helper.make_node(op_type, inputs, outputs, name=name,
                                                **attributes))
        return outputs[0]


def _walk(net, prefix=""):
    """(path, layer, input paths) of every leaf layer in forward order; the container's
    input is "" until resolved by the caller."""
    from ...nn import Graph
    steps, previous = [], prefix + "\0in"
    if isinstance(net, Graph):
        names, needed = {}, net._ancestors(net.output)  # nodes the output does not read: none
        for name in [n for n in net.order() if n in needed]:
            layer = net[name]
            inputs = [prefix + "\0in" if i == "input" else names[i] for i in net.inputs_of(name)]
            path = prefix + name
            if isinstance(layer, Container):
                inner = _walk(layer, path + ".")
                steps += _rewire(inner, path + ".\0in", inputs[0])
                names[name] = inner[-1][0]
            else:
                steps.append((path, layer, inputs))
                names[name] = path
        return _reroute_output(steps, names[net.output])
    for name, layer in net.items():
        path = prefix + name
        if isinstance(layer, Container):
            inner = _rewire(_walk(layer, path + "."), path + ".\0in", previous)
            steps += inner
            previous = inner[-1][0]
        else:
            steps.append((path, layer, [previous]))
            previous = path
    return steps


def _rewire(steps, placeholder, source):
    return [(path, layer, [source if i == placeholder else i for i in inputs])
            for path, layer, inputs in steps]


def _reroute_output(steps, output):
    """Keep the output node last (a Graph's output need not be the last node added)."""
    last = [s for s in steps if s[0] == output]
    return [s for s in steps if s[0] != output] + last


def save_onnx(net, path, input_shape, opset=OPSET):
    """Write ``net`` (a Sequential or Graph of minconv layers) as an ONNX model.

    input_shape : (N, C, H, W) of an example input; the batch size becomes symbolic.
    The model passes ``onnx.checker``; any layer without an ONNX form is a ValueError
    naming it.
    """
    from .importer import require_onnx
    onnx = require_onnx()
    from onnx import TensorProto, helper
    params = next(iter(net.params.values()), None)
    dtype = np.float64 if params is not None and params.dtype == np.float64 else np.float32
    from . import export_ops  # noqa: F401  (registers the exporters)
    steps = _walk(net)
    shapes = _shapes(net, steps, input_shape, dtype)
    writer = _Writer()
    writer.dtype, writer.opset = dtype, opset  # an exporter may need a newer opset
    tensor = {"\0in": "input"}
    for name, layer, inputs in steps:
        exporter = _EXPORTERS.get(type(layer))
        if exporter is None:
            raise ValueError(f"save_onnx: layer {name!r} ({type(layer).__name__}) has no ONNX "
                             "form in minconv's exporter")
        sources = [tensor[i] for i in inputs]
        tensor[name] = exporter(writer, name, layer, sources, [shapes[i] for i in inputs])
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    out_shape = shapes[steps[-1][0]]
    graph = helper.make_graph(
        writer.nodes, "minconv",
        [helper.make_tensor_value_info("input", elem, ["N"] + list(input_shape[1:]))],
        [helper.make_tensor_value_info(tensor[steps[-1][0]], elem, ["N"] + list(out_shape[1:]))],
        writer.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", writer.opset)],
                              producer_name="minconv")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(suffix=".onnx.tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(model.SerializeToString())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return model


def _shapes(net, steps, input_shape, dtype):
    """The output shape of every leaf layer, from one forward pass on zeros."""
    record = [path for path, _, _ in steps]
    net.forward(np.zeros(input_shape, dtype=dtype), record=record)
    shapes = {"\0in": tuple(input_shape)}
    shapes.update({path: tuple(net.outputs[path].shape) for path in record})
    net.clear_cache()
    return shapes
