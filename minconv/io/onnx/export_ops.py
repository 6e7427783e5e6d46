"""The ONNX form of each minconv layer (used by :mod:`minconv.io.onnx.exporter`).

Each exporter gets the writer, the layer's dotted path, its input tensor names and input
shapes, and returns the name of its output tensor.
"""
import numpy as np

from ...nn import (LRN, AdaptiveAvgPool2D, Add, AvgPool2D, BatchNorm2D, Concat, Conv2D,
                   ConvTranspose2D, Dropout, Flatten, Identity, Linear, MaxPool2D, ReLU,
                   Sigmoid, Tanh)
from ...nn import arith, tensor_ops, window_pool
from .exporter import _pair, exports


def _pads(padding):
    ph, pw = _pair(padding)
    return [ph, pw, ph, pw]


def _conv_attributes(layer):
    return dict(kernel_shape=list(layer.kernel_size), strides=list(_pair(layer.stride)),
                pads=_pads(layer.padding), dilations=list(_pair(layer.dilation)),
                group=int(getattr(layer, "groups", 1)))


@exports(Conv2D)
def conv(w, path, layer, inputs, shapes):
    names = inputs + [w.constant(f"{path}.W", layer.params["W"])]
    if "b" in layer.params:
        names.append(w.constant(f"{path}.b", layer.params["b"]))
    return w.node("Conv", names, path, **_conv_attributes(layer))


@exports(ConvTranspose2D)
def conv_transpose(w, path, layer, inputs, shapes):
    names = inputs + [w.constant(f"{path}.W", layer.params["W"])]
    if "b" in layer.params:
        names.append(w.constant(f"{path}.b", layer.params["b"]))
    return w.node("ConvTranspose", names, path, output_padding=list(_pair(layer.output_padding)),
                  **_conv_attributes(layer))


@exports(Linear)
def linear(w, path, layer, inputs, shapes):
    names = inputs + [w.constant(f"{path}.W", layer.params["W"])]
    if "b" in layer.params:
        names.append(w.constant(f"{path}.b", layer.params["b"]))
    return w.node("Gemm", names, path, transB=1)


@exports(arith.Gemm)
def gemm(w, path, layer, inputs, shapes):
    names = inputs + [w.constant(f"{path}.W", layer.params["W"])]
    if "b" in layer.params:
        names.append(w.constant(f"{path}.b", layer.params["b"]))
    return w.node("Gemm", names, path, alpha=layer.alpha, beta=layer.beta,
                  transA=int(layer.transA), transB=int(layer.transB))


@exports(arith.MatMul)
def matmul(w, path, layer, inputs, shapes):
    return w.node("MatMul", inputs + [w.constant(f"{path}.W", layer.params["W"])], path)


@exports(arith.Scale)
def scale(w, path, layer, inputs, shapes):
    return w.node("Mul", inputs + [w.constant(f"{path}.scale", layer.params["scale"])], path)


@exports(arith.Shift)
def shift(w, path, layer, inputs, shapes):
    return w.node("Add", inputs + [w.constant(f"{path}.b", layer.params["b"])], path)


@exports(ReLU)
def relu(w, path, layer, inputs, shapes):
    return w.node("Relu", inputs, path)


@exports(arith.LeakyReLU)
def leaky_relu(w, path, layer, inputs, shapes):
    return w.node("LeakyRelu", inputs, path, alpha=layer.alpha)


@exports(arith.Clip)
def clip(w, path, layer, inputs, shapes):
    dtype = np.float64 if w.dtype == np.float64 else np.float32
    bounds = [w.constant(f"{path}.{side}", np.array(value, dtype=dtype)) if value is not None
              else "" for side, value in (("min", layer.low), ("max", layer.high))]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return w.node("Clip", inputs + bounds, path)


@exports(Sigmoid)
def sigmoid(w, path, layer, inputs, shapes):
    return w.node("Sigmoid", inputs, path)


@exports(Tanh)
def tanh(w, path, layer, inputs, shapes):
    return w.node("Tanh", inputs, path)


@exports(arith.Softmax)
def softmax(w, path, layer, inputs, shapes):
    if not layer.flatten:
        return w.node("Softmax", inputs, path, axis=layer.axis)
    rank = len(shapes[0])
    axis = layer.axis % rank
    flat = w.node("Flatten", inputs, f"{path}.flatten", axis=axis)
    soft = w.node("Softmax", [flat], f"{path}.softmax", axis=1)
    shape = w.constant(f"{path}.shape", np.array((0,) + tuple(shapes[0][1:]), dtype=np.int64))
    return w.node("Reshape", [soft, shape], path)


@exports(Identity)
def identity(w, path, layer, inputs, shapes):
    return w.node("Identity", inputs, path)


@exports(Dropout)
def dropout(w, path, layer, inputs, shapes):
    """Dropout with its ratio (an input from opset 12): the identity at inference."""
    ratio = w.constant(f"{path}.ratio", np.array(layer.p, dtype=np.float32))
    return w.node("Dropout", inputs + [ratio], path)


@exports(Flatten)
def flatten(w, path, layer, inputs, shapes):
    return w.node("Flatten", inputs, path, axis=1)


@exports(tensor_ops.Flatten)
def flatten_axis(w, path, layer, inputs, shapes):
    return w.node("Flatten", inputs, path, axis=layer.axis)


@exports(tensor_ops.Reshape)
def reshape(w, path, layer, inputs, shapes):
    target = w.constant(f"{path}.shape", np.array(layer.shape, dtype=np.int64))
    return w.node("Reshape", inputs + [target], path, allowzero=int(layer.allowzero))


