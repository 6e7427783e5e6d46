"""Every process-wide setting of minconv, in one place.

    import minconv as mc
    mc.runtime.configure(threads=2, workspace_mb=256, isa="avx2", malloc="keep")
    mc.runtime.settings()     # {'threads': 2, 'workspace_mb': 256.0, 'isa': 'avx2', ...}

What lives here, and nowhere else in the package:

- **threads**: how many cores the batch-parallel operations use. A convolution
  is split over the batch: each core unfolds, multiplies and folds its own share
  of the images with one BLAS thread and one OpenMP thread, so its columns stay
  in its own cache and the cores meet once per call (on zfnet_mini's 14x14 and
  7x7 maps about a third faster than letting BLAS and OpenMP split every call).
  Products outside the workers (a batch of one, the fully connected layers) go
  through :func:`matmul`, and 1x1 convolutions through :func:`batched_matmul`.
  Images never interact in a convolution, so the output does not depend on the
  split; a weight gradient's per-share sums are added in share order, the same on
  every call. The calls themselves are in :mod:`._shares`.
- **the workers** and their fork handling: a forked child has none of its parent's
  threads, and GNU OpenMP would wait for the parent's team there, so a child runs
  its shares on a pool of Python threads and its own kernels on one thread.
- **OpenBLAS's idle threads**: after a multi-threaded product they spin for 2^28
  cycles (about 0.1 s) and take a core from the workers and the OpenMP kernels (a
  64 -> 128 convolution at 112x112 on the tiles at batch 1: 9.7 ms, 19.3 right after
  a BLAS product). minconv's own products never wake them: the team calls BLAS with
  one thread each. ``OPENBLAS_THREAD_TIMEOUT=4``, set before NumPy loads OpenBLAS,
  makes them sleep at once for everyone else's products (and, without an OpenMP
  team, lets :func:`matmul` be one multi-threaded BLAS call).
- **the OpenMP team and its wait**: the Cython kernels, the shares of every
  batch-parallel call and the products of :func:`matmul` all run on the kernels'
  OpenMP team (:mod:`._team`), whose idle threads spin for about 1.4 ms and then
  sleep (``GOMP_SPINCOUNT=50000``, set before the kernels load libgomp, unless
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set). Waking a sleeping thread
  costs 50-130 us on a virtual machine; densenet121 at batch 1 makes several
  hundred parallel calls a pass. Spinning pays only within one team: OpenMP's
  default spin starved the BLAS threads of a second pool (a zfnet_mini step took
  3.6x longer).
- **the workspace**: the bytes the unfolded columns of one chunk of a
  convolution may take (256 MB by default), and each thread's scratch buffer.
  Scratch memory only ever holds intermediate values: no result handed to a
  caller is a view of it, so holding one result while computing another is safe.
- **the malloc policy**: whether glibc keeps freed large blocks for reuse
  (:func:`configure` ``malloc="keep"``, what the trainer asks for).
- **the instruction-set cap** of the compiled tiles ("avx512", "avx2", "none"),
  also settable before start-up with the environment variable ``MINCONV_ISA``.
"""
import math
import os
import sys
import threading
import warnings


def _blas_threads_sleep():
    """Whether OpenBLAS's idle threads spin at most 2^16 cycles (~20 us): the setting
    OpenBLAS read when NumPy loaded it. Set here when NumPy is not loaded yet."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    try:
        return int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "")) <= 16
    except ValueError:
        return False


_BLAS_THREADS_SLEEP = _blas_threads_sleep()

import numpy as np  # noqa: E402

from . import _team  # noqa: E402


def _openmp_already_loaded():
    """Whether an OpenMP runtime is mapped into this process already (Linux; else False)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line or "libiomp" in line for line in maps)
    except OSError:
        return False


# Set before any OpenMP runtime loads (minconv/__init__ imports this module first). A
# runtime already loaded (by `import torch`, say) read its policy then: minconv's
# kernels share it, and its spinning threads took 1.5x longer over a ResNet-18 pass.
if "OMP_WAIT_POLICY" not in os.environ and _openmp_already_loaded():
    warnings.warn(
        "minconv: an OpenMP runtime was loaded before minconv (by `import torch`, for "
        "one), so its idle threads spin and take cores from minconv's workers (ResNet-18 "
        "ran 1.5x slower so). Import minconv first, or set OMP_WAIT_POLICY=PASSIVE in "
        "the environment before starting Python.", RuntimeWarning, stacklevel=2)
