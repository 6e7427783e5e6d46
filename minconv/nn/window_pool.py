"""Pooling with ONNX's whole geometry: asymmetric pads, dilations, ceil mode, and global
pooling over any number of spatial axes.

A window of ``k`` taps ``d`` apart spans ``d*(k-1) + 1`` positions. Along an axis of
length n with pads (b, e) the output length is

    floor:  (n + b + e - span) // s + 1
    ceil:   ceil((n + b + e - span) / s) + 1, less one if that last window would start
            in the end padding (PyTorch's and ONNX's rule)

Both poolings pad the input explicitly (max pooling with -inf, average pooling with 0)
by (b, e + extra), where ``extra`` lets the ceil-mode windows fit, and then pool without
padding. Max pooling keeps its switches into that padded plane; the backward pass
unpools there and crops. Average pooling divides each window by the number of its taps
that are counted: inside the input, or inside input and pads with ``count_include_pad``.
"""
import math

import numpy as np

from .. import functional as F
from ..backend import get_array_module
from ..functional._checks import check_array, check_shape
from .base import Layer
from .tensor_ops import Pad


def window_geometry(label, x_shape, kernel, stride, pads, dilation, ceil_mode):
    """Per spatial axis: (output length, extra end padding), for pads (top, left, bottom, right)."""
    H, W = x_shape[2:]
    result = []
    for n, k, s, b, e, d in ((H, kernel[0], stride[0], pads[0], pads[2], dilation[0]),
                             (W, kernel[1], stride[1], pads[1], pads[3], dilation[1])):
        span = d * (k - 1) + 1
        if span > n + b + e:
            raise ValueError(f"{label}: window of {k} taps (dilation {d}, span {span}) is larger "
                             f"than the padded input {n + b + e} (input {tuple(x_shape)}, "
                             f"pads {tuple(pads)})")
        if ceil_mode:
            out = math.ceil((n + b + e - span) / s) + 1
            if (out - 1) * s >= n + b:
                out -= 1
        else:
            out = (n + b + e - span) // s + 1
        result.append((out, max(0, (out - 1) * s + span - (n + b + e))))
    return result


