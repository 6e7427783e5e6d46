"""Conv and ConvTranspose (2-D): groups, dilations, asymmetric pads and every auto_pad.

Symmetric pads go to the layer's own ``padding``; asymmetric ones become a Pad layer
before the convolution (``<node>_pad``), or a crop after a transposed one (``<node>_crop``).
"""
import math

from ....nn import Conv2D, ConvTranspose2D
from ....nn.arith import Shift
from ....nn.tensor_ops import Pad
from ..node import as_float, ints
from ..registry import converter


def same_pads(sizes, kernel, strides, dilations, mode):
    """auto_pad SAME_UPPER/SAME_LOWER: pads making the output ceil(n / s) long; the odd
    one goes at the end (UPPER) or the beginning (LOWER). Returns (top, left, bottom, right)."""
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if mode == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return tuple(begins + ends)


def window_pads(node, kernel, strides, dilations):
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``."""
    auto_pad = node.attr("auto_pad", "NOTSET")
    pads = node.attr("pads")
    if auto_pad in ("NOTSET", ""):
        pads = ints(pads) if pads is not None else (0, 0, 0, 0)
        if len(pads) != 4:
            raise node.unsupported("pads", f"{pads}: minconv supports 2-D windows (4 pads)")
        return pads
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return same_pads(node.spatial_shape(0, "auto_pad"), kernel, strides, dilations, auto_pad)
    raise node.unsupported("auto_pad", f"value {auto_pad!r} is not an ONNX auto_pad")


def _weights(node):
    W = as_float(node.required_constant(1, "W"))
    if W.ndim != 4:
        raise node.unsupported("W", f"has shape {tuple(W.shape)}: minconv supports 2-D "
                               "convolutions only (4-D weights)")
    kernel = ints(node.attr("kernel_shape", W.shape[2:]))
    if kernel != tuple(W.shape[2:]):
        raise node.unsupported("kernel_shape", f"{kernel} disagrees with the weights "
                               f"{tuple(W.shape)}")
    b = node.required_constant(2, "B").astype(W.dtype) if node.has_input(2) else None
    strides = ints(node.attr("strides", (1, 1)))
    dilations = ints(node.attr("dilations", (1, 1)))
    return W, b, kernel, strides, dilations, int(node.attr("group", 1))


def _set(layer, W, b):
    layer.params["W"] = W
    if b is not None:
        layer.params["b"] = b
    return layer


@converter("Conv")
def conv(node):
    node.check_rank(0, 4)
    W, b, kernel, strides, dilations, groups = _weights(node)
    top, left, bottom, right = window_pads(node, kernel, strides, dilations)
    symmetric = (top, left) == (bottom, right)
    layer = _set(Conv2D(W.shape[1] * groups, W.shape[0], kernel, strides,
                        (top, left) if symmetric else 0, dilations, bias=b is not None,
                        groups=groups, init_std=0.0, dtype=W.dtype), W, b)
    if symmetric:
        return node.layer(layer)
    pad = Pad(((0, 0), (0, 0), (top, bottom), (left, right)))
    return node.chain([("pad", pad), (None, layer)])


@converter("ConvTranspose")
def conv_transpose(node):
    node.check_rank(0, 4)
    W, b, kernel, strides, dilations, groups = _weights(node)
    output_padding = list(ints(node.attr("output_padding", (0, 0))))
    output_shape = node.attr("output_shape")
    auto_pad = node.attr("auto_pad", "NOTSET")
    # the crop (begin, end) of the full output s*(n-1) + d*(k-1) + 1 + output_padding
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sizes = node.spatial_shape(0, "output_shape" if output_shape is not None else "auto_pad")
        node.attr("pads")
        targets = ints(output_shape)[-2:] if output_shape is not None else \
            tuple(n * s for n, s in zip(sizes, strides))
        begins, ends = [], []
        for axis in range(2):
            n, k, s, d = sizes[axis], kernel[axis], strides[axis], dilations[axis]
            total = s * (n - 1) + output_padding[axis] + (k - 1) * d + 1 - targets[axis]
            half = total // 2
            if auto_pad == "SAME_UPPER":
                begin, end = half, total - half
            elif auto_pad == "SAME_LOWER":
                begin, end = total - half, half
            else:  # an explicit output_shape: the output starts where the full one does
                begin, end = 0, total
            begins.append(begin)  # negative: the output is longer than the full one
            ends.append(end)
        top, left, bottom, right = begins + ends
    else:
        top, left, bottom, right = window_pads(node, kernel, strides, dilations)
    symmetric = (top, left) == (bottom, right) and min(top, left) >= 0 and not any(
        o >= max(s, d) for o, s, d in zip(output_padding, strides, dilations))
    if symmetric:
        layer = ConvTranspose2D(W.shape[0], W.shape[1] * groups, kernel, strides, (top, left),
                                dilations, bias=b is not None, output_padding=output_padding,
                                groups=groups, init_std=0.0, dtype=W.dtype)
        return node.layer(_set(layer, W, b))
    # the full output, cropped (or extended with zeros) at each end, then the bias
    full = _set(ConvTranspose2D(W.shape[0], W.shape[1] * groups, kernel, strides, 0, dilations,
                                bias=False, groups=groups, init_std=0.0, dtype=W.dtype), W, None)
    crop = Pad(((0, 0), (0, 0), (-top, output_padding[0] - bottom),
                (-left, output_padding[1] - right)))
    steps = [("full", full), ("crop", crop)]
    if b is not None:
        steps.append(("bias", Shift(b.reshape(1, -1, 1, 1))))
    steps[-1] = (None, steps[-1][1])
    return node.chain(steps)
