"""NumPy on the CPU, CuPy on the GPU.

Every op looks at its input to decide where to run: ``get_array_module(x)``
returns ``numpy`` for NumPy arrays and ``cupy`` for CuPy arrays, so the same
code serves both devices. ``to_device`` moves arrays, layers, nets and
optimiser state between them.

CuPy is optional: minconv imports and runs without it, and asking for
``"cuda"`` without it raises an error that says how to install it.
"""
import numpy as np

try:  # an optional accelerator: the package must load without it
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy that cannot find its CUDA libraries
    _cupy = None

DEVICES = ("cpu", "cuda")


def cupy_available():
    """True when CuPy is importable and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(x):
    """The array module (``numpy`` or ``cupy``) that owns ``x``."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy
    return np


def device_of(x):
    """``"cuda"`` for a CuPy array, ``"cpu"`` otherwise."""
    return "cuda" if get_array_module(x) is not np else "cpu"


def _require_cuda():
    if _cupy is None:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed: "
            "pip install -e '.[gpu]' (or pip install cupy-cuda12x)")
    if not cupy_available():
        raise RuntimeError("device 'cuda' needs a CUDA GPU, but CuPy sees none "
                           "(check the driver and CUDA_VISIBLE_DEVICES)")
    return _cupy


def _move_array(a, device):
    if device == "cpu":
        return _cupy.asnumpy(a) if get_array_module(a) is not np else a
    return _require_cuda().asarray(a)


def to_device(obj, device):
    """Move ``obj`` to ``device`` (``"cpu"`` or ``"cuda"``) and return it.

    Arrays are copied (or returned as they are when already there); dicts,
    lists and tuples are rebuilt with their items moved; any other object with
    a ``to(device)`` method (layers, nets, optimisers) is moved in place and
    returned, like ``torch.nn.Module.to``.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if isinstance(obj, np.ndarray) or (_cupy is not None and isinstance(obj, _cupy.ndarray)):
        return _move_array(obj, device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if hasattr(obj, "to"):
        return obj.to(device)
    if obj is None or np.isscalar(obj):
        return obj
    raise ValueError(f"to_device: cannot move an object of type {type(obj).__name__}")
