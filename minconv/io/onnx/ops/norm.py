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
    folded = _fold_into_convolution(node, scale, shift, mean, var, node.attr("epsilon", 1e-5))
    if folded is not None:
        return folded
    layer = BatchNorm2D(scale.shape[0], eps=node.attr("epsilon", 1e-5), dtype=scale.dtype)
    layer.params["gamma"], layer.params["beta"] = scale, shift.astype(scale.dtype)
    layer.buffers["running_mean"] = mean.astype(scale.dtype)
    layer.buffers["running_var"] = var.astype(scale.dtype)
    return node.layer(layer)


def _fold_into_convolution(node, scale, shift, mean, var, eps):
    """With the importer's ``fold_batchnorm``, a BatchNormalization that alone reads a
    Conv's output becomes part of it, since per output channel f

        scale (conv(x) + b - mean) / sqrt(var + eps) + shift  =  conv'(x) + b',
        W'[f] = s[f] W[f],  b'[f] = s[f] (b[f] - mean[f]) + shift[f],  s = scale / sqrt(var + eps),

    and returns the Conv node's name; None where it does not apply."""
    importer, source = node.importer, node.inputs[0]
    producer = importer.producer.get(source)
    if (not importer.fold_batchnorm or importer.readers[source] != 1
            or producer not in importer.node_names):
        return None
    conv = importer.graph[producer]
    W = conv.params.get("W")
    if type(conv) is not Conv2D or W is None or W.shape[0] != scale.shape[0]:
        return None
    s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    b = conv.params.get("b", np.zeros(W.shape[0], W.dtype)).astype(np.float64)
    conv.params["W"] = (W * s.reshape(-1, 1, 1, 1)).astype(W.dtype)
    conv.params["b"] = (s * (b - mean) + shift).astype(W.dtype)
    importer.producer[node.outputs[0]] = producer
    importer.folded[node.name] = producer
    return producer


def fold_channel_affine(node, source, value, multiply):
    """With the importer's ``fold_batchnorm``, a Mul (``multiply``) or an Add of the
    constant ``value`` that alone reads a BatchNormalization's or a Conv's output, where
    ``value`` is one number per channel (or one for all), becomes part of that layer:

        BatchNorm  gamma' = c gamma, beta' = c beta  (Mul);  beta' = beta + c  (Add)
        Conv       W'[f] = c[f] W[f], b' = c b       (Mul);  b' = b + c        (Add)

    (DenseNet's export writes each BatchNorm as BatchNormalization, Mul and Add.) Returns
    that layer's node name; None where it does not apply."""
    importer = node.importer
    producer = importer.producer.get(source)
    if (not importer.fold_batchnorm or importer.readers[source] != 1
            or producer not in importer.node_names):
        return None
    layer = importer.graph[producer]
    if type(layer) is BatchNorm2D:
        channels, dtype = layer.num_features, layer.params["gamma"].dtype
    elif type(layer) is Conv2D and "W" in layer.params:
        channels, dtype = layer.params["W"].shape[0], layer.params["W"].dtype
    else:
        return None
    value = np.asarray(value)
    try:
        c = np.broadcast_to(value, (1, channels, 1, 1)).reshape(channels).astype(np.float64)
    except ValueError:
        return None
    if value.ndim > 4:
        return None
    if type(layer) is BatchNorm2D:
        gamma, beta = (layer.params[k].astype(np.float64) for k in ("gamma", "beta"))
        if multiply:
            gamma, beta = c * gamma, c * beta
        else:
            beta = beta + c
        layer.params["gamma"], layer.params["beta"] = gamma.astype(dtype), beta.astype(dtype)
    else:
        W = layer.params["W"]
        b = layer.params.get("b", np.zeros(channels, dtype)).astype(np.float64)
        if multiply:
            layer.params["W"] = (W * c.reshape(-1, 1, 1, 1)).astype(dtype)
            b = c * b
        else:
            b = b + c
        layer.params["b"] = b.astype(dtype)
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
