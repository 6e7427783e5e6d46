# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Max pooling with switches and unpooling in Cython: twins of the reference
(``reference``); average pooling is :mod:`minconv._kernels.cpu_avgpool`.

    x        : (N, C, H, W)
    y        : (N, C, Ho, Wo), the largest value of each window
    switches : (N, C, Ho, Wo) int32, flat index ``h*W + w`` of the winner in
               its (H, W) plane (half the memory of int64: a net keeps every
               pooling layer's switches until its backward pass); ties go to
               the first element in row-major window order (strict ``>``);
               padding never wins. A NaN always wins, as in PyTorch: a window
               holding NaN gives NaN, its switch at the last NaN.

Every (n, c) plane is independent, so all passes run in parallel over the
N*C planes and each thread writes only its own planes. In float32 the forward pass
runs a vector of output columns at a time (``_maxpool.h``, AVX-512 or AVX2: the
instruction set of the tiles, :func:`minconv._kernels.cpu_tiles.isa`, and so capped
with them); the loop below is the scalar path, and float64's.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

from minconv._kernels._parallel cimport max_threads, threads_for

import numpy as np

from . import cpu_tiles
from ..geometry import pool_output_size

cdef extern from "_maxpool.h" nogil:
    void mc_window_rows(Py_ssize_t ho, int kh, int sh, int ph, Py_ssize_t H, Py_ssize_t *hs,
                        Py_ssize_t *he)
    int mc_maxpool_level()
    int mc_maxpool_plane(int level, const float *x, float *y, int32_t *switches,
                         Py_ssize_t H, Py_ssize_t W, int kh, int kw, int sh, int sw, int ph,
                         int pw, Py_ssize_t Ho, Py_ssize_t Wo)

cdef extern from "_maxpool_values.h" nogil:
    Py_ssize_t mc_values_row_span(Py_ssize_t W, int kw, int sw, int pw, Py_ssize_t Wo)
    void mc_maxpool_values_plane(int level, const float *x, Py_ssize_t row0, float *y,
                                 float *m, Py_ssize_t H, Py_ssize_t W, int kh, int kw, int sh,
                                 int sw, int ph, int pw, Py_ssize_t ho_begin,
                                 Py_ssize_t ho_end, Py_ssize_t Wo)
    int mc_maxpool_values_same(int level, const float *x, float *y, float *v, Py_ssize_t H,
                               Py_ssize_t W, int kh, int kw)
    void mc_maxpool_values_plane_d(const double *x, Py_ssize_t row0, double *y, double *m,
                                   Py_ssize_t H, Py_ssize_t W, int kh, int kw, int sh, int sw,
                                   int ph, int pw, Py_ssize_t ho_begin, Py_ssize_t ho_end,
                                   Py_ssize_t Wo)

cdef int _SIMD_LEVEL = mc_maxpool_level()


cdef extern from *:
    """
    /* one C expression, which compilers turn into a vector max (Cython writes a
       Python-level ternary as if/else, which blocks vectorisation) */
    #define MINCONV_SELECT(cond, a, b) ((cond) ? (a) : (b))
    """
    float _select_f "MINCONV_SELECT"(bint cond, float a, float b) nogil
    double _select_d "MINCONV_SELECT"(bint cond, double a, double b) nogil


ctypedef fused switch_t:       # the switches unpooling takes: ours, or PyTorch's int64
    int32_t
    int64_t


cdef enum:
    BLOCK = 256     # outputs of one row handled at a time; their switches live on the stack


cdef inline void _tap_row(const floating *xrow, floating *best, int *where,
                          Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t sw, Py_ssize_t off,
                          int base) noexcept nogil:
    """One tap of a row of windows: best[o] = max(best[o], xrow[o*sw + off]) for o in [lo, hi).

    The switch is picked with a bit mask rather than a branch, ``where`` is int32
    (as wide as float32) and the usual strides get a constant: that lets the
    compiler vectorise the float32 loop with the baseline instruction set.
    """
    cdef Py_ssize_t o
    cdef floating v, m
    cdef int mask
    cdef bint win
    if sw == 2:
        for o in range(lo, hi):
            v = xrow[2 * o + off]
            m = best[o]
            win = (v > m) | (v != v)               # greater, or NaN (PyTorch's rule)
            mask = -<int> win                      # all ones where the tap wins
            best[o] = _select_f(win, v, m) if floating is float else _select_d(win, v, m)
            where[o] = ((base + 2 * <int> o) & mask) | (where[o] & ~mask)
    elif sw == 1:
        for o in range(lo, hi):
            v = xrow[o + off]
            m = best[o]
            win = (v > m) | (v != v)
            mask = -<int> win
            best[o] = _select_f(win, v, m) if floating is float else _select_d(win, v, m)
            where[o] = ((base + <int> o) & mask) | (where[o] & ~mask)
    else:
        for o in range(lo, hi):
            v = xrow[sw * o + off]
            m = best[o]
            win = (v > m) | (v != v)
            mask = -<int> win
            best[o] = _select_f(win, v, m) if floating is float else _select_d(win, v, m)
            where[o] = ((base + <int> (sw * o)) & mask) | (where[o] & ~mask)


cdef void _pool_plane(const floating *x, floating *y, int32_t *switches,
                      Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef int where[BLOCK]
    cdef Py_ssize_t ho, nb, wb, we, o, h, hs, he, j, off, lo, hi, w0
    cdef floating *best
    for ho in range(Ho):
        mc_window_rows(ho, kh, sh, ph, H, &hs, &he)
        for nb in range((Wo + BLOCK - 1) // BLOCK):
            wb = nb * BLOCK
            we = wb + BLOCK if wb + BLOCK < Wo else Wo
            best = y + ho * Wo + wb
            for o in range(we - wb):
                w0 = (wb + o) * sw - pw
                best[o] = -INFINITY
                where[o] = hs * W + (w0 if w0 > 0 else 0)  # the window's first pixel
            # rows, then columns within a row: row-major window order, so the
            # strict > keeps the first of equal values
            for h in range(hs, he):
                for j in range(kw):
                    off = j - pw + wb * sw        # w = o*sw + off for block-local o
                    lo = 0
                    if off < 0:
                        lo = (-off + sw - 1) // sw
                    hi = (W - 1 - off) // sw + 1 if W - 1 - off >= 0 else 0
                    if hi > we - wb:
                        hi = we - wb
                    _tap_row(x + h * W, best, where, lo, hi, sw, off, <int> (h * W + off))
            for o in range(we - wb):
                switches[ho * Wo + wb + o] = where[o]


cdef void _pool_forward(const floating[:, ::1] x, floating[:, ::1] y,
                        int32_t[:, ::1] switches, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Ho,
                        Py_ssize_t Wo, int level) noexcept:
    cdef Py_ssize_t p
    for p in prange(x.shape[0], nogil=True, schedule="guided",
                    num_threads=threads_for(x.shape[0] * Ho * Wo * kh * kw)):
        if floating is float:
            if mc_maxpool_plane(level, &x[p, 0], &y[p, 0], &switches[p, 0], H, W, kh, kw,
                                sh, sw, ph, pw, Ho, Wo):
                continue
        _pool_plane(&x[p, 0], &y[p, 0], &switches[p, 0], H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)


cdef Py_ssize_t _unpool(const floating[:, ::1] dy, const switch_t[:, ::1] switches,
                        floating[:, ::1] dx) noexcept:
    """Scatter-add dy at the switches; returns how many switches were out of range."""
    cdef Py_ssize_t planes = dy.shape[0], L = dy.shape[1], HW = dx.shape[1]
    cdef Py_ssize_t p, o, bad = 0
    cdef switch_t s
    for p in prange(planes, nogil=True, schedule="guided",
                    num_threads=threads_for(planes * HW)):
        memset(&dx[p, 0], 0, HW * sizeof(floating))
        for o in range(L):
            s = switches[p, o]
            if s < 0 or s >= HW:
                bad += 1
            else:
                dx[p, s] += dy[p, o]
    return bad


def simd_level():
    """The vector width the float32 forward pass runs with: 2 (AVX-512), 1 (AVX2) or 0
    (the scalar loop), the lower of this CPU's and the tiles' instruction set."""
    return min(_SIMD_LEVEL, cpu_tiles.ISA_NAMES.index(cpu_tiles.isa()))


def _pool_operands(op, x, kh, kw, stride, padding, ceil_mode):
    """x as a contiguous float32/float64 (N, C, H, W) array, its shape, the window
    (kh, kw, sh, sw, ph, pw) and the output size (Ho, Wo); a ValueError naming ``op``
    where there is no output."""
    x = np.ascontiguousarray(x)
    if x.ndim != 4 or (x.dtype != np.float32 and x.dtype != np.float64):
        raise ValueError(f"{op}: expected a float32/float64 (N, C, H, W) input, "
                         f"got {x.dtype} {x.shape}")
    N, C, H, W = x.shape
    kh, kw = int(kh), int(kw)
    (sh, sw), (ph, pw) = stride, padding
    no_output = (f"{op}: no output for input {x.shape} with kernel ({kh}, {kw}), "
                 f"stride {stride}, padding {padding}")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(no_output)
    Ho = pool_output_size(H, kh, sh, ph, ceil_mode)
    Wo = pool_output_size(W, kw, sw, pw, ceil_mode)
    if Ho < 1 or Wo < 1:
        raise ValueError(no_output)
    return x, (N, C, H, W), (kh, kw, sh, sw, ph, pw), (Ho, Wo)


def maxpool_forward(x, kh, kw, stride, padding, ceil_mode):
    """Max pooling that records its switches.

    x : (N, C, H, W) float32 or float64  ->  (y, switches), both (N, C, Ho, Wo),
    switches int32
    """
    x, (N, C, H, W), (kh, kw, sh, sw, ph, pw), (Ho, Wo) = _pool_operands(
        "maxpool_forward", x, kh, kw, stride, padding, ceil_mode)
    if H * W >= 2 ** 31:
        raise ValueError(f"maxpool_forward: planes of {H}x{W} are too large "
                         "(the switches are int32)")
    y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    switches = np.empty((N, C, Ho, Wo), dtype=np.int32)
    x2 = x.reshape(N * C, H * W)                 # one row per (n, c) plane
    y2 = y.reshape(N * C, Ho * Wo)
    s2 = switches.reshape(N * C, Ho * Wo)
    if x.dtype == np.float32:
        _pool_forward[float](x2, y2, s2, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, simd_level())
    else:
        _pool_forward[double](x2, y2, s2, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, 0)
    return y, switches


cdef void _values_forward(const floating[:, ::1] x, floating[:, ::1] y, floating[:, ::1] rows,
                          Py_ssize_t H, Py_ssize_t W, int kh, int kw, int sh, int sw, int ph,
                          int pw, Py_ssize_t Ho, Py_ssize_t Wo, int level) noexcept:
    cdef Py_ssize_t p
    cdef int t
    # planes narrower than a vector pooled at stride 1 with "same" padding: as flat arrays
    cdef bint same = (sh == 1 and sw == 1 and 2 * ph == kh - 1 and 2 * pw == kw - 1
                      and W < 8)
    for p in prange(x.shape[0], nogil=True, schedule="static",
                    num_threads=min(rows.shape[0], threads_for(x.shape[0] * H * W))):
        t = threadid()  # each thread's own padded row (or, at stride 1, plane)
        if floating is float:
            if not (same and mc_maxpool_values_same(level, &x[p, 0], &y[p, 0], &rows[t, 0], H,
                                                    W, kh, kw)):
                mc_maxpool_values_plane(level, &x[p, 0], 0, &y[p, 0], &rows[t, 0], H, W, kh,
                                        kw, sh, sw, ph, pw, 0, Ho, Wo)
        else:
            mc_maxpool_values_plane_d(&x[p, 0], 0, &y[p, 0], &rows[t, 0], H, W, kh, kw, sh, sw,
                                      ph, pw, 0, Ho, Wo)


def maxpool_values(x, kh, kw, stride, padding, ceil_mode):
    """Max pooling without switches (inference): the y of :func:`maxpool_forward`, from a
    pass over each window's rows and one along the row they leave (``_maxpool_values.h``).

    x : (N, C, H, W) float32 or float64  ->  y (N, C, Ho, Wo)
    """
    x, (N, C, H, W), (kh, kw, sh, sw, ph, pw), (Ho, Wo) = _pool_operands(
        "maxpool_values", x, kh, kw, stride, padding, ceil_mode)
    y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    if y.size == 0:
        return y
    # each thread's padded row on cache lines of its own (a line two threads write to
    # would pass between their cores on every output row)
    span = mc_values_row_span(W, kw, sw, pw, Wo)
    if sh == 1 and sw == 1:  # room for a whole plane (the "same" pools' flat passes)
        span = max(span, H * W)
    rows = np.empty((max_threads(), (span + 15) // 16 * 16 + 16), dtype=x.dtype)
    x2, y2 = x.reshape(N * C, H * W), y.reshape(N * C, Ho * Wo)
    if x.dtype == np.float32:
        _values_forward[float](x2, y2, rows, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, simd_level())
    else:
        _values_forward[double](x2, y2, rows, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, 0)
    return y


def maxpool_backward(dy, switches, x_shape):
    """Put each value back at its switch (unpooling); also max pooling's backward.

    dy, switches : (N, C, Ho, Wo)  ->  dx : x_shape = (N, C, H, W), the dtype of dy
    """
    dy = np.ascontiguousarray(dy)
    if dy.dtype != np.float32 and dy.dtype != np.float64:
        raise ValueError(f"maxpool_backward: dy must be float32 or float64, got {dy.dtype}")
    switches = np.asarray(switches)
    if switches.dtype != np.int32:        # int32 as they come; other integers widened
        switches = switches.astype(np.int64)
    switches = np.ascontiguousarray(switches)
    N, C, H, W = (int(v) for v in x_shape)
    if dy.ndim != 4 or switches.shape != dy.shape or dy.shape[:2] != (N, C):
        raise ValueError(f"maxpool_backward: dy {dy.shape} and switches {switches.shape} "
                         f"do not match x_shape {tuple(x_shape)}")
    dx = np.empty((N, C, H, W), dtype=dy.dtype)  # each plane is zeroed by its thread
    dy2 = dy.reshape(N * C, dy.shape[2] * dy.shape[3])
    s2 = switches.reshape(N * C, dy.shape[2] * dy.shape[3])
    dx2 = dx.reshape(N * C, H * W)
    if dy.dtype == np.float32 and s2.dtype == np.int32:
        bad = _unpool[float, int32_t](dy2, s2, dx2)
    elif dy.dtype == np.float32:
        bad = _unpool[float, int64_t](dy2, s2, dx2)
    elif s2.dtype == np.int32:
        bad = _unpool[double, int32_t](dy2, s2, dx2)
    else:
        bad = _unpool[double, int64_t](dy2, s2, dx2)
    if bad:
        raise ValueError(f"maxpool_backward: switches must lie in [0, {H * W}) for planes of "
                         f"{H}x{W} (x_shape {tuple(x_shape)}); {bad} do not")
    return dx
