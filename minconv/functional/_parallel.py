"""Batch parallelism on the CPU: each core convolves its own share of the images.

A convolution can be split two ways over the cores. Splitting every GEMM and
every im2col/col2im call (what BLAS and OpenMP do by themselves) hands the work
back and forth between the cores several times per chunk, and the columns that
one core unfolds are multiplied by both. Splitting the batch instead gives each
core whole images: it unfolds, multiplies and folds its own share with one BLAS
thread and one OpenMP thread, so its columns stay in its own cache and the cores
meet once per call. On the 14x14 and 7x7 maps of ``zfnet_mini`` that measures
about a third faster.

The fully connected layers share out the rows of their products the same way
(:func:`matmul`), so a training step makes no multi-threaded BLAS call at all.
That matters beyond the layers themselves: after such a call OpenBLAS's helper
threads keep spinning for a while, and they would take a core from the workers.

Images never interact in a convolution, so the output does not depend on the
split; only the weight gradient is a sum over images, and its per-share partial
sums are added in share order, the same on every call.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from .. import _kernels

_state = {"pool": None, "threads": None, "blas": None}
_region = threading.Lock()      # one batch-parallel region at a time: BLAS's limit is global
_local = threading.local()


def _forget_pool_in_child():
    """A forked child has none of the parent's worker threads: it starts its own."""
    global _region
    _state["pool"] = None
    _region = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def cpu_threads():
    """The number of cores a batch-parallel operation uses (OpenMP's thread count)."""
    if _state["threads"] is None:
        threads = _kernels.cpu.kernel_threads() if hasattr(_kernels.cpu, "kernel_threads") \
            else (os.cpu_count() or 1)
        _state["threads"] = max(1, int(threads))
    return _state["threads"]


def _blas_controller():
    """threadpoolctl's handle on the BLAS libraries loaded (None without threadpoolctl)."""
    if _state["blas"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            _state["blas"] = ThreadpoolController().select(user_api="blas")
        except ImportError:  # no way to hold BLAS to one thread: the split would oversubscribe
            _state["blas"] = False
    return _state["blas"] or None


def _one_thread_each():
    """Worker start-up: this thread's kernels use one OpenMP thread."""
    _local.worker = True
    if hasattr(_kernels.cpu, "set_kernel_threads"):
        _kernels.cpu.set_kernel_threads(1)


def in_worker():
    """True inside a batch-parallel worker (which must not split its work again)."""
    return getattr(_local, "worker", False)


def shares(N, count):
    """Split range(N) into ``count`` contiguous slices of near-equal size."""
    count = max(1, min(int(count), N))
    bounds = [N * k // count for k in range(count + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(count)]


def map_shares(work, N, xp=np):
    """``[work(part) for part in shares of range(N)]``, one share per core.

    Runs on the caller's thread alone for CuPy arrays (the GPU is parallel by
    itself), on a one-core machine, for a batch of one, when called from a
    worker, and without threadpoolctl; otherwise one share per core, each with
    a single BLAS thread. An exception in a share is raised here once every
    share has finished.
    """
    threads = cpu_threads()
    if xp is not np or threads < 2 or N < 2 or in_worker() or _blas_controller() is None:
        return [work(slice(0, N))]
    with _region, _blas_controller().limit(limits=1):
        if _state["pool"] is None:
            _state["pool"] = ThreadPoolExecutor(threads, thread_name_prefix="minconv",
                                                initializer=_one_thread_each)
        futures = [_state["pool"].submit(work, part) for part in shares(N, threads)]
        wait(futures)
        return [future.result() for future in futures]


# Below about this many multiply-adds OpenBLAS runs a product on one thread anyway.
_SMALL_PRODUCT = 1 << 18


def matmul(a, b):
    """``a @ b`` for 2-D NumPy arrays, the rows of the product shared among the cores.

    a : (M, K), b : (K, P) -> (M, P); each core computes ``out[rows] = a[rows] @ b``
    with one BLAS thread, so the result is the same as one call's up to rounding.
    """
    if not isinstance(a, np.ndarray) or a.shape[0] * a.shape[1] * b.shape[1] < _SMALL_PRODUCT:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))

    def rows(part):
        np.matmul(a[part], b, out=out[part])

    map_shares(rows, a.shape[0])
    return out


# Below about this many elements an elementwise pass takes well under a millisecond.
_SMALL_ELEMENTWISE = 1 << 18


def elementwise(ufunc, out, *operands):
    """``ufunc(*operands, out=out)``, each core taking its share of the first axis.

    NumPy lets go of the GIL inside a ufunc's loop, so the shares run at once;
    each element is computed as one call would compute it. CuPy arrays and small
    arrays take one call.
    """
    if not isinstance(out, np.ndarray) or out.size < _SMALL_ELEMENTWISE or out.ndim == 0:
        return ufunc(*operands, out=out)

    def share(part):
        ufunc(*(a[part] if getattr(a, "ndim", 0) == out.ndim else a for a in operands),
              out=out[part])

    map_shares(share, out.shape[0])
    return out
