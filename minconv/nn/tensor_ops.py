"""Layers that move values without computing new ones: Reshape, Transpose, Flatten(axis),
Squeeze, Unsqueeze and Pad.

They are what imported ONNX graphs need between the convolutions (a channel shuffle is
Reshape-Transpose-Reshape; a TensorFlow-style "SAME" convolution is Pad then Conv). Each
backward pass is the inverse rearrangement of ``dy``, the same under every rule: none of
them has a ReLU to treat differently.
"""
import numpy as np

from ..backend import get_array_module
from ..functional._checks import check_shape
from .base import Layer


def _axis(axis, ndim, label):
    """A possibly negative axis as a non-negative one, checked against ``ndim``."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{label}: axis {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def reshape_target(x_shape, shape, allowzero=False, label="Reshape"):
    """ONNX/NumPy reshape target: 0 copies the input's size at that position (unless
    ``allowzero``), one -1 is inferred from the rest."""
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x_shape[i] if s == 0 and i < len(x_shape) else s for i, s in enumerate(shape)]
    size = int(np.prod(x_shape))
    if shape.count(-1) > 1:
        raise ValueError(f"{label}: at most one -1 in the target shape {tuple(shape)}")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        if rest == 0 or size % rest:
            raise ValueError(f"{label}: cannot reshape input {tuple(x_shape)} to {tuple(shape)}")
        shape[shape.index(-1)] = size // rest
    if int(np.prod(shape)) != size:
        raise ValueError(f"{label}: cannot reshape input {tuple(x_shape)} ({size} values) to "
                         f"{tuple(shape)}")
    return tuple(shape)


class _Rearrange(Layer):
    """Shared backward: ``dy`` goes back through the inverse rearrangement.

    Each subclass gives ``_output_shape(x_shape)``; a reshape needs nothing more, a
    rearrangement that moves values (Transpose) also overrides ``_apply`` and ``_invert``.
    """

    def forward(self, x, train=False):
        self._cache = x.shape
        return self._apply(x)

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x_shape = self._saved()
        check_shape(dy, self._output_shape(x_shape), self._label(), "dy")
        return self._invert(dy, x_shape)

    def _apply(self, x):
        return x.reshape(self._output_shape(x.shape))

    def _invert(self, dy, x_shape):
        return dy.reshape(x_shape)


class Reshape(_Rearrange):
    """x -> x.reshape(shape) with ONNX's rules (0 copies a size, -1 is inferred)."""

    def __init__(self, shape, allowzero=False):
        super().__init__()
        self.shape, self.allowzero = tuple(int(s) for s in shape), bool(allowzero)

    def _output_shape(self, x_shape):
        return reshape_target(x_shape, self.shape, self.allowzero, self._label())

    def extra_repr(self):
        return f"shape={self.shape}"


class Flatten(_Rearrange):
    """(d0, ..., dk-1, dk, ...) -> (d0*...*dk-1, dk*...), k = ``axis`` (ONNX's Flatten).

    ``axis=1`` is the usual (N, C, H, W) -> (N, C*H*W); ``axis=0`` gives (1, everything).
    """

    def __init__(self, axis=1):
        super().__init__()
        self.axis = int(axis)

    def _output_shape(self, x_shape):
        axis = self.axis + len(x_shape) if self.axis < 0 else self.axis
        if not 0 <= axis <= len(x_shape):
            raise ValueError(f"{self._label()}: axis {self.axis} out of range for input "
                             f"{tuple(x_shape)}")
        return int(np.prod(x_shape[:axis])), int(np.prod(x_shape[axis:]))

    def extra_repr(self):
        return f"axis={self.axis}"


class Transpose(_Rearrange):
    """y = x.transpose(perm); dx = dy.transpose(argsort(perm)). ``perm=None`` reverses."""

    def __init__(self, perm=None):
        super().__init__()
        self.perm = None if perm is None else tuple(int(p) for p in perm)

    def _perm(self, ndim):
        perm = tuple(range(ndim))[::-1] if self.perm is None else self.perm
        if sorted(perm) != list(range(ndim)):
            raise ValueError(f"{self._label()}: perm {perm} is not a permutation of the "
                             f"{ndim} axes")
        return perm

    def _output_shape(self, x_shape):
        return tuple(x_shape[p] for p in self._perm(len(x_shape)))

    def _apply(self, x):
        return get_array_module(x).ascontiguousarray(x.transpose(self._perm(x.ndim)))

    def _invert(self, dy, x_shape):
        inverse = np.argsort(self._perm(len(x_shape)))
        return get_array_module(dy).ascontiguousarray(dy.transpose(inverse))

    def extra_repr(self):
        return f"perm={self.perm}"


