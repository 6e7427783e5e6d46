"""The cores' shares of batch-parallel work: :func:`map_shares`, :func:`matmul` and
:func:`elementwise`, public as ``minconv.runtime``'s (see its docstring for the
threads, the team and BLAS's thread count).

They read and keep their state in :mod:`.runtime` (the thread count, the worker flag,
the region lock, the pool), the one home of process-wide settings.
"""
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import numpy as np

from . import _team, runtime
from ._kernels import kernels_for, reference
from .backend import get_array_module


def map_shares(work, N, xp=np):
    """``[work(part) for part in shares of range(N)]``, one share per core.

    Runs on the caller's thread alone for CuPy arrays (the GPU is parallel by
    itself), on a one-core setting, for a batch of one, when called from a
    worker, and without threadpoolctl; otherwise one share per core, each with
    a single BLAS thread and one OpenMP thread for its kernels, on the kernels'
    OpenMP team (a pool of Python threads where the kernels lack OpenMP; see
    :mod:`._team`). The caller's thread takes the first share. An exception in a
    share is raised here once every share has finished. Calls from several Python
    threads at once take turns.
    """
    threads = runtime.cpu_threads()
    if (xp is not np or threads < 2 or N < 2 or runtime.in_worker()
            or runtime._blas_controller() is None):
        return [work(slice(0, N))]
    parts = runtime.shares(N, threads)
    run_on_team = None if runtime._state["forked"] else _team.team_runner()
    if run_on_team is None:
        return _map_on_python_threads(work, parts)
    results, errors = [None] * len(parts), []
    one_kernel_thread = getattr(runtime._kernels().cpu, "set_kernel_threads", None)

    def share(t):
        runtime._local.worker = True
        if one_kernel_thread is not None:  # for this share only: restored after the team
            one_kernel_thread(1)
        try:
            results[t] = work(parts[t])
        except BaseException as error:  # raised by the caller, after the team's barrier
            errors.append(error)
        finally:
            if t == 0:  # the caller's own thread
                runtime._local.worker = False

    with runtime._region, _one_blas_thread():
        run_on_team(share, len(parts))
    if errors:
        raise errors[0]
    return results


def _map_on_python_threads(work, parts):
    """map_shares on a pool of Python threads, BLAS held to one thread meanwhile."""
    with runtime._region, runtime._blas_controller().limit(limits=1):
        if runtime._state["pool"] is None:
            runtime._state["pool"] = ThreadPoolExecutor(
                len(parts), thread_name_prefix="minconv", initializer=runtime._one_thread_each)
        futures = [runtime._state["pool"].submit(work, part) for part in parts]
        wait(futures)
        return [future.result() for future in futures]


@contextmanager
def _one_blas_thread():
    """BLAS held to one thread meanwhile: OpenBLAS through its own two functions, any
    other BLAS through threadpoolctl."""
    if runtime._state["blas_threads"] is None:
        runtime._state["blas_threads"] = _team.BlasThreads(runtime._blas_controller().info())
    blas = runtime._state["blas_threads"]
    if not blas.available:
        with runtime._blas_controller().limit(limits=1):
            yield
        return
    counts = blas.hold_to_one()
    try:
        yield
    finally:
        blas.restore(counts)


# Below about this many multiply-adds OpenBLAS runs a product on one thread anyway.
_SMALL_PRODUCT = 1 << 18


def matmul(a, b, out=None, bias=None, relu=False):
    """``a @ b`` (``+ bias[:, None]``; ``max(., 0)`` with ``relu``) for 2-D arrays, the
    product shared among the cores: every product of minconv's layers goes through here
    or runs inside a worker (one BLAS thread each).

    a : (M, K), b : (K, P), bias : (M,) or None -> (M, P), ``out`` when given. Each core computes
    ``out[rows] = a[rows] @ b``, or, where b has more columns than a has rows (a fully
    connected layer's weights at a small batch, an image's columns),
    ``out[:, cols] = a @ b[:, cols]``: split by rows, every core would read all of b
    (AlexNet's fc6 at batch 8: 28 ms, against 17 by columns). Each share runs with
    one BLAS thread; the result is the same as one call's up to rounding. A bias (a
    convolution's, one per output channel) and a ReLU (one that follows the convolution)
    are applied by each core to its block of the product while that block is still in
    its cache.

    Float32 and float64 operands with contiguous rows go to BLAS straight from the
    kernels' OpenMP team (:func:`._kernels.cpu_team.matmul`): no Python runs per
    share. Other operands take NumPy calls on the shares of :func:`map_shares`;
    without an OpenMP team, where OpenBLAS's idle threads sleep (the module
    docstring), one call that BLAS's threads share. CuPy arrays, small products,
    matrix-vector products (a fully connected layer at batch 1: BLAS's gemv shares it
    among its own threads; as shares, ResNet's 2048 -> 1000 took 0.50 against 0.23 ms,
    AlexNet's fc6 on the team's one-column GEMMs 9.4 against 3.5) and calls from a
    worker take one call.
    """
    if (not isinstance(a, np.ndarray) or a.shape[0] * a.shape[1] * b.shape[1] < _SMALL_PRODUCT
            or min(a.shape[0], b.shape[1]) == 1
            or (runtime._BLAS_THREADS_SLEEP and _team.team_runner() is None)):
        return _finish(get_array_module(a).matmul(a, b, out=out), bias, relu)
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    if _team_takes(a, b, out) and (bias is None or _bias_fits(bias, out)):
        from ._kernels import cpu_team  # importable: _team_takes bound its BLAS calls
        align = 16 if b.shape[1] > a.shape[0] else 8  # columns, or rows, per share
        with runtime._region, _one_blas_thread():
            return cpu_team.matmul(a, b, out, runtime.cpu_threads(), align, bias, relu)

    def rows(part):
        np.matmul(a[part], b, out=out[part])

    def columns(part):
        np.matmul(a, b[:, part], out=out[:, part])

    if b.shape[1] > a.shape[0]:
        map_shares(columns, b.shape[1])
    else:
        map_shares(rows, a.shape[0])
    return _finish(out, bias, relu)


