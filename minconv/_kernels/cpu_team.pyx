# cython: language_level=3, boundscheck=False, wraparound=False
"""The cores' shares of a batch-parallel call, run on the kernels' own OpenMP team.

    run_shares(call, count)   # call(0), ..., call(count - 1) at once, one per thread

The Cython kernels already run on an OpenMP team. Running the batch-parallel
shares (Python callables: each unfolds, multiplies and folds its images) on the
same team, instead of on a second pool of Python threads, means one set of
threads for the whole process: while it waits between calls it can spin
briefly (``runtime``'s wait policy) without taking a core from another pool.
Waking a sleeping thread costs 50-130 us on this kind of virtual machine, and a
pass of densenet121 at batch 1 makes several hundred such calls.

Each team thread calls Python, so it needs a Python thread state. The first time
a thread takes a share it makes one and keeps it for the thread's life (a state
made per call would lose the thread's ``threading.local`` values, such as its
scratch buffers, every time). Without OpenMP the shares run one after another.
"""
from cython.parallel cimport parallel

from minconv._kernels._parallel cimport aligned_share, piece_end
from libc.stdint cimport int64_t, uintptr_t

cdef extern from "Python.h":
    ctypedef int PyGILState_STATE
    PyGILState_STATE PyGILState_Ensure() nogil
    void *PyEval_SaveThread() nogil

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define MINCONV_THREAD_NUM() omp_get_thread_num()
    #define MINCONV_TEAM_BUILT 1
    #else
    #define MINCONV_THREAD_NUM() 0
    #define MINCONV_TEAM_BUILT 0
    #endif
    /* whether this thread holds a reference to its Python thread state of its own */
    static __thread int minconv_state_kept = 0;
    """
    int thread_num "MINCONV_THREAD_NUM"() noexcept nogil
    int TEAM_BUILT "MINCONV_TEAM_BUILT"
    int state_kept "minconv_state_kept"


cdef void _keep_thread_state() noexcept nogil:
    """Hold one more reference to this thread's Python thread state, once per thread, so
    that it outlives the team's region (Cython makes one on entering a parallel block
    that takes the GIL, and would free it on leaving); the GIL is let go at once."""
    global state_kept
    if not state_kept:
        PyGILState_Ensure()
        PyEval_SaveThread()
        state_kept = 1


def team_built():
    """True when this module was compiled with OpenMP (else the shares run in turn)."""
    return bool(TEAM_BUILT)


def run_shares(call, int count):
    """``call(t)`` for t in range(count), thread t of a team of ``count`` taking share t.

    ``call`` must catch its own exceptions (an exception cannot cross the team's
    barrier); the caller's thread is thread 0.
    """
    cdef int t
    if count < 1:
        raise ValueError(f"run_shares: expected a positive count, got {count}")
    if not TEAM_BUILT or count == 1:
        for t in range(count):
            call(t)
        return
    with nogil, parallel(num_threads=count):
        t = thread_num()
        _keep_thread_state()
        with gil:
            call(t)


# ---------------------------------------------------------------- products on the team

# cblas_?gemm of the BLAS NumPy uses, bound by bind_gemm: with 64-bit integers
# (OpenBLAS built for ILP64, as NumPy's own is) or 32-bit ones.
ctypedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t, float, const float *,
                           int64_t, const float *, int64_t, float, float *, int64_t) noexcept nogil
ctypedef void (*dgemm64_t)(int, int, int, int64_t, int64_t, int64_t, double, const double *,
                           int64_t, const double *, int64_t, double, double *, int64_t) noexcept nogil
ctypedef void (*sgemm32_t)(int, int, int, int, int, int, float, const float *,
                           int, const float *, int, float, float *, int) noexcept nogil
ctypedef void (*dgemm32_t)(int, int, int, int, int, int, double, const double *,
                           int, const double *, int, double, double *, int) noexcept nogil

cdef void *_sgemm = NULL
cdef void *_dgemm = NULL
cdef bint _ilp64 = False
cdef enum:
    ROW_MAJOR = 101
    NO_TRANS = 111


def bind_gemm(uintptr_t sgemm, uintptr_t dgemm, bint ilp64):
    """Give the team BLAS's cblas_sgemm and cblas_dgemm (addresses; 64-bit integer
    arguments when ``ilp64``)."""
    global _sgemm, _dgemm, _ilp64
    _sgemm, _dgemm = <void *>sgemm, <void *>dgemm
    _ilp64 = ilp64


def gemm_bound():
    return TEAM_BUILT and _sgemm != NULL and _dgemm != NULL


cdef void _gemm(bint single, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const char *a,
                Py_ssize_t lda, const char *b, Py_ssize_t ldb, char *c,
                Py_ssize_t ldc) noexcept nogil:
    """c (M, N) = a (M, K) @ b (K, N), row-major with leading dimensions in elements."""
    if single and _ilp64:
        (<sgemm64_t>_sgemm)(ROW_MAJOR, NO_TRANS, NO_TRANS, M, N, K, 1.0, <const float *>a, lda,
                            <const float *>b, ldb, 0.0, <float *>c, ldc)
    elif single:
        (<sgemm32_t>_sgemm)(ROW_MAJOR, NO_TRANS, NO_TRANS, <int>M, <int>N, <int>K, 1.0,
                            <const float *>a, <int>lda, <const float *>b, <int>ldb, 0.0,
                            <float *>c, <int>ldc)
    elif _ilp64:
        (<dgemm64_t>_dgemm)(ROW_MAJOR, NO_TRANS, NO_TRANS, M, N, K, 1.0, <const double *>a, lda,
                            <const double *>b, ldb, 0.0, <double *>c, ldc)
    else:
        (<dgemm32_t>_dgemm)(ROW_MAJOR, NO_TRANS, NO_TRANS, <int>M, <int>N, <int>K, 1.0,
                            <const double *>a, <int>lda, <const double *>b, <int>ldb, 0.0,
                            <double *>c, <int>ldc)


cdef extern from *:
    """
    /* c[r, :cols] += bias[r] (where a bias is given), then with relu c = c < 0 ? 0 : c (a
       ReLU that keeps NaN), for r < rows; c row-major with leading dimension ldc. Plain C
       loops, which compilers vectorise (Cython writes a ternary as if/else) */
    #define MINCONV_FINISH_BLOCK(T, S)                                                     \
    static void minconv_finish_block_##S(T *c, Py_ssize_t ldc, Py_ssize_t rows,           \
                                         Py_ssize_t cols, const T *bias, int relu) {      \
        for (Py_ssize_t r = 0; r < rows; r++) {                                           \
            T *row = c + r * ldc;                                                         \
            const T b = bias ? bias[r] : (T)0;                                            \
            if (relu)                                                                     \
                for (Py_ssize_t j = 0; j < cols; j++) {                                   \
                    const T v = row[j] + b;                                               \
                    row[j] = v < 0 ? (T)0 : v;                                            \
                }                                                                         \
            else                                                                          \
                for (Py_ssize_t j = 0; j < cols; j++)                                     \
                    row[j] += b;                                                          \
        }                                                                                 \
    }
    MINCONV_FINISH_BLOCK(float, f)
    MINCONV_FINISH_BLOCK(double, d)
    """
    void _finish_block_f "minconv_finish_block_f"(float *c, Py_ssize_t ldc, Py_ssize_t rows,
                                                  Py_ssize_t cols, const float *bias,
                                                  int relu) nogil
    void _finish_block_d "minconv_finish_block_d"(double *c, Py_ssize_t ldc, Py_ssize_t rows,
                                                  Py_ssize_t cols, const double *bias,
                                                  int relu) nogil


cdef void _finish_rows(bint single, char *c, Py_ssize_t ldc, Py_ssize_t rows,
                       Py_ssize_t cols, const char *bias, bint relu) noexcept nogil:
    """The bias and the ReLU on a block of float32 (``single``) or float64 rows."""
    if single:
        _finish_block_f(<float *>c, ldc, rows, cols, <const float *>bias, relu)
    else:
        _finish_block_d(<double *>c, ldc, rows, cols, <const double *>bias, relu)


def matmul(a, b, out, int threads, Py_ssize_t align, bias=None, bint relu=False):
    """out = a @ b (+ bias[:, None]) (then max(., 0) with ``relu``), each of ``threads``
    team threads computing a block of rows of out with one BLAS thread (or, where b has
    more columns than a has rows, a block of its columns, so that no thread reads all of
    b), and adding the bias and applying the ReLU to its block while the block is still
    in its cache. Blocks start at multiples of ``align``.

    a (M, K), b (K, N), out (M, N): float32 or float64 arrays whose rows are
    contiguous (unit stride along the last axis); bias (M,) contiguous, of their dtype,
    or None. The caller checks them, and holds BLAS to one thread meanwhile.
    """
    cdef bint single = a.dtype.itemsize == 4
    cdef Py_ssize_t size = a.dtype.itemsize
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef Py_ssize_t lda = a.strides[0] // size, ldb = b.strides[0] // size
    cdef Py_ssize_t ldc = out.strides[0] // size
    cdef const char *pa = <const char *><uintptr_t>a.ctypes.data
    cdef const char *pb = <const char *><uintptr_t>b.ctypes.data
    cdef char *pc = <char *><uintptr_t>out.ctypes.data
    cdef const char *pbias = NULL
    cdef const char *block_bias
    cdef bint by_columns = N > M
    cdef Py_ssize_t total = N if by_columns else M
    cdef Py_ssize_t per = aligned_share(total, threads, align)
    cdef Py_ssize_t lo, hi
    cdef int t
    if bias is not None:
        pbias = <const char *><uintptr_t>bias.ctypes.data
    with nogil, parallel(num_threads=threads):
        t = thread_num()
        lo = t * per
        hi = min(total, lo + per)
        if hi > lo and by_columns:
            _gemm(single, M, hi - lo, K, pa, lda, pb + lo * size, ldb, pc + lo * size, ldc)
            if pbias != NULL or relu:
                _finish_rows(single, pc + lo * size, ldc, M, hi - lo, pbias, relu)
        elif hi > lo:
            _gemm(single, hi - lo, N, K, pa + lo * lda * size, lda, pb, ldb,
                  pc + lo * ldc * size, ldc)
            if pbias != NULL or relu:
                block_bias = pbias
                if pbias != NULL:
                    block_bias = pbias + lo * size
                _finish_rows(single, pc + lo * ldc * size, ldc, hi - lo, N, block_bias, relu)
    return out


def batched_matmul(a, b, out, int threads, Py_ssize_t align, bias=None, bint relu=False):
    """out[n] = a @ b[n] (+ bias[:, None]) (then max(., 0) with ``relu``) for every n,
    the batch's columns shared evenly among ``threads`` team threads: thread t takes
    columns [lo, hi) of the N*P columns of the images laid side by side (boundaries at
    multiples of ``align``), one BLAS call (one thread) per image its range touches, and
    adds the bias and applies the ReLU to each block while it is still in its cache.
    A 1x1 convolution of a whole batch in one call: no Python per image, and no share
    left idle at a batch of one.

    a (M, K), b (N, K, P), out (N, M, P): float32 or float64, rows contiguous (unit
    stride along the last axis); bias (M,) contiguous, of their dtype, or None. The
    caller checks them, and holds BLAS to one thread meanwhile.
    """
    cdef bint single = a.dtype.itemsize == 4
    cdef Py_ssize_t size = a.dtype.itemsize
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[0], P = b.shape[2]
    cdef Py_ssize_t lda = a.strides[0] // size
    cdef Py_ssize_t b_image = b.strides[0] // size, ldb = b.strides[1] // size
    cdef Py_ssize_t out_image = out.strides[0] // size, ldc = out.strides[1] // size
    cdef const char *pa = <const char *><uintptr_t>a.ctypes.data
    cdef const char *pb = <const char *><uintptr_t>b.ctypes.data
    cdef char *pc = <char *><uintptr_t>out.ctypes.data
    cdef const char *pbias = NULL
    cdef Py_ssize_t total = N * P
    cdef Py_ssize_t per = aligned_share(total, threads, align)
    cdef Py_ssize_t lo, hi, at, n, c0, c1
    cdef char *block
    cdef int t
    if bias is not None:
        pbias = <const char *><uintptr_t>bias.ctypes.data
    with nogil, parallel(num_threads=threads):
        t = thread_num()
        lo = t * per
        hi = min(total, lo + per)
        at = lo
        while at < hi:
            n = at // P
            c0 = at - n * P
            c1 = c0 + piece_end(at, hi, P) - at
            block = pc + (n * out_image + c0) * size
            _gemm(single, M, c1 - c0, K, pa, lda, pb + (n * b_image + c0) * size, ldb,
                  block, ldc)
            if pbias != NULL or relu:
                _finish_rows(single, block, ldc, M, c1 - c0, pbias, relu)
            at = at + c1 - c0
    return out


def finish(out, bias=None, bint relu=False):
    """out[..., r, :] += bias[r] (where given), then max(out, 0) with ``relu``, in place, on
    this thread: the products' epilogue for a product too small to share.

    out (M, P) or (N, M, P) float32 or float64 with contiguous rows; bias (M,) contiguous,
    of its dtype, or None. The caller checks them.
    """
    cdef bint single = out.dtype.itemsize == 4
    cdef Py_ssize_t size = out.dtype.itemsize
    cdef Py_ssize_t images = out.shape[0] if out.ndim == 3 else 1
    cdef Py_ssize_t M = out.shape[out.ndim - 2], P = out.shape[out.ndim - 1]
    cdef Py_ssize_t ldc = out.strides[out.ndim - 2] // size
    cdef Py_ssize_t image = out.strides[0] // size if out.ndim == 3 else 0
    cdef char *pc = <char *><uintptr_t>out.ctypes.data
    cdef const char *pbias = NULL
    cdef Py_ssize_t n
    if bias is not None:
        pbias = <const char *><uintptr_t>bias.ctypes.data
    with nogil:
        for n in range(images):
            _finish_rows(single, pc + n * image * size, ldc, M, P, pbias, relu)
    return out
