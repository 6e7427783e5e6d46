"""ONNX model -> minconv Graph: a loop over the nodes.

Nothing in the file is executed: the protobuf is parsed by the ``onnx`` package, the
initializers become NumPy arrays, and every node is either folded at load time (all its
inputs are constants: shape arithmetic, ``ConstantOfShape`` weights, ``Constant``...) or
handed to the converter registered for its operator type and opset
(:mod:`minconv.io.onnx.registry`), which adds minconv layers named after the node.
"""
import os
import re
from collections import Counter

import numpy as np

from .fold import fold
from .node import Node
from .registry import converter_for

GRAPH_INPUT = "input"


def require_onnx():
    """The ``onnx`` package, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX models need the onnx package: pip install 'minconv[onnx]' "
                          "(or pip install onnx)") from None
    return onnx


def read_model(path):
    """Parse an .onnx file; a missing file is FileNotFoundError, anything that does not
    parse as an ONNX model a ValueError naming the file."""
    onnx = require_onnx()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file not found: {path}")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX model (truncated or corrupt: "
                         f"{type(error).__name__}: {error})") from None
    if not model.HasField("graph") or not model.graph.node or not model.opset_import:
        raise ValueError(f"{path}: not a readable ONNX model (no graph, nodes or opset; "
                         f"truncated or not ONNX)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            onnx.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as error:
            raise ValueError(f"{path}: its external weight data cannot be read: {error}") from None
    return model


def model_opset(model, label="ONNX model"):
    import onnx
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ValueError(f"{label}: no opset of the default ONNX domain is imported "
                         f"(domains: {[o.domain for o in model.opset_import]})")
    opset, newest = int(versions[0]), onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(f"{label}: opset {opset} is newer than the installed onnx knows "
                         f"({newest}); upgrade the onnx package")
    return opset


def _static_shapes(model, infer=True):
    """Tensor name -> shape tuple (None for a symbolic size): the declared shapes, and with
    ``infer`` those of ONNX's shape inference."""
    import onnx
    inferred = model
    if infer:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a model shape inference cannot follow: keep the declared shapes
            inferred = model
    shapes = {}
    graph = inferred.graph
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in tensor.shape.dim)
    return shapes


def _sanitise(name):
    """A node name minconv can use everywhere: '.' addresses nested layers and names become
    file names in reports, so '.', '/', '\\', ':' and spaces turn into '_', and the leading
    '/' of PyTorch's exports goes: "/layer1/layer1.0/conv1/Conv" -> "layer1_layer1_0_conv1_Conv"."""
    name = re.sub(r"[./\\:\s]+", "_", name).strip("_")
    return name or None


