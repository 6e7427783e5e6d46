"""The team that takes the cores' shares of a batch-parallel call (see :mod:`.runtime`).

Where the kernels are built with OpenMP, the shares run on the kernels' own OpenMP
team (:mod:`._kernels.cpu_team`): one set of threads for the whole process, so its
idle threads can spin for a moment between calls without taking a core from a
second pool. Each share multiplies with one BLAS thread: the caller holds OpenBLAS
to one thread for the length of the call, through the library's own functions
(threadpoolctl's limit, for any other BLAS).
"""
import ctypes
import functools


@functools.cache
def team_runner():
    """``cpu_team.run_shares`` where the kernels are built with OpenMP, else None. Found
    on first use: after runtime has set the OpenMP wait policy that loading them fixes."""
    try:
        from ._kernels.cpu_team import run_shares, team_built
    except ImportError:  # kernels not built: the Python thread pool serves
        return None
    return run_shares if team_built() else None


@functools.cache
def team_module():
    """The compiled ``cpu_team`` module (its products' epilogue serves without OpenMP too),
    or None where the kernels are not built."""
    try:
        from ._kernels import cpu_team
    except ImportError:
        return None
    return cpu_team


# How OpenBLAS builds name their symbols: SciPy's and NumPy's wheels add a prefix and,
# with 64-bit integers, a suffix; distributions' builds neither.
_NAMINGS = (("scipy_", "64_"), ("", "64_"), ("scipy_", ""), ("", ""))


def _openblas_functions(info, stems):
    """The functions ``stems`` of one BLAS library (an entry of threadpoolctl's
    ``info()``), under the first naming that has them all; None for a library that is
    not OpenBLAS or lacks one of them."""
    if info.get("internal_api") != "openblas":
        return None
    try:
        library = ctypes.CDLL(info["filepath"])
    except OSError:
        return None
    for prefix, suffix in _NAMINGS:
        found = [getattr(library, f"{prefix}{stem}{suffix}", None) for stem in stems]
        if None not in found:
            return found
    return None


def bind_team_gemm(blas_libraries):
    """Hand the team's product (:func:`cpu_team.matmul`) the cblas_sgemm and cblas_dgemm
    of the first OpenBLAS loaded, with the width of its integers read from its build
    configuration. True when bound; False leaves products to :func:`runtime.matmul`'s
    shares of NumPy calls."""
    try:
        from ._kernels import cpu_team
    except ImportError:
        return False
    for info in blas_libraries:
        found = _openblas_functions(info, ("cblas_sgemm", "cblas_dgemm", "openblas_get_config"))
        if found is None:
            continue
        sgemm, dgemm, config = found
        config.restype = ctypes.c_char_p
        cpu_team.bind_gemm(ctypes.cast(sgemm, ctypes.c_void_p).value,
                           ctypes.cast(dgemm, ctypes.c_void_p).value,
                           b"USE64BITINT" in (config() or b""))
        return bool(cpu_team.gemm_bound())
    return False


class BlasThreads:
    """OpenBLAS's thread count, read and set through the library itself (two C calls,
    where threadpoolctl takes tens of microseconds). The count is the library's own,
    shared by every thread (``openblas_set_num_threads_local`` too sets it for all
    in OpenBLAS's pthreads builds): a team region holds it at one and puts it back.
    ``available`` is False where a BLAS other than OpenBLAS is loaded."""

    def __init__(self, blas_libraries):
        self._pairs = []
        for info in blas_libraries:
            pair = _openblas_functions(info, ("openblas_get_num_threads",
                                              "openblas_set_num_threads"))
            if pair is None:
                self._pairs = None
                return
            get, set_count = pair
            get.argtypes, get.restype = [], ctypes.c_int
            set_count.argtypes, set_count.restype = [ctypes.c_int], None
            self._pairs.append(pair)

    @property
    def available(self):
        return bool(self._pairs)

    def hold_to_one(self):
        """Set every library's count to one; returns the counts to :meth:`restore`."""
        counts = [get() for get, _ in self._pairs]
        for _, set_count in self._pairs:
            set_count(1)
        return counts

    def restore(self, counts):
        for (_, set_count), count in zip(self._pairs, counts):
            set_count(count)