class Squeeze(_Rearrange):
    """Drop the size-1 ``axes`` (all size-1 axes when None)."""

    def __init__(self, axes=None):
        super().__init__()
        self.axes = None if axes is None else tuple(int(a) for a in axes)

    def _output_shape(self, x_shape):
        if self.axes is None:
            return tuple(s for s in x_shape if s != 1)
        axes = {_axis(a, len(x_shape), self._label()) for a in self.axes}
        for a in axes:
            if x_shape[a] != 1:
                raise ValueError(f"{self._label()}: axis {a} of input {tuple(x_shape)} has size "
                                 f"{x_shape[a]}, not 1")
        return tuple(s for i, s in enumerate(x_shape) if i not in axes)

    def extra_repr(self):
        return f"axes={self.axes}"


class Unsqueeze(_Rearrange):
    """Insert size-1 axes at ``axes`` (positions in the output)."""

    def __init__(self, axes):
        super().__init__()
        self.axes = tuple(int(a) for a in axes)

    def _output_shape(self, x_shape):
        ndim = len(x_shape) + len(self.axes)
        axes = sorted(_axis(a, ndim, self._label()) for a in self.axes)
        shape = list(x_shape)
        for a in axes:
            shape.insert(a, 1)
        return tuple(shape)

    def extra_repr(self):
        return f"axes={self.axes}"


PAD_MODES = ("constant", "reflect", "edge", "wrap")


class Pad(Layer):
    """Pad (or, with negative widths, crop) every axis: ONNX's Pad.

    pads  : ((begin_0, end_0), (begin_1, end_1), ...), one pair per axis of the input
    mode  : "constant" (``value``), "reflect" (mirror without the edge), "edge" (repeat it),
            "wrap" (periodic)

    Negative widths crop first; the positive ones are then added by ``np.pad``. The
    backward pass is the adjoint: a crop for "constant", and for the other modes each
    output position sends its gradient back to the input position it copied.
    """

    def __init__(self, pads, mode="constant", value=0.0):
        super().__init__()
        if mode not in PAD_MODES:
            raise ValueError(f"Pad: unknown mode {mode!r}; expected one of {PAD_MODES}")
        self.pads = tuple((int(b), int(e)) for b, e in pads)
        self.mode, self.value = mode, float(value)

    def _split(self, x_shape):
        if len(self.pads) != len(x_shape):
            raise ValueError(f"{self._label()}: {len(self.pads)} pad pairs for a "
                             f"{len(x_shape)}-D input {tuple(x_shape)}")
        crop = tuple(slice(max(-b, 0), n - max(-e, 0)) for (b, e), n in zip(self.pads, x_shape))
        widths = tuple((max(b, 0), max(e, 0)) for b, e in self.pads)
        for (b, e), n in zip(self.pads, x_shape):
            if n - max(-b, 0) - max(-e, 0) < 0:
                raise ValueError(f"{self._label()}: pads {self.pads} crop more than the input "
                                 f"{tuple(x_shape)}")
        return crop, widths

    def forward(self, x, train=False):
        crop, widths = self._split(x.shape)
        xp = get_array_module(x)
        inner = x[crop]
        if self.mode == "constant":
            y = xp.pad(inner, widths, mode="constant", constant_values=self.value)
        else:
            for (b, e), n in zip(widths, inner.shape):
                if self.mode == "reflect" and max(b, e) > n - 1:
                    raise ValueError(f"{self._label()}: reflect padding {(b, e)} needs more than "
                                     f"{max(b, e)} values along an axis of size {n} "
                                     f"(input {tuple(x.shape)})")
            y = xp.pad(inner, widths, mode=self.mode)
        self._cache = (x.shape, inner.shape)
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x_shape, inner_shape = self._saved()
        crop, widths = self._split(x_shape)
        expected = tuple(n + b + e for n, (b, e) in zip(inner_shape, widths))
        check_shape(dy, expected, self._label(), "dy")
        xp = get_array_module(dy)
        if self.mode == "constant":
            inner = dy[tuple(slice(b, b + n) for (b, _), n in zip(widths, inner_shape))]
        else:  # every output copied one input position: add the gradients back there
            source = np.pad(np.arange(int(np.prod(inner_shape))).reshape(inner_shape), widths,
                            mode=self.mode)
            inner = xp.bincount(xp.asarray(source.ravel()), weights=dy.ravel(),
                                minlength=int(np.prod(inner_shape)))
            inner = inner.reshape(inner_shape).astype(dy.dtype)
        if inner_shape == tuple(x_shape):
            return xp.ascontiguousarray(inner)
        dx = xp.zeros(x_shape, dtype=dy.dtype)
        dx[crop] = inner
        return dx

    def extra_repr(self):
        value = f", value={self.value}" if self.mode == "constant" else ""
        return f"pads={self.pads}, mode={self.mode!r}{value}"
