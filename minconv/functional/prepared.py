"""Weights prepared once for the fast kernels, while they are locked.

The fast paths read a convolution's weights in layouts of their own: the tiles
tap-major, ``(kh*kw*C, F)``, their data gradient flipped, Winograd transformed.
Derived on every call, that costs 0.25 ms for a 256 -> 256 3x3 layer, an eighth of
GoogLeNet's pass at batch 1. An inference runtime prepares such layouts once, when
it loads a model, because its weights cannot change. minconv does the same for
weights that are *locked*:

    net.lock_weights()      # every parameter read-only; layouts derived once, kept
    ...                     # forward and backward passes (visualisations, inference)
    net.unlock_weights()    # writable again; what was derived from them is dropped

:func:`lock` makes an array read-only and registers it; :func:`derived` returns
what a path derives from a registered array (computing it once), and computes it
afresh for any other array. A write to a locked array raises NumPy's read-only
error, so nothing kept can go stale through it. Unlock with :func:`unlock` (or
``unlock_weights``); an array made writable by hand is no longer trusted either.
An array whose memory belongs to another array is copied before it is locked
(the other one could still be written), so lock parameters through the layer,
which keeps the copy. CuPy arrays have no read-only flag and are never locked.
"""
import threading
import weakref

import numpy as np

_mutex = threading.Lock()  # guards the registry's entries
_registry = {}  # id(array) -> (weak reference to it, {key: derived array})


def lockable(a):
    """True for NumPy arrays that own their memory (what :func:`lock` accepts)."""
    return isinstance(a, np.ndarray) and a.base is None


def lock(a):
    """Make ``a`` read-only and keep what is derived from it until :func:`unlock`.

    a : a NumPy array that owns its memory (``lockable``); returns it.
    """
    if not isinstance(a, np.ndarray):
        raise ValueError(f"prepared.lock: expected a NumPy array that owns its memory, got "
                         f"{type(a).__name__}")
    if not lockable(a):
        raise ValueError(f"prepared.lock: expected a NumPy array that owns its memory, got a "
                         f"view of another array {a.dtype} {a.shape} (lock a copy)")
    a.flags.writeable = False
    key = id(a)

    def forget(_, key=key):
        with _mutex:
            _registry.pop(key, None)

    with _mutex:
        entry = _registry.get(key)
        if entry is None or entry[0]() is not a:
            _registry[key] = (weakref.ref(a, forget), {})
    return a


def unlock(a):
    """Make ``a`` writable again and drop what was derived from it; returns it."""
    with _mutex:
        entry = _registry.get(id(a))
        if entry is not None and entry[0]() is a:
            del _registry[id(a)]
    if isinstance(a, np.ndarray) and a.base is None:
        a.flags.writeable = True
    return a


def is_locked(a):
    """True while ``a`` is locked (registered and still read-only)."""
    entry = _registry.get(id(a))
    return entry is not None and entry[0]() is a and not a.flags.writeable


def derived(a, key, make):
    """``make(a)``, computed once per ``key`` while ``a`` is locked and every time otherwise.

    The result is kept with ``a`` and shared by every caller: treat it as read-only.
    """
    entry = _registry.get(id(a))
    if entry is None or entry[0]() is not a or a.flags.writeable:
        return make(a)
    kept = entry[1].get(key)
    if kept is None:
        kept = make(a)
        if isinstance(kept, np.ndarray):
            kept.flags.writeable = False
        entry[1][key] = kept
    return kept


def kept_count():
    """How many locked arrays are registered (for tests and diagnostics)."""
    with _mutex:
        return sum(1 for ref, _ in _registry.values() if ref() is not None)
