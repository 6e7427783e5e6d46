"""Geometry of sliding windows: output sizes, padding rules, argument checks, receptive fields.

The one place these formulas live; the reference, Cython and CUDA kernels, the
functional ops, ``models.summary`` and the visualisations all call it.

Along one axis, a window of ``k`` taps spaced ``d`` apart spans ``d*(k-1) + 1``
pixels. On an input of ``n`` pixels padded by ``p`` on both sides, taken every
``s`` pixels::

    convolution (floor):   n_out = floor((n + 2p - d(k-1) - 1) / s) + 1
    transposed conv.:      n_out = (n - 1)*s - 2p + d(k-1) + 1 + output_padding
    pooling, ceil_mode:    n_out = ceil((n + 2p - k) / s) + 1,
                           minus one if the last window would start in the
                           right padding (Caffe and PyTorch agree on this).

Receptive fields use the *first-pixel* convention: ``start`` is the input
coordinate of the first pixel that unit 0 sees (negative inside the padding), so
unit ``i`` sees pixels ``start + i*jump ... start + i*jump + size - 1`` and the
centre of its field is ``start + i*jump + (size - 1)/2``.
"""
import math

import numpy as np

__all__ = ["pair", "check_positive", "check_nonnegative", "conv_output_size", "conv_transpose_output_size", "pool_output_size",
           "resolve_padding", "check_groups", "conv_geometry", "conv_transpose_geometry",
           "kernel_geometry", "receptive_field_step"]


def pair(value, what):
    """``3 -> (3, 3)``; ``(3, 2) -> (3, 2)``; anything else is a ``ValueError``."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")


def check_positive(values, op, what):
    """Raise ValueError unless every value is >= 1."""
    if any(v < 1 for v in values):
        raise ValueError(f"{op}: {what} must be >= 1, got {values}")


def check_nonnegative(values, op, what):
    """Raise ValueError unless every value is >= 0."""
    if any(v < 0 for v in values):
        raise ValueError(f"{op}: {what} must be >= 0, got {values}")


# ---------------------------------------------------------------- output sizes

def conv_output_size(n, k, s, p, d=1):
    """Output length of a convolution along one axis (floor rounding)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv_transpose_output_size(n, k, s, p, d=1, output_padding=0):
    """Output length of a transposed convolution: (n - 1)*s - 2p + d(k - 1) + 1 + output_padding."""
    return (n - 1) * s - 2 * p + d * (k - 1) + 1 + output_padding


def pool_output_size(n, k, s, p, ceil_mode=False):
    """Output length of a pooling along one axis (floor or ceil rounding)."""
    if not ceil_mode:
        return (n + 2 * p - k) // s + 1
    out = math.ceil((n + 2 * p - k) / s) + 1
    if (out - 1) * s >= n + p:  # the last window starts in the padding: drop it
        out -= 1
    return out


# ---------------------------------------------------------------- padding rules

def resolve_padding(padding, kernel_size, stride=1, dilation=1, op="conv2d"):
    """The (ph, pw) padding meant by ``padding``: an int, a pair, "valid" or "same".

    "valid" is no padding. "same" keeps the input's size (Ho == H) at stride 1:
    p = d(k-1)/2 on each side, which needs d(k-1) even, since minconv pads both
    sides alike. Anything else is a ``ValueError`` naming ``op``.
    """
    if isinstance(padding, str):
        kernel_size = pair(kernel_size, f"{op}: kernel_size")
        stride, dilation = pair(stride, f"{op}: stride"), pair(dilation, f"{op}: dilation")
        if padding == "valid":
            return (0, 0)
        if padding != "same":
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', "
                             f"got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
        spans = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        if any(span % 2 for span in spans):
            raise ValueError(f"{op}: padding='same' with kernel {kernel_size} and dilation "
                             f"{dilation} needs uneven padding (d*(k-1) = {tuple(spans)} is "
                             "odd); minconv pads both sides alike: use an odd kernel")
        return spans[0] // 2, spans[1] // 2
    padding = pair(padding, f"{op}: padding")
    check_nonnegative(padding, op, "padding")
    return padding


# ---------------------------------------------------------------- argument checks

