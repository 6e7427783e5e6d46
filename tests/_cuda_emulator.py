"""Run the CUDA source of minconv._kernels.cuda on the CPU, one simulated thread at a time.

Machines without a GPU can still check the kernels' index arithmetic, bounds,
tie rules and the argument passing between Python and CUDA: the CUDA source is
compiled as C++ with g++ behind a small shim (``__global__`` and ``__device__``
vanish, ``blockIdx``/``threadIdx``/``blockDim``/``gridDim`` become globals,
atomics become plain read-modify-writes), and ``FakeCupy`` stands in for the
few parts of CuPy that cuda.py uses, with NumPy arrays as "device" arrays.

A launch runs every thread of every block in turn. That checks what each
thread computes, not CUDA's memory model: races that a serial run cannot show,
and the compile itself (NVRTC, real device code), are for the GPU tests.

The launcher also checks each argument's size against the kernel's parameter
types (a float64 passed for a float, an int64 for an int), as a GPU would not:
there such a mismatch silently reads garbage.
"""
import atexit
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import types

import numpy as np

SHIM = r"""
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <type_traits>
#include <utility>

struct dim3_ { unsigned x, y, z; };
static dim3_ blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__

typedef unsigned long long u64;
static inline float __int_as_float(int v) { float f; memcpy(&f, &v, 4); return f; }
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, 8); return d; }
static inline long long __double_as_longlong(double d) { long long v; memcpy(&v, &d, 8); return v; }
template <typename T> static T atomicAdd(T* a, T v) { T old = *a; *a += v; return old; }
static u64 atomicCAS(u64* a, u64 expected, u64 v) { u64 old = *a; if (old == expected) *a = v; return old; }
"""

LAUNCHER = r"""
// args[k] points at the k-th argument (CUDA's kernelParams convention); sizes[k] is
// the byte size Python gave it (the element size for an array).
template <typename A> static size_t param_size() {
    typedef typename std::remove_cv<typename std::remove_pointer<A>::type>::type E;
    return sizeof(E);
}
template <typename... A, size_t... K>
static int run(void (*kernel)(A...), unsigned grid, unsigned block, void** args,
               const size_t* sizes, size_t nargs, std::index_sequence<K...>) {
    if (nargs != sizeof...(A)) return -1;
    const size_t expected[] = {param_size<A>()..., 0};
    for (size_t k = 0; k < nargs; ++k)
        if (expected[k] != sizes[k]) return (int)k + 1;  // which argument is wrong
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b)
        for (unsigned t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            kernel(*static_cast<A*>(args[K])...);
        }
    return 0;
}
template <typename... A>
static int launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args,
                  const size_t* sizes, size_t nargs) {
    return run(kernel, grid, block, args, sizes, nargs, std::index_sequence_for<A...>{});
}
"""


def compiler():
    """The C++ compiler to use, or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


class _Function:
    def __init__(self, library, symbol, name):
        self._entry = getattr(library, symbol)
        self._entry.restype = ctypes.c_int
        self.name = name

    def __call__(self, grid, block, args, shared_mem=0):
        keep, pointers, sizes = [], [], []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, f"{self.name}: kernels index arrays flat"
                holder = np.array([a.ctypes.data], dtype=np.uintp)
                sizes.append(a.dtype.itemsize)
            else:
                # CuPy would turn a Python int into a 64-bit integer and a float
                # into a double whatever the kernel expects: insist on NumPy scalars
                assert isinstance(a, np.generic), f"{self.name}: pass NumPy scalars, got {a!r}"
                holder = np.array(a)
                sizes.append(holder.dtype.itemsize)
            keep.append(holder)
            pointers.append(holder.ctypes.data)
        argv = (ctypes.c_void_p * len(args))(*pointers)
        sizev = (ctypes.c_size_t * len(args))(*sizes)
        status = self._entry(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), argv, sizev,
                             ctypes.c_size_t(len(args)))
        if status == -1:
            raise TypeError(f"{self.name}: wrong number of arguments ({len(args)})")
        if status:
            raise TypeError(f"{self.name}: argument {status - 1} has {sizes[status - 1]} bytes, "
                            "which is not the size of the kernel's parameter type")


class FakeRawModule:
    """``cupy.RawModule(code=..., name_expressions=...)``, compiled by g++ for the CPU."""

    _cache = {}

    def __init__(self, code, name_expressions, options=()):
        wrappers = [f'extern "C" int launch_{k}(unsigned g, unsigned b, void** a, const size_t* s,'
                    f' size_t n) {{ return launch(&{name}, g, b, a, s, n); }}'
                    for k, name in enumerate(name_expressions)]
        source = SHIM + code + LAUNCHER + "\n".join(wrappers) + "\n"
        key = hashlib.sha256(source.encode()).hexdigest()
        if key not in self._cache:
            self._cache[key] = self._build(source)
        self._library = self._cache[key]
        self._symbols = {name: f"launch_{k}" for k, name in enumerate(name_expressions)}

    @staticmethod
    def _build(source):
        folder = tempfile.mkdtemp(prefix="minconv-cuda-emulator-")
        atexit.register(shutil.rmtree, folder, True)
        src, lib = os.path.join(folder, "kernels.cpp"), os.path.join(folder, "kernels.so")
        with open(src, "w") as f:
            f.write(source)
        result = subprocess.run([compiler(), "-std=c++14", "-O1", "-shared", "-fPIC",
                                 "-Wall", "-Wno-unused-function", src, "-o", lib],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError("the CUDA source does not compile as C++:\n" + result.stderr)
        return ctypes.CDLL(lib)

    def get_function(self, name):
        return _Function(self._library, self._symbols[name], name)


def fake_cupy():
    """A stand-in for the parts of the ``cupy`` module that minconv._kernels.cuda uses."""
    module = types.SimpleNamespace(
        ndarray=np.ndarray, int32=np.int32, int64=np.int64, empty=np.empty, zeros=np.zeros,
        empty_like=np.empty_like, ascontiguousarray=np.ascontiguousarray,
        RawModule=FakeRawModule,
        cuda=types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0)))
    return module
