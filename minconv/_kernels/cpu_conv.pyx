# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""im2col and col2im in Cython: the twins of :mod:`minconv._kernels.reference`.

    x    : (N, C, H, W)
    cols : (C*kh*kw, N*Ho*Wo), row ``(c*kh + i)*kw + j`` holds tap (i, j) of
           channel c, column ``(n*Ho + ho)*Wo + wo`` is one output position.

im2row and row2im are the channels-last twins, for small maps:

    rows : (N*Ho*Wo, kh*kw*C), row ``(n*Ho + ho)*Wo + wo`` is one output
           position, column ``(i*kw + j)*C + c`` holds tap (i, j) of channel c.

Tap (i, j) of output (ho, wo) reads input pixel

    h = ho*sh - ph + i*dh,    w = wo*sw - pw + j*dw

and reads zero where (h, w) falls in the padding. im2col runs in parallel
over the rows of ``cols`` (each thread writes whole rows), col2im over the
(n, c) planes of ``x`` (each thread sums into its own planes), so no two
threads ever write the same element. im2row and row2im work on a zero-padded
channels-last copy of the image and run in parallel over the images.

im2row_matmul and im2row_t_matmul are the two products a convolution takes of
those rows, ``rows @ w`` and ``rows.T @ dy``. In float32 on CPUs with AVX-512
or AVX2+FMA, for weights that fit in a core's cache, they never form the rows:
the C tiles of ``_im2row_matmul.h`` (AVX-512) and ``_im2row_matmul_avx2.h``
read the taps from the padded image as they multiply; :func:`isa` names the
set in use and :func:`set_isa_cap` or ``MINCONV_ISA`` can hold it lower. conv2d_direct and its weight gradient
do the same channels first, for inputs of few channels. All four run on the
calling thread alone.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from minconv._kernels._parallel cimport max_threads, set_max_threads, threads_for
from minconv._kernels._rows cimport add_row_d, add_row_f, copy_row_d, copy_row_f

cdef extern from "_im2row_matmul.h" nogil:
    int mc_fused_available()
    void mc_im2row_matmul(const float *xt, Py_ssize_t N, Py_ssize_t Hp, Py_ssize_t Wp,
                          Py_ssize_t C, int kh, int kw, int sh, int sw, int dh, int dw,
                          Py_ssize_t Ho, Py_ssize_t Wo, const float *w, Py_ssize_t F,
                          const float *bias, float *y)
    int mc_im2row_t_matmul(const float *xt, Py_ssize_t N, Py_ssize_t Hp, Py_ssize_t Wp,
                           Py_ssize_t C, int kh, int kw, int sh, int sw, int dh, int dw,
                           Py_ssize_t Ho, Py_ssize_t Wo, const float *dy, Py_ssize_t F,
                           float *dwt)
    void mc_conv2d_direct(const float *xp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t Hp,
                          Py_ssize_t Wp, int kh, int kw, int sh, int dh, int dw, Py_ssize_t Ho,
                          Py_ssize_t Wo, const float *wt, Py_ssize_t F, const float *bias,
                          float *y)
    void mc_conv2d_direct_wgrad(const float *xp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t Hp,
                                Py_ssize_t Wp, int kh, int kw, int sh, int dh, int dw,
                                Py_ssize_t Ho, Py_ssize_t Wo, const float *dy, Py_ssize_t F,
                                float *dwt)

cdef extern from "_im2row_matmul_avx2.h" nogil:
    int mc_avx2_available()
    int mc_avx2_im2row_matmul(const float *xt, Py_ssize_t N, Py_ssize_t Hp, Py_ssize_t Wp,
                              Py_ssize_t C, int kh, int kw, int sh, int sw, int dh, int dw,
                              Py_ssize_t Ho, Py_ssize_t Wo, const float *w, Py_ssize_t F,
                              const float *bias, float *y)
    int mc_avx2_im2row_t_matmul(const float *xt, Py_ssize_t N, Py_ssize_t Hp, Py_ssize_t Wp,
                                Py_ssize_t C, int kh, int kw, int sh, int sw, int dh, int dw,
                                Py_ssize_t Ho, Py_ssize_t Wo, const float *dy, Py_ssize_t F,
                                float *dwt)
    void mc_avx2_conv2d_direct(const float *xp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t Hp,
                               Py_ssize_t Wp, int kh, int kw, int sh, int dh, int dw,
                               Py_ssize_t Ho, Py_ssize_t Wo, const float *wt, Py_ssize_t F,
                               const float *bias, float *y)
    void mc_avx2_conv2d_direct_wgrad(const float *xp, Py_ssize_t N, Py_ssize_t C,
                                     Py_ssize_t Hp, Py_ssize_t Wp, int kh, int kw, int sh,
                                     int dh, int dw, Py_ssize_t Ho, Py_ssize_t Wo,
                                     const float *dy, Py_ssize_t F, float *dwt)

