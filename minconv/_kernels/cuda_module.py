"""Compiling and launching a module of CUDA kernel templates, for the kernel files
that sit beside :mod:`minconv._kernels.cuda` (``cuda_norm``, ``cuda_avgpool``).

Each such file holds its CUDA source as one module-level string of templates
``kernel<T, I>`` (T the element type, I the index type) and calls :func:`launch`.
The conventions are cuda.py's and read its settings at call time (``BLOCK``,
``MAX_GRID``, ``_INT32_LIMIT``, ``_cupy``), so one change there covers every file:

- a source is compiled once per device, for float and double and for 32- and
  64-bit indices, on its first launch (memoised);
- a launch runs ``cuda.BLOCK`` threads per block over at most ``cuda.MAX_GRID``
  blocks; the kernels walk their elements with a grid-stride loop;
- 64-bit indices only where an array has ``cuda._INT32_LIMIT`` elements or more.
"""
import functools

import numpy as np

from . import cuda


@functools.lru_cache(maxsize=None)
def _compiled(source, kernels, device_id):
    """The RawModule of ``source`` with every kernel for float/double x int/long long."""
    names = [cuda._name(k, c, i) for k in kernels
             for c in cuda._CTYPES.values() for i in cuda._ITYPES.values()]
    return cuda._cupy().RawModule(code=source, name_expressions=names)


@functools.lru_cache(maxsize=None)
def _function(source, kernels, kernel, ctype, itype, device_id):
    return _compiled(source, kernels, device_id).get_function(cuda._name(kernel, ctype, itype))


def clear_cache():
    """Forget every compiled module (the emulated tests swap CuPy for a stand-in)."""
    _compiled.cache_clear()
    _function.cache_clear()


def launch(source, kernels, kernel, dtype, total, arrays, sizes, scalars=()):
    """Run ``kernel`` of ``source`` over ``total`` elements (threads).

    Arguments go in the order of the CUDA signature: ``arrays``, then the integer
    ``sizes`` (as int32 or int64, whichever holds every index), then the float
    ``scalars`` (in ``dtype``). Python numbers are converted explicitly: CuPy would
    pass a Python int as a 64-bit integer and a float as a double.
    """
    if total == 0:
        return
    cp = cuda._cupy()
    largest = max([total] + [a.size for a in arrays])
    itype = np.int32 if largest <= cuda._INT32_LIMIT else np.int64
    args = tuple(arrays) + tuple(itype(v) for v in sizes) + tuple(dtype.type(v) for v in scalars)
    grid = min((total + cuda.BLOCK - 1) // cuda.BLOCK, cuda.MAX_GRID)
    function = _function(source, kernels, kernel, cuda._CTYPES[dtype], cuda._ITYPES[itype],
                         cp.cuda.Device().id)
    function((grid,), (cuda.BLOCK,), args)
