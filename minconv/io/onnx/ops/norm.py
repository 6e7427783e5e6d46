"""LRN, BatchNormalization (inference) and Dropout (inference: the identity).

ONNX's LRN is PyTorch's and minconv's: b = a / (bias + alpha/size * sum a^2)^beta over
a window of ``size`` channels, ``floor((size-1)/2)`` before the channel and
``ceil((size-1)/2)`` after it. For odd sizes that is minconv's centred window; an even
size puts the extra channel on the other side, and is refused.
"""
import numpy as np

from ....backend import get_array_module
from ....nn import LRN, Conv2D, Dropout
from ....nn.base import Layer
from ....nn.merge import Identity
from ....nn.norm import BatchNorm2D
from ..node import as_float
from ..registry import converter


@converter("LRN")
def lrn(node):
    size = int(node.attr("size"))
    if size % 2 == 0:
        raise node.unsupported("size", f"{size}: an even LRN window is placed differently by "
                               "ONNX and minconv; only odd sizes are supported")
    return node.layer(LRN(size, node.attr("alpha", 1e-4), node.attr("beta", 0.75),
                          node.attr("bias", 1.0)))


@converter("BatchNormalization")
def batch_norm(node):
    node.check_rank(0, 4)
    if node.attr("training_mode", 0) or (node.opset < 14 and any(node.outputs[1:])) \
            or len([o for o in node.outputs if o]) > 1:
        raise node.unsupported("training_mode", "is not supported: minconv imports "
                               "BatchNormalization for inference (one output)")
    node.attr("momentum")  # only used in training
    if node.opset < 7:
        node.attr("is_test")
        node.attr("spatial")
    elif node.opset < 9 and node.attr("spatial", 1) != 1:
        raise node.unsupported("spatial", "0 (per-position statistics) is not supported")
    scale, shift, mean, var = (as_float(node.required_constant(i, what)) for i, what in
                               enumerate(("scale", "B", "input_mean", "input_var"), start=1))
    # in inference a BatchNormalization is the affine map s v + (shift - s mean)
    s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + node.attr("epsilon", 1e-5))
    folded = fold_affine(node, node.inputs[0], s.reshape(-1, 1, 1),
                         (shift - s * mean).reshape(-1, 1, 1))
    if folded is not None:
        return folded
    layer = BatchNorm2D(scale.shape[0], eps=node.attr("epsilon", 1e-5), dtype=scale.dtype)
    layer.params["gamma"], layer.params["beta"] = scale, shift.astype(scale.dtype)
    layer.buffers["running_mean"] = mean.astype(scale.dtype)
    layer.buffers["running_var"] = var.astype(scale.dtype)
    return node.layer(layer)


def fold_affine(node, source, scale, shift):
    """With the importer's ``fold_batchnorm``: the per-channel affine map ``scale * v + shift``
    of ``source`` (v), where v is a Conv's or a BatchNormalization's output that nothing
    else reads, becomes part of that layer (``scale`` and ``shift`` one value per channel,
    or one for all):

        Conv       W'[f] = scale[f] W[f],        b'[f] = scale[f] b[f] + shift[f]
        BatchNorm  gamma'[f] = scale[f] gamma[f],  beta'[f] = scale[f] beta[f] + shift[f]

    The node then maps to that layer's output. Returns the layer's node name; None where
    the map does not apply (a constant that is not per channel, say)."""
    importer = node.importer
    producer = importer.producer.get(source)
    if (not importer.fold_batchnorm or importer.readers[source] != 1
            or producer not in importer.node_names):
        return None
    layer = importer.graph[producer]
    keys = {Conv2D: ("W", "b"), BatchNorm2D: ("gamma", "beta")}.get(type(layer))
    if keys is None or keys[0] not in layer.params:
        return None
    weight = layer.params[keys[0]]
    channels = weight.shape[0]
    try:
        scale, shift = (np.broadcast_to(np.asarray(v, np.float64), (1, channels, 1, 1))
                        .reshape(channels) for v in (scale, shift))
    except ValueError:
        return None
    bias = layer.params.get(keys[1], np.zeros(channels, weight.dtype)).astype(np.float64)
    layer.params[keys[0]] = (weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
                             ).astype(weight.dtype)
    layer.params[keys[1]] = (scale * bias + shift).astype(weight.dtype)
    importer.producer[node.outputs[0]] = producer
    importer.folded[node.name] = producer
    return producer


class DropoutMask(Layer):
    """Dropout's optional mask output at inference: all True (every unit kept)."""

    def forward(self, x, train=False):
        self._cache = x
        return get_array_module(x).ones(x.shape, dtype=bool)

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x = self._saved()
        return get_array_module(x).zeros_like(x)


@converter("Dropout")
def dropout(node):
    """minconv's Dropout with the model's ratio: the identity at inference (what the model
    computes), and dropout again if the imported net is trained further. The ratio is an
    attribute before opset 12, then an input; a training_mode input (opset 12) must be
    false (or the ratio 0)."""
    ratio = float(node.attr("ratio", 0.5))
    node.attr("seed")
    if node.opset < 7:
        node.attr("is_test")
    if node.opset >= 12:
        ratio = float(np.asarray(node.required_constant(1, "ratio")).reshape(-1)[0]) \
            if node.has_input(1) else 0.5
    if node.has_input(2):
        training = node.required_constant(2, "training_mode")
        if bool(np.asarray(training).reshape(-1)[0]) and ratio != 0.0:
            raise node.unsupported("training_mode", "true is not supported: minconv imports "
                                   "Dropout for inference")
    name = node.layer(Dropout(ratio) if 0.0 <= ratio < 1.0 else Identity())
    if node.output_needed(1):
        node.layer(DropoutMask(), output=1, suffix="mask")
    return name