import os

import numpy as np

from . import reference
from ..geometry import kernel_geometry


cdef inline Py_ssize_t _first_valid(Py_ssize_t offset, Py_ssize_t stride,
                                    Py_ssize_t count) noexcept nogil:
    """The first output o < count whose tap o*stride + offset is >= 0."""
    cdef Py_ssize_t o = 0
    if offset < 0:
        o = (-offset + stride - 1) // stride
    return o if o < count else count


cdef inline Py_ssize_t _end_valid(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t n,
                                  Py_ssize_t count, Py_ssize_t lo) noexcept nogil:
    """One past the last output o < count whose tap o*stride + offset is < n (>= lo)."""
    cdef Py_ssize_t o = 0
    if n - 1 - offset >= 0:
        o = (n - 1 - offset) // stride + 1
    if o > count:
        o = count
    return o if o > lo else lo


cdef void _im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols,
                  Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                  Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                  Py_ssize_t Ho, Py_ssize_t Wo) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = C * kh * kw
    cdef Py_ssize_t row, c, i, j, n, ho, wo, h, off, lo, hi
    cdef floating *dst
    cdef const floating *src
    for row in prange(K, nogil=True, schedule="guided",
                      num_threads=threads_for(K * N * Ho * Wo)):
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        off = j * dw - pw                     # w = wo*sw + off
        lo = _first_valid(off, sw, Wo)
        hi = _end_valid(off, sw, W, Wo, lo)
        for n in range(N):
            for ho in range(Ho):
                dst = &cols[row, (n * Ho + ho) * Wo]
                h = ho * sh - ph + i * dh
                if h < 0 or h >= H:
                    memset(dst, 0, Wo * sizeof(floating))
                    continue
                src = &x[n, c, h, 0]
                for wo in range(lo):
                    dst[wo] = 0
                if sw == 1:                   # a contiguous run: copy it whole
                    if floating is float:
                        copy_row_f(dst + lo, src + lo + off, hi - lo)
                    else:
                        copy_row_d(dst + lo, src + lo + off, hi - lo)
                elif sw == 2:                 # a constant stride vectorises
                    for wo in range(lo, hi):
                        dst[wo] = src[2 * wo + off]
                else:
                    for wo in range(lo, hi):
                        dst[wo] = src[wo * sw + off]
                for wo in range(hi, Wo):
                    dst[wo] = 0


cdef inline void _add_tap(const floating *src, floating *dst, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t sw, Py_ssize_t off) noexcept nogil:
    """dst[o*sw + off] += src[o] for o in [lo, hi)."""
    cdef Py_ssize_t o
    if sw == 1:
        if hi <= lo:
            return
        if floating is float:
            add_row_f(dst + lo + off, src + lo, hi - lo)
        else:
            add_row_d(dst + lo + off, src + lo, hi - lo)
    else:
        for o in range(lo, hi):
            dst[o * sw + off] += src[o]


cdef inline void _add_tap_pair(const floating *a, const floating *b, floating *dst,
                               Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t off) noexcept nogil:
    """dst[2o + off] += a[o], dst[2o + off + 1] += b[o] for o in [lo, hi).

    Taps j and j+1 of a stride-2, dilation-1 convolution fill the even and odd
    pixels of one contiguous run: as a pair they vectorise, alone they scatter.
    """
    cdef Py_ssize_t o
    for o in range(lo, hi):
        dst[2 * o + off] += a[o]
        dst[2 * o + off + 1] += b[o]