def check_groups(op, groups, in_channels, out_channels):
    """``groups`` as an int that divides both channel counts, else a ``ValueError``."""
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{op}: groups={groups} must divide both the input channels "
                         f"({in_channels}) and the output channels ({out_channels})")
    return int(groups)


def _hyper(op, stride, padding, dilation, kernel_size):
    stride = pair(stride, f"{op}: stride")
    dilation = pair(dilation, f"{op}: dilation")
    check_positive(stride, op, "stride")
    check_positive(dilation, op, "dilation")
    padding = resolve_padding(padding, kernel_size, stride, dilation, op)
    return stride, padding, dilation


def conv_geometry(op, x_shape, kernel_size, stride, padding, dilation):
    """Normalised ``(stride, padding, dilation, Ho, Wo)`` of a convolution of an input of
    ``x_shape`` (N, C, H, W) by a ``kernel_size`` (kh, kw) window; a ``ValueError`` when
    the dilated kernel is larger than the padded input."""
    kh, kw = kernel_size
    stride, padding, dilation = _hyper(op, stride, padding, dilation, (kh, kw))
    _, _, H, W = x_shape
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if span_h > H + 2 * padding[0] or span_w > W + 2 * padding[1]:
        raise ValueError(
            f"{op}: kernel {kh}x{kw} (dilation {dilation}, spanning {span_h}x{span_w}) is larger "
            f"than the padded input {H + 2 * padding[0]}x{W + 2 * padding[1]} "
            f"(input {tuple(x_shape)}, padding {padding})")
    Ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    return stride, padding, dilation, Ho, Wo


def conv_transpose_geometry(op, x_shape, kernel_size, out_channels, stride, padding, dilation,
                            output_padding):
    """Normalised ``(stride, padding, dilation, output_padding, y_shape)`` of a transposed
    convolution of an input of ``x_shape`` (N, C_in, Hi, Wi)."""
    kh, kw = kernel_size
    if isinstance(padding, str):  # "same" describes the convolution's output, not C^T's
        raise ValueError(f"{op}: padding must be an int or a pair, got {padding!r}")
    stride, padding, dilation = _hyper(op, stride, padding, dilation, (kh, kw))
    output_padding = pair(output_padding, f"{op}: output_padding")
    check_nonnegative(output_padding, op, "output_padding")
    if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"{op}: output_padding {output_padding} must be smaller than "
                         f"stride {stride} or dilation {dilation}")
    N, _, Hi, Wi = x_shape
    H = conv_transpose_output_size(Hi, kh, stride[0], padding[0], dilation[0], output_padding[0])
    W = conv_transpose_output_size(Wi, kw, stride[1], padding[1], dilation[1], output_padding[1])
    if H < 1 or W < 1:
        raise ValueError(f"{op}: input {tuple(x_shape)} with kernel {kh}x{kw}, stride {stride}, "
                         f"padding {padding} gives an empty output ({H}x{W})")
    return stride, padding, dilation, output_padding, (N, out_channels, H, W)


def kernel_geometry(shape, kh, kw, stride, padding, dilation, op="im2col/col2im"):
    """The unpacked geometry the unfold kernels index with:
    ``(N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo)``; a ``ValueError`` when there is no output."""
    N, C, H, W = (int(v) for v in shape)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho = conv_output_size(H, kh, sh, ph, dh)
    Wo = conv_output_size(W, kw, sw, pw, dw)
    if Ho < 1 or Wo < 1 or min(kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(
            f"{op}: no output for input {tuple(shape)} with kernel ({kh}, {kw}), "
            f"stride {stride}, padding {padding}, dilation {dilation}")
    return N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo


# ---------------------------------------------------------------- receptive fields

def receptive_field_step(field, kernel, stride, padding, dilation=1):
    """The field (size, jump, start) of a window layer's units, from its input's field.

    With k' = d(k-1) + 1 the dilated span::

        size'  = size + (k' - 1) * jump
        jump'  = jump * s
        start' = start - p * jump          (first-pixel convention, see the module)

    The input itself has (1, 1, 0). One axis: all arguments are numbers.
    """
    size, jump, start = field
    span = dilation * (kernel - 1) + 1
    return size + (span - 1) * jump, jump * stride, start - padding * jump