@exports(tensor_ops.Transpose)
def transpose(w, path, layer, inputs, shapes):
    perm = layer.perm if layer.perm is not None else tuple(range(len(shapes[0])))[::-1]
    return w.node("Transpose", inputs, path, perm=list(perm))


@exports(tensor_ops.Squeeze)
def squeeze(w, path, layer, inputs, shapes):
    if layer.axes is None:
        return w.node("Squeeze", inputs, path)
    axes = w.constant(f"{path}.axes", np.array(layer.axes, dtype=np.int64))
    return w.node("Squeeze", inputs + [axes], path)


@exports(tensor_ops.Unsqueeze)
def unsqueeze(w, path, layer, inputs, shapes):
    axes = w.constant(f"{path}.axes", np.array(layer.axes, dtype=np.int64))
    return w.node("Unsqueeze", inputs + [axes], path)


@exports(tensor_ops.Pad)
def pad(w, path, layer, inputs, shapes):
    pads = [b for b, _ in layer.pads] + [e for _, e in layer.pads]
    names = inputs + [w.constant(f"{path}.pads", np.array(pads, dtype=np.int64))]
    if layer.mode == "constant":
        dtype = np.float64 if w.dtype == np.float64 else np.float32
        names.append(w.constant(f"{path}.value", np.array(layer.value, dtype=dtype)))
    return w.node("Pad", names, path, mode=layer.mode)


@exports(MaxPool2D)
def max_pool(w, path, layer, inputs, shapes):
    kernel = _pair(layer.kernel_size)
    return w.node("MaxPool", inputs, path, kernel_shape=list(kernel),
                  strides=list(_pair(layer.stride)), pads=_pads(layer.padding),
                  ceil_mode=int(bool(layer.ceil_mode)))


@exports(AvgPool2D)
def avg_pool(w, path, layer, inputs, shapes):
    kernel = _pair(layer.kernel_size)
    return w.node("AveragePool", inputs, path, kernel_shape=list(kernel),
                  strides=list(_pair(layer.stride)), pads=_pads(layer.padding),
                  ceil_mode=int(bool(layer.ceil_mode)),
                  count_include_pad=int(bool(layer.count_include_pad)))


def _window_attributes(w, layer, op_type):
    attributes = dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                      pads=list(layer.pads), ceil_mode=int(layer.ceil_mode))
    if layer.dilation != (1, 1):
        attributes["dilations"] = list(layer.dilation)
        if op_type == "AveragePool":  # AveragePool has dilations from opset 19 on
            w.opset = max(w.opset, 19)
    return attributes


@exports(window_pool.PaddedMaxPool2D)
def padded_max_pool(w, path, layer, inputs, shapes):
    return w.node("MaxPool", inputs, path, **_window_attributes(w, layer, "MaxPool"))


@exports(window_pool.PaddedAvgPool2D)
def padded_avg_pool(w, path, layer, inputs, shapes):
    return w.node("AveragePool", inputs, path, count_include_pad=int(layer.count_include_pad),
                  **_window_attributes(w, layer, "AveragePool"))


@exports(window_pool.GlobalAvgPool)
def global_avg_pool(w, path, layer, inputs, shapes):
    return w.node("GlobalAveragePool", inputs, path)


@exports(window_pool.GlobalMaxPool)
def global_max_pool(w, path, layer, inputs, shapes):
    return w.node("GlobalMaxPool", inputs, path)


@exports(AdaptiveAvgPool2D)
def adaptive_avg_pool(w, path, layer, inputs, shapes):
    """Global average pooling for (1, 1); otherwise a fixed AveragePool where the input
    divides evenly into the bins (PyTorch's bins are then equal windows)."""
    H, W = shapes[0][2:]
    Ho, Wo = _pair(layer.output_size)
    if (Ho, Wo) == (1, 1):
        return w.node("GlobalAveragePool", inputs, path)
    if H % Ho or W % Wo:
        raise ValueError(f"save_onnx: layer {path!r} (AdaptiveAvgPool2D) pools {H}x{W} to "
                         f"{Ho}x{Wo}, which ONNX's AveragePool cannot express (unequal bins)")
    kernel = [H // Ho, W // Wo]
    return w.node("AveragePool", inputs, path, kernel_shape=kernel, strides=kernel)


@exports(LRN)
def lrn(w, path, layer, inputs, shapes):
    return w.node("LRN", inputs, path, size=int(layer.size), alpha=float(layer.alpha),
                  beta=float(layer.beta), bias=float(layer.k))


@exports(BatchNorm2D)
def batch_norm(w, path, layer, inputs, shapes):
    names = inputs + [w.constant(f"{path}.gamma", layer.params["gamma"]),
                      w.constant(f"{path}.beta", layer.params["beta"]),
                      w.constant(f"{path}.running_mean", layer.buffers["running_mean"]),
                      w.constant(f"{path}.running_var", layer.buffers["running_var"])]
    return w.node("BatchNormalization", names, path, epsilon=float(layer.eps))


@exports(Add)
def add(w, path, layer, inputs, shapes):
    return w.node("Sum" if len(inputs) != 2 else "Add", inputs, path)


@exports(arith.Multiply)
def multiply(w, path, layer, inputs, shapes):
    out = inputs[0]
    for k, other in enumerate(inputs[1:], start=1):
        out = w.node("Mul", [out, other], path if k == len(inputs) - 1 else f"{path}.{k}")
    return out


@exports(Concat)
def concat(w, path, layer, inputs, shapes):
    return w.node("Concat", inputs, path, axis=layer.axis)