cdef void _col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] x,
                  Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                  Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                  Py_ssize_t Ho, Py_ssize_t Wo) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t plane, n, c, i, j, row, ho, h, off, lo, hi, lo2, hi2, a, b
    cdef bint paired
    cdef floating *dst
    cdef const floating *src
    cdef const floating *src2
    for plane in prange(N * C, nogil=True, schedule="guided",
                        num_threads=threads_for(C * kh * kw * N * Ho * Wo)):
        c = plane // N                # channel-major: the threads read cols row by row
        n = plane % N
        memset(&x[n, c, 0, 0], 0, H * W * sizeof(floating))
        # taps in the reference's order (i, then j): every pixel gets at most one
        # term per tap, so its sum rounds exactly as the reference's does
        for i in range(kh):
            j = 0
            while j < kw:
                row = (c * kh + i) * kw + j
                off = j * dw - pw
                lo = _first_valid(off, sw, Wo)
                hi = _end_valid(off, sw, W, Wo, lo)
                paired = sw == 2 and dw == 1 and j + 1 < kw
                lo2 = hi2 = a = b = 0
                if paired:                     # tap j+1: one pixel to the right
                    lo2 = _first_valid(off + 1, 2, Wo)
                    hi2 = _end_valid(off + 1, 2, W, Wo, lo2)
                    a = lo if lo > lo2 else lo2
                    b = hi if hi < hi2 else hi2
                    if b < a:
                        b = a
                for ho in range(Ho):
                    h = ho * sh - ph + i * dh
                    if h < 0 or h >= H:
                        continue
                    src = &cols[row, (n * Ho + ho) * Wo]
                    dst = &x[n, c, h, 0]
                    if not paired:
                        _add_tap(src, dst, lo, hi, sw, off)
                        continue
                    src2 = &cols[row + 1, (n * Ho + ho) * Wo]
                    _add_tap(src, dst, lo, a, 2, off)          # the ragged edges alone
                    _add_tap(src, dst, b, hi, 2, off)
                    _add_tap(src2, dst, lo2, a, 2, off + 1)
                    _add_tap(src2, dst, b, hi2, 2, off + 1)
                    _add_tap_pair(src, src2, dst, a, b, off)
                j = j + 2 if paired else j + 1


# ---------------------------------------------------------------- channels last
#
# In a zero-padded (N, Hp, Wp, C) image the taps (i, 0..kw-1) of one output
# position are kw*C consecutive values (dilation 1), where in (N, C, H, W) they
# are kw values in each of C rows: im2row copies and row2im adds a few long runs
# per position instead of many rows of 7 or 14 values.

