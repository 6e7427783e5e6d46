"""Up-front input checks shared by the ops: clear errors instead of deep tracebacks."""
import numpy as np

from ..backend import get_array_module
from ..geometry import check_nonnegative, check_positive, pair  # noqa: F401 (one home)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(x, op, what="input", ndim=None, layout=None):
    """Raise ValueError unless ``x`` is a float32/float64 array of rank ``ndim``."""
    xp = get_array_module(x)
    if not isinstance(x, xp.ndarray):
        raise ValueError(f"{op}: {what} must be an array, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{op}: expected a {ndim}-D {what}{hint}, got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: {what} must be float32 or float64, got {x.dtype} "
                         f"(shape {tuple(x.shape)}); convert with .astype(np.float32)")


def check_same_dtype(op, **arrays):
    """Raise ValueError unless all given arrays share one dtype (no silent casts)."""
    present = {name: a for name, a in arrays.items() if a is not None}
    dtypes = {a.dtype for a in present.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name} {a.dtype} {tuple(a.shape)}" for name, a in present.items())
        raise ValueError(f"{op}: dtypes differ ({listing}); use one dtype throughout")


def check_shape(a, expected, op, what):
    """Raise ValueError unless ``a.shape == expected``."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{op}: {what} has shape {tuple(a.shape)}, expected {tuple(expected)}")