class Importer:
    """Builds the Graph; converters reach it through :class:`Node`."""

    def __init__(self, model, label, bind=None, require_input=True, fold_batchnorm=False):
        import onnx.numpy_helper
        from ...nn import Graph
        self.model, self.label = model, label
        self.fold_batchnorm = fold_batchnorm
        self.folded = {}  # BatchNormalization node -> the Conv node it was folded into
        self.opset = model_opset(model, label)
        self.graph = Graph()
        graph = model.graph
        self.constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.constants.update({k: np.asarray(v) for k, v in (bind or {}).items()})
        self.inputs = [i.name for i in graph.input if i.name not in self.constants]
        if len(self.inputs) != 1 and (require_input or len(self.inputs) > 1):
            raise ValueError(
                f"{label}: the graph has {len(self.inputs)} inputs ({', '.join(self.inputs)}); "
                f"a minconv net takes exactly one (the others must be initializers)")
        self.producer = {name: GRAPH_INPUT for name in self.inputs}  # ONNX tensor -> node name
        self.readers = Counter(t for proto in graph.node for t in proto.input if t)
        self.readers.update(o.name for o in graph.output)
        self.declared = _static_shapes(model, infer=False)
        self._shapes = None  # ONNX's shape inference, run when a converter first needs it
        self.node_names = set()
        self.layer_count = 0

    # -- used by Node ---------------------------------------------------------
    def shape_of(self, tensor, infer=True):
        if tensor in self.constants:
            return tuple(self.constants[tensor].shape)
        if not infer:
            return (self._shapes or self.declared).get(tensor)
        if self._shapes is None:
            self._shapes = _static_shapes(self.model)
        return self._shapes.get(tensor)

    def batch_size(self):
        """The fixed batch size the model declares for its input, or None."""
        shape = self.declared.get(self.inputs[0]) if self.inputs else None
        return shape[0] if shape else None

    def internal(self, node_name):
        """A tensor name for the output of an intermediate graph node."""
        tensor = f"\0{node_name}"
        self.producer[tensor] = node_name
        return tensor

    def add_layer(self, name, layer, inputs, node, output):
        name = self._unique(name)
        sources = []
        for tensor in inputs:
            if tensor not in self.producer:
                what = "a constant" if tensor in self.constants else "not computed by any node"
                raise ValueError(f"{self.label}: ONNX {node.op_type} node {node.name!r}: input "
                                 f"{tensor!r} is {what}; minconv cannot use it there")
            sources.append(self.producer[tensor])
        self.graph.add(name, layer, inputs=sources)
        self.layer_count += 1
        if output is not None:
            self.producer[output] = name
        return name

    def _unique(self, name):
        base, k = name, 1
        while name in self.node_names or name == GRAPH_INPUT:
            k += 1
            name = f"{base}_{k}"
        self.node_names.add(name)
        return name

    # -- the loop --------------------------------------------------------------
    def _needed(self):
        """The nodes that the graph outputs depend on (others are skipped)."""
        needed, keep = {o.name for o in self.model.graph.output}, []
        for proto in reversed(self.model.graph.node):
            if any(out in needed for out in proto.output):
                keep.append(proto)
                needed.update(i for i in proto.input if i)
        self.needed_tensors = needed
        return keep[::-1]

    def run(self):
        from ...nn import shapes_only
        with shapes_only():  # layers are built empty; the converters give them the weights
            return self._run()

    def _run(self):
        for position, proto in enumerate(self._needed()):
            name = _sanitise(proto.name) or _sanitise(proto.output[0]) or \
                f"{proto.op_type}_{position}"
            node = Node(proto, self.opset, self, name)
            try:
                self._convert(node)
            except ValueError as error:
                message = str(error)
                if not message.startswith(self.label):
                    message = f"{self.label}: {message}"
                raise ValueError(message) from None
        return self._finish()

    def _convert(self, node):
        if node.proto.domain not in ("", "ai.onnx"):
            raise ValueError(f"ONNX node {node.name!r}: operator {node.proto.domain}."
                             f"{node.op_type} is not supported (only the default ONNX domain)")
        present = [t for t in node.inputs if t]
        if all(t in self.constants for t in present) and node.op_type != "Shape":
            values = fold(node)
        else:
            convert = converter_for(node.op_type, self.opset)
            if convert is None:
                raise ValueError(f"ONNX {node.op_type} node {node.name!r}: operator "
                                 f"{node.op_type!r} (opset {self.opset}) is not supported by "
                                 f"minconv's importer")
            values = convert(node)
            node.check_attributes()
        if isinstance(values, list):  # folded (a converter returns a node name otherwise)
            for tensor, value in zip(node.outputs, values):
                if tensor:
                    self.constants[tensor] = value

    def _finish(self):
        outputs = [o.name for o in self.model.graph.output]
        computed = [self.producer[o] for o in outputs if o in self.producer]
        if computed:
            self.graph.output = computed[0]
        self.graph.onnx_outputs = [(o, self.producer.get(o)) for o in outputs]
        self.graph.onnx_constants = {o: self.constants[o] for o in outputs
                                     if o in self.constants and o not in self.producer}
        self.graph.onnx_opset = self.opset
        self.graph.folded = dict(self.folded)
        rectify_in_place(self.graph)
        return self.graph


def rectify_in_place(graph):
    """Let every ReLU that reads a fresh array (a convolution's, a normalisation's, a
    sum's...) overwrite it, as torchvision's ``ReLU(inplace=True)`` does: on VGG-19 at
    batch 8 the separate outputs were 0.9 GB of new pages a pass. The graph copies an
    input that other nodes still read (and a recorded output) first; a producer outside
    this list may hand out a view of its input or a stored constant, or keep its output
    for its backward pass (LRN, Sigmoid, Tanh, Softmax)."""
    from ... import nn
    from ...nn import arith
    fresh = (nn.Conv2D, nn.BatchNorm2D, nn.Linear, nn.Add, nn.Concat, arith.Scale, arith.Shift)
    for name in graph.order():
        layer, inputs = graph[name], graph.inputs_of(name)
        if (type(layer) is nn.ReLU and inputs[0] != GRAPH_INPUT
                and type(graph[inputs[0]]) in fresh):
            layer.inplace = True


def load_onnx(path, bind=None, fold_batchnorm=False):
    """An ONNX file as a minconv :class:`~minconv.nn.Graph`.

    The graph's nodes carry the ONNX node names (with '_' for '.', '/' and the like); its
    input is the model's one graph input and its output the model's first output (others are the
    outputs of the nodes listed in ``graph.onnx_outputs``). ``bind`` gives values for
    further graph inputs, which then count as constants.

    ``fold_batchnorm`` folds every BatchNormalization, and every Mul or Add by a
    per-channel constant, whose input is a Conv's or a BatchNormalization's output read by
    nothing else into that layer (its weights or scales multiplied, its bias or shift
    moved: :func:`.ops.norm.fold_affine`), as inference runtimes do: one pass over the activations less
    per node folded, but the folded nodes are gone and the layer before each gives the
    output it gave (``graph.folded`` maps each folded node to its layer).
    """
    model = read_model(path)
    return Importer(model, os.fspath(path), bind, fold_batchnorm=fold_batchnorm).run()


def graph_from_model(model, bind=None, label="ONNX model", require_input=True,
                     fold_batchnorm=False):
    """Like :func:`load_onnx`, from an ``onnx.ModelProto`` already in memory.
    ``require_input=False`` accepts a model whose outputs are all constants."""
    return Importer(model, label, bind, require_input, fold_batchnorm).run()