def batched_matmul(a, b, out=None, bias=None, relu=False):
    """``out[n] = a @ b[n]`` (``+ bias[:, None]``; ``max(., 0)`` with ``relu``) for every
    image n: a 1x1 convolution of a batch, shared among the cores as one product.

    a : (M, K), b : (N, K, P), bias : (M,) or None -> (N, M, P), ``out`` when given. The
    cores split the N*P columns of the images laid side by side, so a batch smaller than
    the cores keeps every core busy and a batch of many runs no Python per image; each
    core adds the bias and applies the ReLU to its blocks while they are in its cache.
    A batch of one is :func:`matmul`'s product. Operands the
    team's BLAS calls do not take (other dtypes, rows that are not contiguous, CuPy
    arrays, calls from a worker, small products) take one broadcasting ``matmul``.
    """
    N, P = b.shape[0], b.shape[2]
    if out is None:
        out = get_array_module(b).empty((N, a.shape[0], P), dtype=np.result_type(a, b))
    if N == 1:  # one product: matmul splits it by rows or by columns, whichever reads less
        matmul(a, b[0], out=out[0], bias=bias, relu=relu)
        return out
    if (isinstance(a, np.ndarray) and a.shape[0] * a.shape[1] * N * P >= _SMALL_PRODUCT
            and N > 0 and _team_takes(a, b[0], out[0])
            and not np.may_share_memory(out, b) and (bias is None or _bias_fits(bias, out[0]))):
        from ._kernels import cpu_team  # importable: _team_takes bound its BLAS calls
        with runtime._region, _one_blas_thread():
            return cpu_team.batched_matmul(a, b, out, runtime.cpu_threads(), 16, bias, relu)
    return _finish(get_array_module(b).matmul(a, b, out=out), bias, relu)


def _finish(out, bias, relu):
    """out += bias[:, None] (where given), then max(out, 0) with ``relu``; returns out.
    out : (M, P) or (N, M, P), bias : (M,)."""
    if bias is None and not relu:
        return out
    if (isinstance(out, np.ndarray) and out.dtype in (np.float32, np.float64)
            and out.ndim in (2, 3) and out.strides[-1] == out.itemsize
            and (bias is None or _bias_fits(bias, out[0] if out.ndim == 3 else out))
            and _team.team_module() is not None):
        return _team.team_module().finish(out, bias, relu)  # one C loop, in cache
    if bias is not None:
        out += bias[:, None]
    if relu:  # the kernels take contiguous arrays; the reference any view
        (kernels_for(out) if out.flags.c_contiguous else reference).relu_forward(out, out=out)
    return out


def _bias_fits(bias, out):
    """Whether the team's products can add ``bias`` to ``out`` themselves."""
    return (isinstance(bias, np.ndarray) and bias.dtype == out.dtype
            and bias.shape == (out.shape[0],) and bias.flags.c_contiguous)


def _rows_contiguous(m, dtype):
    return (m.ndim == 2 and m.dtype == dtype and m.strides[1] == dtype.itemsize
            and m.strides[0] >= m.shape[1] * dtype.itemsize)


def _team_takes(a, b, out):
    """Whether :func:`matmul` may hand these operands to the team's BLAS calls."""
    if runtime.cpu_threads() < 2 or runtime.in_worker() or runtime._state["forked"]:
        return False
    if runtime._state["team_gemm"] is None:
        blas = runtime._blas_controller()
        runtime._state["team_gemm"] = (_team.team_runner() is not None and blas is not None
                                       and _team.bind_team_gemm(blas.info()))
    dtype = a.dtype
    return (runtime._state["team_gemm"] and dtype in (np.float32, np.float64)
            and all(_rows_contiguous(m, dtype) for m in (a, b, out))
            and a.shape[1] == b.shape[0] and out.shape == (a.shape[0], b.shape[1])
            and min(out.shape) > 1  # a matrix-vector product: NumPy's own (gemv)
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b))


# Below about this many elements an elementwise pass takes well under a millisecond.
_SMALL_ELEMENTWISE = 1 << 18


def elementwise(ufunc, out, *operands):
    """``ufunc(*operands, out=out)``, each core taking its share of the first axis.

    NumPy lets go of the GIL inside a ufunc's loop, so the shares run at once;
    each element is computed as one call would compute it. An operand broadcast along
    the first axis (fewer axes, or a first axis of 1: a per-channel constant) goes whole
    to every share. CuPy arrays and small arrays take one call.
    """
    if not isinstance(out, np.ndarray) or out.size < _SMALL_ELEMENTWISE or out.ndim == 0:
        return ufunc(*operands, out=out)

    def split(a):
        return getattr(a, "ndim", 0) == out.ndim and a.shape[0] == out.shape[0]

    def share(part):
        ufunc(*(a[part] if split(a) else a for a in operands), out=out[part])

    map_shares(share, out.shape[0])
    return out