class _WindowPool(Layer):
    def __init__(self, kernel_size, stride=None, pads=(0, 0, 0, 0), dilation=(1, 1),
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = self.kernel_size if stride is None else tuple(int(s) for s in stride)
        self.pads = tuple(int(p) for p in pads)
        self.dilation = tuple(int(d) for d in dilation)
        self.ceil_mode = bool(ceil_mode)
        if len(self.kernel_size) != 2 or len(self.stride) != 2 or len(self.pads) != 4:
            raise ValueError(f"{type(self).__name__}: expected 2 kernel sizes, 2 strides and "
                             f"4 pads, got {self.kernel_size}, {self.stride}, {self.pads}")

    def _prepare(self, x, fill):
        """The padded input, the output size and the padding layer that made it."""
        check_array(x, self._label(), "input", 4, "(N, C, H, W)")
        (Ho, extra_h), (Wo, extra_w) = window_geometry(
            self._label(), x.shape, self.kernel_size, self.stride, self.pads, self.dilation,
            self.ceil_mode)
        top, left, bottom, right = self.pads
        pad = Pad(((0, 0), (0, 0), (top, bottom + extra_h), (left, right + extra_w)),
                  value=fill)
        return pad.forward(x), (Ho, Wo), pad

    def _taps(self, Ho, Wo):
        """For each tap (i, j) of the window: its slice of the padded plane, (Ho, Wo) long."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        for i in range(kh):
            for j in range(kw):
                yield i, j, (Ellipsis, slice(i * dh, i * dh + (Ho - 1) * sh + 1, sh),
                             slice(j * dw, j * dw + (Wo - 1) * sw + 1, sw))

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, pads={self.pads}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class PaddedMaxPool2D(_WindowPool):
    """Max pooling over explicitly padded windows (see the module docstring).

    Switches index the padded plane; :meth:`argmax_positions` gives each maximum's row and
    column in the unpadded input.
    """

    def forward(self, x, train=False):
        xp = get_array_module(x)
        padded, (Ho, Wo), pad = self._prepare(x, -np.inf)
        if self.dilation == (1, 1):  # the compiled kernel, then the ceil windows cut
            y, switches = F.max_pool2d(padded, self.kernel_size, self.stride, 0, False)
            y = xp.ascontiguousarray(y[:, :, :Ho, :Wo])
            switches = xp.ascontiguousarray(switches[:, :, :Ho, :Wo])
        else:  # dilated windows: the maximum over the taps, the first one winning ties
            Wp = padded.shape[3]
            (sh, sw), (dh, dw) = self.stride, self.dilation
            y = xp.full(x.shape[:2] + (Ho, Wo), -np.inf, dtype=x.dtype)
            switches = xp.zeros(y.shape, dtype=xp.int64)
            rows = (xp.arange(Ho) * sh)[:, None]
            cols = (xp.arange(Wo) * sw)[None, :]
            for i, j, taps in self._taps(Ho, Wo):
                values = padded[taps]
                better = values > y
                y = xp.where(better, values, y)
                switches = xp.where(better, (rows + i * dh) * Wp + cols + j * dw, switches)
            switches = switches.astype(xp.int32)      # as the kernels' switches
        self._cache = (x.shape, padded.shape, switches, pad)
        return y

    @property
    def switches(self):
        return self._saved()[2]

    def argmax_positions(self):
        """(h, w, x_shape): the row and column of each maximum in the unpadded input."""
        x_shape, padded_shape, switches, _ = self._saved()
        Wp = padded_shape[3]
        return switches // Wp - self.pads[0], switches % Wp - self.pads[1], x_shape

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x_shape, padded_shape, switches, pad = self._saved()
        check_shape(dy, switches.shape, self._label(), "dy")
        return pad.backward(F.max_unpool2d(dy, switches, padded_shape))


class PaddedAvgPool2D(_WindowPool):
    """Average pooling over explicitly padded windows; ``count_include_pad`` counts the
    explicit pads (never the extra ceil-mode positions) in each window's divisor."""

    def __init__(self, kernel_size, stride=None, pads=(0, 0, 0, 0), dilation=(1, 1),
                 ceil_mode=False, count_include_pad=False):
        super().__init__(kernel_size, stride, pads, dilation, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def _divisor(self, xp, x_shape, padded_shape, Ho, Wo, dtype):
        """(Ho, Wo) counts of the taps each window counts; separable into rows x columns."""
        counts = []
        for axis, (n, b, e) in enumerate(((x_shape[2], self.pads[0], self.pads[2]),
                                          (x_shape[3], self.pads[1], self.pads[3]))):
            inside = np.zeros(padded_shape[2 + axis])
            inside[(0 if self.count_include_pad else b):(b + n + e if self.count_include_pad
                                                         else b + n)] = 1
            k, s, d = self.kernel_size[axis], self.stride[axis], self.dilation[axis]
            out = (Ho, Wo)[axis]
            counts.append(sum(inside[t * d:t * d + (out - 1) * s + 1:s] for t in range(k)))
        divisor = np.outer(counts[0], counts[1])
        if (divisor == 0).any():
            raise ValueError(f"{self._label()}: a window covers only padding (input "
                             f"{tuple(x_shape)}, pads {self.pads})")
        return xp.asarray(divisor, dtype=dtype)

    def forward(self, x, train=False):
        xp = get_array_module(x)
        padded, (Ho, Wo), pad = self._prepare(x, 0.0)
        total = xp.zeros(x.shape[:2] + (Ho, Wo), dtype=x.dtype)
        for _, _, taps in self._taps(Ho, Wo):
            total += padded[taps]
        divisor = self._divisor(xp, x.shape, padded.shape, Ho, Wo, x.dtype)
        self._cache = (padded.shape, divisor, pad)
        return total / divisor

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        padded_shape, divisor, pad = self._saved()
        check_shape(dy, padded_shape[:2] + divisor.shape, self._label(), "dy")
        xp = get_array_module(dy)
        share = dy / divisor  # each window spreads its gradient evenly over its taps
        dpadded = xp.zeros(padded_shape, dtype=dy.dtype)
        for _, _, taps in self._taps(*divisor.shape):
            dpadded[taps] += share
        return pad.backward(dpadded)

    def extra_repr(self):
        return super().extra_repr() + f", count_include_pad={self.count_include_pad}"


class GlobalMaxPool(Layer):
    """(N, C, *spatial) -> (N, C, 1, ..., 1): the maximum of each plane; the gradient goes
    to the first maximum."""

    def forward(self, x, train=False):
        if x.ndim < 3:
            raise ValueError(f"{self._label()}: expected (N, C, spatial...), got {tuple(x.shape)}")
        xp = get_array_module(x)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        where = flat.argmax(axis=2)[..., None]
        self._cache = (x.shape, where)
        y = xp.take_along_axis(flat, where, axis=2)
        return y.reshape(x.shape[:2] + (1,) * (x.ndim - 2))

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x_shape, where = self._saved()
        check_shape(dy, x_shape[:2] + (1,) * (len(x_shape) - 2), self._label(), "dy")
        xp = get_array_module(dy)
        dx = xp.zeros((x_shape[0], x_shape[1], int(np.prod(x_shape[2:]))), dtype=dy.dtype)
        xp.put_along_axis(dx, where, dy.reshape(x_shape[0], x_shape[1], 1), axis=2)
        return dx.reshape(x_shape)


class GlobalAvgPool(Layer):
    """(N, C, *spatial) -> (N, C, 1, ..., 1): the mean of each plane; dx = dy / plane size."""

    def forward(self, x, train=False):
        if x.ndim < 3:
            raise ValueError(f"{self._label()}: expected (N, C, spatial...), got {tuple(x.shape)}")
        self._cache = x.shape
        return F.plane_means(x)

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x_shape = self._saved()
        check_shape(dy, x_shape[:2] + (1,) * (len(x_shape) - 2), self._label(), "dy")
        xp = get_array_module(dy)
        size = int(np.prod(x_shape[2:]))
        return xp.broadcast_to(dy / dy.dtype.type(size), x_shape).copy()