cdef inline void _copy_run(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    if n >= 64:
        memcpy(dst, src, n * sizeof(floating))
    elif floating is float:
        copy_row_f(dst, src, n)
    else:
        copy_row_d(dst, src, n)


cdef inline void _add_run(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    if floating is float:
        add_row_f(dst, src, n)
    else:
        add_row_d(dst, src, n)


cdef void _im2row(const floating[:, :, :, ::1] xt, floating[:, ::1] rows,
                  Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                  Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo) noexcept:
    """rows[(n, ho, wo), (i, j, c)] = xt[n, ho*sh + i*dh, wo*sw + j*dw, c], xt padded NHWC."""
    cdef Py_ssize_t N = xt.shape[0], C = xt.shape[3]
    cdef Py_ssize_t n, ho, wo, i, j, h
    cdef floating *dst
    for n in prange(N, nogil=True, schedule="static",
                    num_threads=threads_for(rows.shape[0] * rows.shape[1])):
        for ho in range(Ho):
            for wo in range(Wo):
                dst = &rows[(n * Ho + ho) * Wo + wo, 0]
                for i in range(kh):
                    h = ho * sh + i * dh
                    if dw == 1:                   # taps (i, 0..kw-1): one run
                        _copy_run(dst + i * kw * C, &xt[n, h, wo * sw, 0], kw * C)
                    else:
                        for j in range(kw):
                            _copy_run(dst + (i * kw + j) * C, &xt[n, h, wo * sw + j * dw, 0], C)


cdef void _row2im(const floating[:, ::1] rows, floating[:, :, :, ::1] xt,
                  Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                  Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo) noexcept:
    """xt[n, ho*sh + i*dh, wo*sw + j*dw, c] += rows[(n, ho, wo), (i, j, c)], xt zeroed NHWC."""
    cdef Py_ssize_t N = xt.shape[0], C = xt.shape[3]
    cdef Py_ssize_t n, ho, wo, i, j, h
    cdef const floating *src
    for n in prange(N, nogil=True, schedule="static",
                    num_threads=threads_for(rows.shape[0] * rows.shape[1])):
        for ho in range(Ho):
            for wo in range(Wo):
                src = &rows[(n * Ho + ho) * Wo + wo, 0]
                for i in range(kh):
                    h = ho * sh + i * dh
                    if dw == 1:
                        _add_run(&xt[n, h, wo * sw, 0], src + i * kw * C, kw * C)
                    else:
                        for j in range(kw):
                            _add_run(&xt[n, h, wo * sw + j * dw, 0], src + (i * kw + j) * C, C)


def kernel_threads():
    """How many OpenMP threads a large kernel called from this thread may use."""
    return max_threads()


def set_kernel_threads(int n):
    """Cap the OpenMP threads of kernels called from *this* thread (OpenMP keeps
    the setting per thread): the batch-parallel workers run each kernel on one."""
    if n < 1:
        raise ValueError(f"set_kernel_threads: expected a positive count, got {n}")
    set_max_threads(n)


def _geometry(shape, kh, kw, stride, padding, dilation):
    return kernel_geometry(shape, kh, kw, stride, padding, dilation)


def _float_array(a, what):
    a = np.ascontiguousarray(a)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise ValueError(f"{what} must be float32 or float64, got {a.dtype}")
    return a


def _unfold_target(out, shape, x, op):
    """The array an unfolding writes into: ``out`` itself when it is a writable,
    C-contiguous array of x's dtype, else a new one (copied into ``out`` after)."""
    if out is None:
        return np.empty(shape, dtype=x.dtype)  # every element gets written
    if tuple(out.shape) != shape:
        raise ValueError(f"{op}: out has shape {tuple(out.shape)}, expected {shape} "
                         f"for input {x.shape}")
    if (isinstance(out, np.ndarray) and out.dtype == x.dtype and out.flags.c_contiguous
            and out.flags.writeable):
        return out
    return np.empty(shape, dtype=x.dtype)


def _written_into(result, out):
    """``out`` holding ``result`` (when one was given), else ``result``."""
    if out is not None and result is not out:
        out[...] = result
        return out
    return result


def _unfolded(a, shape, x_shape, op, what):
    """The unfolded array ``a`` checked against and reshaped to ``shape``."""
    a = _float_array(a, f"{op}: {what}")
    if a.size != shape[0] * shape[1]:
        raise ValueError(f"{op}: {what} has shape {a.shape}, expected {shape} "
                         f"for x_shape {tuple(x_shape)}")
    return a.reshape(shape)


def im2col(x, kh, kw, stride, padding, dilation, out=None):
    """Unfold every receptive field of ``x`` into a column.

    x    : (N, C, H, W) float32 or float64
    out  : optional (C*kh*kw, N*Ho*Wo) buffer to write into
    cols : (C*kh*kw, N*Ho*Wo), ``out`` when given
    """
    x = _float_array(x, "im2col: input")
    kh, kw = int(kh), int(kw)
    N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo = _geometry(
        x.shape, kh, kw, stride, padding, dilation)
    cols = _unfold_target(out, (C * kh * kw, N * Ho * Wo), x, "im2col")
    if x.dtype == np.float32:
        _im2col[float](x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    else:
        _im2col[double](x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    return _written_into(cols, out)


def col2im(cols, x_shape, kh, kw, stride, padding, dilation):
    """Fold columns back onto the image, summing where receptive fields overlap.

    cols : (C*kh*kw, N*Ho*Wo) float32 or float64, the layout of :func:`im2col`
    x    : x_shape = (N, C, H, W), C-contiguous, the dtype of ``cols``
    """
    kh, kw = int(kh), int(kw)
    N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo = _geometry(
        x_shape, kh, kw, stride, padding, dilation)
    cols = _unfolded(cols, (C * kh * kw, N * Ho * Wo), x_shape, "col2im", "cols")
    x = np.empty((N, C, H, W), dtype=cols.dtype)  # each plane is zeroed by its thread
    if cols.dtype == np.float32:
        _col2im[float](cols, x, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    else:
        _col2im[double](cols, x, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    return x


def _padded_channels_last(x, ph, pw):
    """x (N, C, H, W) -> (N, H + 2*ph, W + 2*pw, C), zero in the padding."""
    N, C, H, W = x.shape
    xt = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    xt[:, ph:ph + H, pw:pw + W] = x.transpose(0, 2, 3, 1)
    return xt


def im2row(x, kh, kw, stride, padding, dilation, out=None):
    """Unfold every receptive field of ``x`` into a row (channels last).

    x    : (N, C, H, W) float32 or float64
    out  : optional (N*Ho*Wo, kh*kw*C) buffer to write into
    rows : (N*Ho*Wo, kh*kw*C), ``out`` when given
    """
    x = _float_array(x, "im2row: input")
    kh, kw = int(kh), int(kw)
    N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo = _geometry(
        x.shape, kh, kw, stride, padding, dilation)
    rows = _unfold_target(out, (N * Ho * Wo, kh * kw * C), x, "im2row")
    xt = _padded_channels_last(x, ph, pw)
    if x.dtype == np.float32:
        _im2row[float](xt, rows, kh, kw, sh, sw, dh, dw, Ho, Wo)
    else:
        _im2row[double](xt, rows, kh, kw, sh, sw, dh, dw, Ho, Wo)
    return _written_into(rows, out)


def row2im(rows, x_shape, kh, kw, stride, padding, dilation):
    """Fold rows back onto the image, summing where receptive fields overlap.

    rows : (N*Ho*Wo, kh*kw*C) float32 or float64, the layout of :func:`im2row`
    x    : x_shape = (N, C, H, W), C-contiguous, the dtype of ``rows``
    """
    kh, kw = int(kh), int(kw)
    N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo = _geometry(
        x_shape, kh, kw, stride, padding, dilation)
    rows = _unfolded(rows, (N * Ho * Wo, kh * kw * C), x_shape, "row2im", "rows")
    xt = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=rows.dtype)
    if rows.dtype == np.float32:
        _row2im[float](rows, xt, kh, kw, sh, sw, dh, dw, Ho, Wo)
    else:
        _row2im[double](rows, xt, kh, kw, sh, sw, dh, dw, Ho, Wo)
    return np.ascontiguousarray(xt[:, ph:ph + H, pw:pw + W].transpose(0, 3, 1, 2))


# ---------------------------------------------------------------- products of the rows

# The instruction sets of the tiles, by level: the CPU's best is chosen when the
# module loads, and a cap (MINCONV_ISA, or set_isa_cap) can hold it lower, so
# that any machine can run and measure the AVX2 tiles or none.
ISA_NAMES = ("none", "avx2", "avx512")
cdef int _ISA_SUPPORTED = 2 if mc_fused_available() else (1 if mc_avx2_available() else 0)
cdef int _isa_cap = 2
cdef int _isa = _ISA_SUPPORTED

# The tiles stream the whole (kh*kw*C, F) weight matrix once per few positions
# (the AVX2 ones one 16-channel panel of it at a time): they beat im2row + GEMM
# while it stays in the core's L2 cache (1 MB here, of 2 MB). ZFNet's 13x13
# layers (3.5-5.3 MB of weights) measured 2-4x slower fused with AVX-512. With
# AVX2 their forward product alone, on one core, ran 5-10% ahead of im2row and
# OpenBLAS's Haswell sgemm (`bench_kernels.py --tiles`), but the layers on both
# cores ran 10-30% slower fused (`bench_layers.py --isa avx2`), and their weight
# gradient fell 10-30% behind even alone: both keep the limit.
_FUSED_MAX_WEIGHTS = {("avx512", "forward"): 2 ** 18, ("avx512", "weight_grad"): 2 ** 18,
                      ("avx2", "forward"): 2 ** 18, ("avx2", "weight_grad"): 2 ** 18}
PRODUCTS = ("forward", "weight_grad")


def _isa_level(name, what):
    if name not in ISA_NAMES:
        raise ValueError(f"{what}: expected one of {ISA_NAMES}, got {name!r}")
    return ISA_NAMES.index(name)


def isa():
    """The instruction set the tiles run with now: 'avx512', 'avx2' or 'none'
    (im2row + GEMM and the reference's direct convolution)."""
    return ISA_NAMES[_isa]


def set_isa_cap(name):
    """Let the tiles use at most instruction set ``name`` ('avx512', 'avx2' or
    'none'; the CPU's best when it lacks the one named). Returns the previous cap."""
    global _isa_cap, _isa
    level = _isa_level(name, "set_isa_cap")
    previous = ISA_NAMES[_isa_cap]
    _isa_cap = level
    _isa = min(level, _ISA_SUPPORTED)
    return previous


if os.environ.get("MINCONV_ISA", "").strip():
    set_isa_cap(ISA_NAMES[_isa_level(os.environ["MINCONV_ISA"].strip().lower(),
                                     "the environment variable MINCONV_ISA")])


def fused_kernels(dtype):
    """True when the tiles serve ``dtype`` (float32 on a CPU with AVX-512 or AVX2+FMA,
    see :func:`isa`): then :func:`conv2d_direct` runs compiled for width stride 1, and
    the im2row products of small enough weights never form the rows (:func:`fuses_im2row`)."""
    return _fusing_level(dtype) > 0


def fuses_im2row(dtype, taps, channels, product="forward"):
    """True when the product ``product`` with a weight matrix of ``taps`` x ``channels``
    (kh*kw*C x F) runs without forming the rows: "forward" for :func:`im2row_matmul`
    (the output, and dx as a flipped convolution), "weight_grad" for
    :func:`im2row_t_matmul`."""
    if product not in PRODUCTS:
        raise ValueError(f"fuses_im2row: product must be one of {PRODUCTS}, got {product!r}")
    return _fusing_level(dtype, taps, channels, product) > 0


def _fusing_level(dtype, taps=0, channels=0, product="forward"):
    """The level of the tiles that serve ``dtype`` and these weights now, 0 for none;
    read once per call, so a cap set meanwhile never splits one product across two."""
    level = _isa
    if level == 0 or np.dtype(dtype) != np.float32:
        return 0
    return level if taps * channels <= _FUSED_MAX_WEIGHTS[ISA_NAMES[level], product] else 0


def _matrix(a, rows, dtype, op, what):
    """``a`` as a C-contiguous 2-D array of ``dtype`` with ``rows`` rows."""
    a = np.ascontiguousarray(a)
    if a.ndim != 2 or a.shape[0] != rows or a.dtype != dtype:
        raise ValueError(f"{op}: {what} must be a {np.dtype(dtype).name} matrix with {rows} "
                         f"rows, got {a.dtype} {a.shape}")
    return a


cdef int _fused_matmul(const float[:, :, :, ::1] xt, const float[:, ::1] w,
                       const float[::1] bias, float[:, ::1] y, int kh, int kw, int sh, int sw,
                       int dh, int dw, Py_ssize_t Ho, Py_ssize_t Wo, int level) noexcept:
    cdef const float *b = NULL
    cdef int status = 0
    if bias is not None:
        b = &bias[0]
    with nogil:
        if level == 2:
            mc_im2row_matmul(&xt[0, 0, 0, 0], xt.shape[0], xt.shape[1], xt.shape[2],
                             xt.shape[3], kh, kw, sh, sw, dh, dw, Ho, Wo, &w[0, 0], w.shape[1],
                             b, &y[0, 0])
        else:
            status = mc_avx2_im2row_matmul(&xt[0, 0, 0, 0], xt.shape[0], xt.shape[1],
                                           xt.shape[2], xt.shape[3], kh, kw, sh, sw, dh, dw,
                                           Ho, Wo, &w[0, 0], w.shape[1], b, &y[0, 0])
    return status


cdef int _fused_t_matmul(const float[:, :, :, ::1] xt, const float[:, ::1] dy, float[:, ::1] dwt,
                         int kh, int kw, int sh, int sw, int dh, int dw, Py_ssize_t Ho,
                         Py_ssize_t Wo, int level) noexcept:
    cdef int status
    with nogil:
        if level == 2:
            status = mc_im2row_t_matmul(&xt[0, 0, 0, 0], xt.shape[0], xt.shape[1], xt.shape[2],
                                        xt.shape[3], kh, kw, sh, sw, dh, dw, Ho, Wo, &dy[0, 0],
                                        dy.shape[1], &dwt[0, 0])
        else:
            status = mc_avx2_im2row_t_matmul(&xt[0, 0, 0, 0], xt.shape[0], xt.shape[1],
                                             xt.shape[2], xt.shape[3], kh, kw, sh, sw, dh, dw,
                                             Ho, Wo, &dy[0, 0], dy.shape[1], &dwt[0, 0])
    return status


def im2row_matmul(x, w_rows, kh, kw, stride, padding, dilation, bias=None, out=None):
    """``im2row(x) @ w_rows + bias``: a convolution, output channels last.

    x      : (N, C, H, W) float32 or float64
    w_rows : (kh*kw*C, F), row ``(i*kw + j)*C + c`` the weights of tap (i, j) of channel c
    bias   : (F,) or None
    y      : (N*Ho*Wo, F), ``out`` when given
    """
    x = _float_array(x, "im2row_matmul: input")
    kh, kw = int(kh), int(kw)
    N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo = _geometry(
        x.shape, kh, kw, stride, padding, dilation)
    w_rows = _matrix(w_rows, kh * kw * C, x.dtype, "im2row_matmul", "w_rows")
    F = w_rows.shape[1]
    if bias is not None:
        bias = np.ascontiguousarray(bias)
        if bias.shape != (F,) or bias.dtype != x.dtype:
            raise ValueError(f"im2row_matmul: bias must be {x.dtype} ({F},), got "
                             f"{bias.dtype} {bias.shape}")
    y = _unfold_target(out, (N * Ho * Wo, F), x, "im2row_matmul")
    if y.size == 0:
        return _written_into(y, out)
    level = _fusing_level(x.dtype, kh * kw * C, F)
    if level:
        if _fused_matmul(_padded_channels_last(x, ph, pw), w_rows, bias, y,
                         kh, kw, sh, sw, dh, dw, Ho, Wo, level) != 0:
            raise MemoryError("im2row_matmul: out of memory for the padded weights")
    else:
        np.matmul(im2row(x, kh, kw, stride, padding, dilation), w_rows, out=y)
        if bias is not None:
            y += bias
    return _written_into(y, out)


def im2row_t_matmul(x, dy_rows, kh, kw, stride, padding, dilation, out=None):
    """``im2row(x).T @ dy_rows``: a convolution's weight gradient, channels last.

    x       : (N, C, H, W) float32 or float64
    dy_rows : (N*Ho*Wo, F), one row per output position
    dw_rows : (kh*kw*C, F), the layout of im2row_matmul's ``w_rows``; ``out`` when given
    """
    x = _float_array(x, "im2row_t_matmul: input")
    kh, kw = int(kh), int(kw)
    N, C, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo = _geometry(
        x.shape, kh, kw, stride, padding, dilation)
    dy_rows = _matrix(dy_rows, N * Ho * Wo, x.dtype, "im2row_t_matmul", "dy_rows")
    dw_rows = _unfold_target(out, (kh * kw * C, dy_rows.shape[1]), x, "im2row_t_matmul")
    level = _fusing_level(x.dtype, kh * kw * C, dy_rows.shape[1], "weight_grad")
    if dw_rows.size == 0 or dy_rows.size == 0:
        dw_rows[...] = 0
    elif level:
        if _fused_t_matmul(_padded_channels_last(x, ph, pw), dy_rows, dw_rows,
                           kh, kw, sh, sw, dh, dw, Ho, Wo, level) != 0:
            raise MemoryError("im2row_t_matmul: out of memory for its scratch arrays")
    else:
        np.matmul(im2row(x, kh, kw, stride, padding, dilation).T, dy_rows, out=dw_rows)
    return _written_into(dw_rows, out)


# ---------------------------------------------------------------- few input channels

def _direct_operands(op, x, W_shape, stride, padding, dilation):
    x = _float_array(x, f"{op}: input")
    F, C, kh, kw = (int(v) for v in W_shape)
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"{op}: input {x.shape} does not match the weight shape {tuple(W_shape)}")
    geometry = _geometry(x.shape, kh, kw, stride, padding, dilation)
    return x, F, C, kh, kw, geometry


def conv2d_direct(x, W, bias, stride, padding, dilation, out=None):
    """A convolution summed tap by tap, channels first (the reference's twin).

    x : (N, C, H, W), W : (F, C, kh, kw), bias : (F,) or None -> y : (N, F, Ho, Wo),
    ``out`` when given. Compiled for float32 with width stride 1 where the
    tiles run (:func:`fused_kernels`); otherwise the reference computes it.
    """
    x, F, C, kh, kw, geometry = _direct_operands("conv2d_direct", x, np.shape(W), stride,
                                                 padding, dilation)
    N, _, H, Wd, sh, sw, ph, pw, dh, dw, Ho, Wo = geometry
    W = np.ascontiguousarray(W)
    if W.dtype != x.dtype or (bias is not None and np.asarray(bias).dtype != x.dtype):
        raise ValueError(f"conv2d_direct: weight and bias must be {x.dtype}")
    level = _fusing_level(x.dtype)
    if level == 0 or sw != 1:
        return reference.conv2d_direct(x, W, bias, stride, padding, dilation, out=out)
    y = _unfold_target(out, (N, F, Ho, Wo), x, "conv2d_direct")
    wt = np.ascontiguousarray(W.reshape(F, -1).T)                        # (C*kh*kw, F)
    b = None if bias is None else np.ascontiguousarray(bias)
    if y.size:
        _direct(np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))), wt, b, y, kh, kw, sh, dh, dw,
                level)
    return _written_into(y, out)


def conv2d_direct_weight_grad(dy, x, W_shape, stride, padding, dilation):
    """The weight gradient of :func:`conv2d_direct`: dy (N, F, Ho, Wo), x -> (F, C, kh, kw)."""
    x, F, C, kh, kw, geometry = _direct_operands("conv2d_direct_weight_grad", x, W_shape,
                                                 stride, padding, dilation)
    N, _, H, Wd, sh, sw, ph, pw, dh, dw, Ho, Wo = geometry
    dy = np.ascontiguousarray(dy)
    if dy.shape != (N, F, Ho, Wo) or dy.dtype != x.dtype:
        raise ValueError(f"conv2d_direct_weight_grad: dy must be {x.dtype} {(N, F, Ho, Wo)}, "
                         f"got {dy.dtype} {dy.shape}")
    level = _fusing_level(x.dtype)
    if level == 0 or sw != 1:
        return reference.conv2d_direct_weight_grad(dy, x, (F, C, kh, kw), stride, padding,
                                                   dilation)
    dwt = np.zeros((C * kh * kw, F), dtype=x.dtype)
    if dy.size:
        _direct_wgrad(np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))), dy, dwt,
                      kh, kw, sh, dh, dw, level)
    return np.ascontiguousarray(dwt.T).reshape(F, C, kh, kw)