# minconv's idle OpenMP threads spin for about 1.4 ms (50000 rounds) and then sleep:
# its kernels and its batch-parallel shares run on that one team (see _team), so a
# spinning thread takes no core from another pool of minconv's, and a pass of small
# layers does not wake a sleeping thread (50-130 us) for each of them.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "50000")

__all__ = ["configure", "settings", "cpu_threads", "in_worker", "shares", "map_shares",
           "matmul", "batched_matmul", "elementwise", "workspace_limit", "set_workspace_limit",
           "scratch", "cache_chunk_bytes", "isa", "ISA_NAMES"]

ISA_NAMES = ("none", "avx2", "avx512")
MALLOC_POLICIES = ("default", "keep")

_state = {
    "pool": None,                    # the workers' ThreadPoolExecutor, made on first use
    "threads": None,                 # shares per batch-parallel call (None: OpenMP's count)
    "blas": None,                    # threadpoolctl's handle on BLAS (False: none)
    "blas_threads": None,            # _team.BlasThreads, made on first use
    "forked": False,                 # a forked child: no OpenMP team of its own
    "team_gemm": None,               # whether the team calls BLAS itself (found on first use)
    "workspace": 256 * 2 ** 20,      # bytes of columns per chunk
    "malloc": "default",
    "kernels": None,                 # the compiled kernels' module, once loaded
}
_region = threading.Lock()           # one batch-parallel region at a time: BLAS's limit is global
_local = threading.local()           # per thread: worker flag and scratch buffers


def _kernels():
    module = _state.get("kernels")
    if module is None:
        from . import _kernels as module  # late: the kernels load after the wait policy is set
        _state["kernels"] = module
    return module


def _forget_pool_in_child():
    """A forked child has none of the parent's worker threads: it starts its own, of
    Python threads, and its first thread's kernels run on one OpenMP thread (GNU
    OpenMP's team of the parent, which it would wait for, is gone)."""
    global _region
    _state["pool"] = None
    _state["forked"] = True
    _region = threading.Lock()
    if "minconv._kernels" in sys.modules:
        cpu = _kernels().cpu
        if hasattr(cpu, "set_kernel_threads"):
            cpu.set_kernel_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


# ---------------------------------------------------------------- configuration

def configure(threads=None, workspace_mb=None, isa=None, malloc=None):
    """Set process-wide knobs; an argument left at None keeps its setting. Returns
    :func:`settings` as they were before the call (so a caller can restore them).

    threads      : cores for batch-parallel work; also caps the OpenMP threads of the
                   caller's kernels and BLAS's threads (threadpoolctl, when installed)
    workspace_mb : the column budget of one convolution chunk, in MB (frees the scratch)
    isa          : cap the compiled tiles' instruction set: "avx512", "avx2" or "none"
                   (the CPU's best below the cap runs; see :func:`isa`)
    malloc       : "keep" asks glibc to keep freed large blocks for reuse (fewer page
                   faults when every step allocates the same activations), "default"
                   leaves glibc as it is
    """
    before = settings()
    if threads is not None:
        if not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"runtime.configure: threads must be a positive int, got {threads!r}")
        _set_threads(int(threads))
    if workspace_mb is not None:
        set_workspace_limit(int(float(workspace_mb) * 2 ** 20))
    if isa is not None:
        if isa not in ISA_NAMES:
            raise ValueError(f"runtime.configure: isa must be one of {ISA_NAMES}, got {isa!r}")
        set_cap = getattr(_kernels().cpu, "set_isa_cap", None)
        if set_cap is not None:
            set_cap(isa)
        elif isa != "none":
            raise ValueError(f"runtime.configure: isa={isa!r} needs compiled kernels with "
                             "an instruction-set cap (set_isa_cap); these have none")
    if malloc is not None:
        if malloc not in MALLOC_POLICIES:
            raise ValueError(f"runtime.configure: malloc must be one of {MALLOC_POLICIES}, "
                             f"got {malloc!r}")
        if malloc == "keep" and _state["malloc"] != "keep":
            if _keep_freed_memory():
                _state["malloc"] = "keep"
    return before


