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

The products of those rows computed without forming them, and the direct
convolution of few channels, are the compiled tiles of
:mod:`minconv._kernels.cpu_tiles`.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from minconv._kernels._parallel cimport max_threads, set_max_threads, threads_for
from minconv._kernels._rows cimport add_row_d, add_row_f, copy_row_d, copy_row_f

import numpy as np

from ..geometry import kernel_geometry
from .cpu_layout import padded_channels_last


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


def _prepared_output(x, x_shape, out, y_shape, whole):
    """The array a prepared call writes for input ``x``: ``out``, or a new float32 array of
    ``y_shape`` when out is None; None where x is not a C-contiguous float32 ndarray of
    ``x_shape``, or out not a float32 ndarray of ``y_shape`` with each image's maps
    contiguous (``whole``: the whole array C-contiguous). The caller then takes the
    general path."""
    if (type(x) is not np.ndarray or x.shape != x_shape or x.dtype != np.float32
            or not x.flags.c_contiguous):
        return None
    if out is None:
        return np.empty(y_shape, dtype=np.float32)
    if type(out) is not np.ndarray or out.shape != y_shape or out.dtype != np.float32:
        return None
    if whole:
        return out if out.flags.c_contiguous else None
    return out if out.strides[1:] == (y_shape[2] * y_shape[3] * 4, y_shape[3] * 4, 4) else None


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
    xt = padded_channels_last(x, ph, pw)
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