cdef void _direct(const float[:, :, :, ::1] xp, const float[:, ::1] wt, const float[::1] bias,
                  float[:, :, :, ::1] y, int kh, int kw, int sh, int dh, int dw,
                  int level) noexcept:
    cdef const float *b = NULL
    if bias is not None:
        b = &bias[0]
    with nogil:
        if level == 2:
            mc_conv2d_direct(&xp[0, 0, 0, 0], xp.shape[0], xp.shape[1], xp.shape[2],
                             xp.shape[3], kh, kw, sh, dh, dw, y.shape[2], y.shape[3], &wt[0, 0],
                             wt.shape[1], b, &y[0, 0, 0, 0])
        else:
            mc_avx2_conv2d_direct(&xp[0, 0, 0, 0], xp.shape[0], xp.shape[1], xp.shape[2],
                                  xp.shape[3], kh, kw, sh, dh, dw, y.shape[2], y.shape[3],
                                  &wt[0, 0], wt.shape[1], b, &y[0, 0, 0, 0])


cdef void _direct_wgrad(const float[:, :, :, ::1] xp, const float[:, :, :, ::1] dy,
                        float[:, ::1] dwt, int kh, int kw, int sh, int dh, int dw,
                        int level) noexcept:
    with nogil:
        if level == 2:
            mc_conv2d_direct_wgrad(&xp[0, 0, 0, 0], xp.shape[0], xp.shape[1], xp.shape[2],
                                   xp.shape[3], kh, kw, sh, dh, dw, dy.shape[2], dy.shape[3],
                                   &dy[0, 0, 0, 0], dy.shape[1], &dwt[0, 0])
        else:
            mc_avx2_conv2d_direct_wgrad(&xp[0, 0, 0, 0], xp.shape[0], xp.shape[1],
                                        xp.shape[2], xp.shape[3], kh, kw, sh, dh, dw,
                                        dy.shape[2], dy.shape[3], &dy[0, 0, 0, 0],
                                        dy.shape[1], &dwt[0, 0])