def settings():
    """The current process-wide settings, as a dict (see :func:`configure`)."""
    blas = _blas_controller()
    return {
        "threads": cpu_threads(),
        "workspace_mb": workspace_limit() / 2 ** 20,
        "isa": isa(),
        "malloc": _state["malloc"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_spin_count": os.environ.get("GOMP_SPINCOUNT"),
        "team": _team.team_runner() is not None and not _state["forked"],
        "blas_threads_sleep": _BLAS_THREADS_SLEEP,
        "blas_threads": [lib["num_threads"] for lib in blas.info()] if blas else None,
        "compiled_kernels": bool(_kernels().CPU_BUILT),
    }


def isa():
    """The instruction set the compiled tiles use now: "avx512", "avx2" or "none"."""
    current = getattr(_kernels().cpu, "isa", None)
    if current is not None:
        return current()
    fused = getattr(_kernels().cpu, "fused_kernels", None)
    return "avx512" if fused is not None and fused(np.float32) else "none"


def _set_threads(threads):
    cpu = _kernels().cpu
    if hasattr(cpu, "set_kernel_threads"):
        cpu.set_kernel_threads(1 if _state["forked"] else threads)
    with _region:
        _state["threads"] = threads
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
            _state["pool"] = None
    blas = _blas_controller()
    if blas is not None:
        blas.limit(limits=threads)  # stays in force: threadpoolctl sets it at once


def _keep_freed_memory(threshold=1 << 30):
    """Ask glibc to keep freed large blocks for reuse instead of unmapping them.

    By default every array over 32 MB is a fresh ``mmap`` whose pages fault in one
    by one on first touch (~0.17 ms per MB here): a training step of the full ZFNet
    allocates the same large activations again and again and pays that each time.
    Raising the mmap and trim thresholds lets ``malloc`` hand back the same pages,
    at the cost of a somewhat larger resident set. True when it took effect (glibc).
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold))) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * int(threshold)))


# ---------------------------------------------------------------- workspace and scratch

def workspace_limit():
    """Bytes that the unfolded columns of one convolution chunk may take."""
    return _state["workspace"]


def set_workspace_limit(nbytes):
    """Set the column workspace budget (bytes); returns the previous one."""
    if int(nbytes) < 1:
        raise ValueError(f"set_workspace_limit: expected a positive byte count, got {nbytes}")
    previous = _state["workspace"]
    _state["workspace"] = int(nbytes)
    _local.__dict__.pop("scratch", None)  # the caller's; a worker's are at most one cache chunk
    return previous


# Columns written by im2col are read back at once by the GEMM: chunks of about this
# size are still in cache then, which measures 5-20% faster on the large layers than
# one batch-sized chunk. The workspace limit stays the hard bound.
_CACHE_CHUNK_BYTES = 8 * 2 ** 20


def cache_chunk_bytes():
    """The column bytes a chunk aims at on the CPU, shared by the cores working at once."""
    return _CACHE_CHUNK_BYTES


def scratch(xp, dtype, shape):
    """A scratch array of ``shape`` for intermediate values: on the CPU one buffer per
    thread and dtype, reused from call to call; CuPy's memory pool already reuses blocks.

    The caller must copy out what it keeps before its next call to ``scratch`` on the
    same thread: no result returned to a user may be (a view of) a scratch array.
    """
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    size = math.prod(shape)
    buffers = _local.__dict__.setdefault("scratch", {})
    key = np.dtype(dtype)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


# ---------------------------------------------------------------- batch parallelism

def cpu_threads():
    """The number of cores a batch-parallel operation uses (OpenMP's thread count)."""
    if _state["threads"] is None:
        cpu = _kernels().cpu
        threads = cpu.kernel_threads() if hasattr(cpu, "kernel_threads") else (os.cpu_count() or 1)
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
    cpu = _kernels().cpu
    if hasattr(cpu, "set_kernel_threads"):
        cpu.set_kernel_threads(1)


def in_worker():
    """True inside a batch-parallel worker (which must not split its work again)."""
    return getattr(_local, "worker", False)


def shares(N, count):
    """Split range(N) into ``count`` contiguous slices of near-equal size."""
    count = max(1, min(int(count), N))
    bounds = [N * k // count for k in range(count + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(count)]


# The batch-parallel calls themselves (map_shares, matmul, elementwise) live in _shares,
# over the state above; they are runtime's public names.
from ._shares import _SMALL_ELEMENTWISE, _team_takes  # noqa: E402,F401
from ._shares import batched_matmul, elementwise, map_shares, matmul  # noqa: E402,F401
