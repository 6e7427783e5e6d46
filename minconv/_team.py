"""The team that takes the cores' shares of a batch-parallel call (see :mod:`.runtime`).

Where the kernels are built with OpenMP, the shares run on the kernels' own OpenMP
team (:mod:`._kernels.cpu_team`): one set of threads for the whole process, so its
idle threads can spin for a moment between calls without taking a core from a
second pool. Each share multiplies with one BLAS thread: the caller holds OpenBLAS
to one thread for the length of the call, through the library's own functions
(threadpoolctl's limit, for any other BLAS).
"""
import ctypes

_RUN_SHARES = []  # [cpu_team.run_shares or None], found on first use: after runtime set
                  # the OpenMP wait policy that loading the kernels fixes


def team_runner():
    """``cpu_team.run_shares`` where the kernels are built with OpenMP, else None."""
    if not _RUN_SHARES:
        try:
            from ._kernels.cpu_team import run_shares, team_built
            _RUN_SHARES.append(run_shares if team_built() else None)
        except ImportError:  # kernels not built: the Python thread pool serves
            _RUN_SHARES.append(None)
    return _RUN_SHARES[0]


# How OpenBLAS builds name their symbols: SciPy's and NumPy's wheels add a prefix and,
# with 64-bit integers, a suffix; distributions' builds neither.
_NAMINGS = (("scipy_", "64_"), ("", "64_"), ("scipy_", ""), ("", ""))


def _symbol(library, names):
    """The first of ``names`` that ``library`` (a ctypes CDLL) exports, or None."""
    for name in names:
        try:
            return getattr(library, name)
        except AttributeError:
            continue
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
        if info.get("internal_api") != "openblas":
            continue
        try:
            library = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for prefix, suffix in _NAMINGS:
            sgemm = _symbol(library, [f"{prefix}cblas_sgemm{suffix}"])
            dgemm = _symbol(library, [f"{prefix}cblas_dgemm{suffix}"])
            config = _symbol(library, [f"{prefix}openblas_get_config{suffix}"])
            if None in (sgemm, dgemm, config):
                continue
            config.restype = ctypes.c_char_p
            address = [ctypes.cast(f, ctypes.c_void_p).value for f in (sgemm, dgemm)]
            cpu_team.bind_gemm(address[0], address[1], b"USE64BITINT" in (config() or b""))
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
            pair = _count_functions(info) if info.get("internal_api") == "openblas" else None
            if pair is None:
                self._pairs = None
                return
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

    def counts(self):
        return [get() for get, _ in self._pairs]


def _count_functions(info):
    """(openblas_get_num_threads, openblas_set_num_threads) of one library, or None."""
    try:
        library = ctypes.CDLL(info["filepath"])
    except OSError:
        return None
    for prefix, suffix in _NAMINGS:
        get = _symbol(library, [f"{prefix}openblas_get_num_threads{suffix}"])
        set_count = _symbol(library, [f"{prefix}openblas_set_num_threads{suffix}"])
        if get is not None and set_count is not None:
            get.argtypes, get.restype = [], ctypes.c_int
            set_count.argtypes, set_count.restype = [ctypes.c_int], None
            return get, set_count
    return None
