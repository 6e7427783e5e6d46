"""Where paths of a graph meet: elementwise sum (residual connections) and
concatenation along the channels (Inception and dense blocks).

Backward: a sum hands its gradient unchanged to every input; a concatenation
splits it back into the inputs' slices. The same under every backward rule.
"""
import numpy as np

from .. import runtime
from .._kernels import kernels_for
from ..backend import get_array_module
from ._checks import check_array


def _names(names, n):
    return list(names) if names is not None else [f"input {i}" for i in range(n)]


def add(xs, names=None, relu=False):
    """y = xs[0] + xs[1] + ...; every input must have the same shape (no broadcasting).
    With ``relu``, max(y, 0) (a ReLU that follows: ResNet's blocks end so).

    ``names`` label the inputs in error messages (a graph passes its node names). On the
    CPU the cores take shares of the elements (one image's maps too).
    """
    if not isinstance(xs, (list, tuple)) or len(xs) < 2:
        raise ValueError(f"add: expected a list of at least two arrays, got {type(xs).__name__}")
    labels = _names(names, len(xs))
    for label, x in zip(labels, xs):
        check_array(x, "add", label)
    for label, x in zip(labels[1:], xs[1:]):
        if tuple(x.shape) != tuple(xs[0].shape) or x.dtype != xs[0].dtype:
            raise ValueError(f"add: {labels[0]!r} gives {tuple(xs[0].shape)} {xs[0].dtype} but "
                             f"{label!r} gives {tuple(x.shape)} {x.dtype}; a sum needs one "
                             "shape and dtype")
    xp = get_array_module(xs[0])
    if xp is not np:
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        return kernels_for(y).relu_forward(y, out=y) if relu else y
    y = np.empty(xs[0].shape, dtype=xs[0].dtype)
    flat = y.reshape(-1)
    runtime.elementwise(np.add, flat, xs[0].reshape(-1), xs[1].reshape(-1))
    for x in xs[2:]:
        runtime.elementwise(np.add, flat, flat, x.reshape(-1))
    return kernels_for(y).relu_forward(y, out=y) if relu else y


def concat(xs, axis=1, names=None):
    """Join the inputs along ``axis`` (the channels by default); the other sizes must agree."""
    if not isinstance(xs, (list, tuple)) or len(xs) < 1:
        raise ValueError(f"concat: expected a list of arrays, got {type(xs).__name__}")
    labels = _names(names, len(xs))
    for label, x in zip(labels, xs):
        check_array(x, "concat", label)
    first = xs[0]
    if not -first.ndim <= axis < first.ndim:
        raise ValueError(f"concat: axis {axis} is out of range for {first.ndim}-D inputs")
    axis %= first.ndim
    rest = lambda s: tuple(s[:axis]) + tuple(s[axis + 1:])  # noqa: E731
    for label, x in zip(labels[1:], xs[1:]):
        if x.ndim != first.ndim or rest(x.shape) != rest(first.shape) or x.dtype != first.dtype:
            raise ValueError(f"concat: {labels[0]!r} gives {tuple(first.shape)} {first.dtype} but "
                             f"{label!r} gives {tuple(x.shape)} {x.dtype}; along axis {axis} "
                             "only that axis may differ")
    return kernels_for(first).concatenate(list(xs), axis)


def concat_backward(dy, sizes, axis=1):
    """The slices of dy that went to each input: ``sizes`` are their lengths along ``axis``."""
    if sum(sizes) != dy.shape[axis]:
        raise ValueError(f"concat_backward: dy {tuple(dy.shape)} has {dy.shape[axis]} along axis "
                         f"{axis}, the inputs {sum(sizes)} ({list(sizes)})")
    xp = get_array_module(dy)
    out, start = [], 0
    for size in sizes:
        index = [slice(None)] * dy.ndim
        index[axis] = slice(start, start + size)
        out.append(xp.ascontiguousarray(dy[tuple(index)]))
        start += size
    return out
