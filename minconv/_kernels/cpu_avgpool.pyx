# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Average pooling and the plane means in Cython: twins of ``reference_avgpool``.

    avgpool_forward    y[n, c, i, j] = sum of x over window (i, j) / its divisor
    avgpool_backward   dx: each dy[n, c, i, j] / divisor added over its window
    plane_means        y[n, c] = sum over p of x[n, c, p] / P     (global average pooling)

The divisor is :func:`minconv._kernels.reference_avgpool.avgpool_divisors`' (the window
cut at the far edge of the padding; padding counted only with ``count_include_pad``).
Where NumPy adds tap by tap over a padded copy of the input (0.3 ms for DenseNet's
transition at batch 1), each window is summed here where it lies.

Every (n, c) plane is independent, so all passes run in parallel over the N*C planes and
each thread writes only its own planes. The plane means give each thread one contiguous
run of planes: after a 1x1 layer whose output channels were shared out the same way
(SqueezeNet's last layer at batch 1), each core sums the planes it wrote, from its own
cache.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from minconv._kernels._parallel cimport threads_for

import numpy as np

from .reference_avgpool import avgpool_divisors

cdef extern from "_row_sum.h" nogil:
    float _plane_sum_f "mc_row_sum_f"(const float *x, Py_ssize_t n)
    double _plane_sum_d "mc_row_sum_d"(const double *x, Py_ssize_t n)


# ---------------------------------------------------------------- average pooling

def _windows(n_out, k, s, p, n, with_pad):
    """Along one axis, as int64 (3 * n_out): the first input each window covers, the last
    + 1, and its divisor factor (the reference's :func:`avgpool_divisors`). The same for
    every plane, so worked out once."""
    first = np.arange(n_out, dtype=np.int64) * s - p
    start, stop = np.maximum(first, 0), np.minimum(np.minimum(first + k, n + p), n)
    return np.concatenate([start, stop, avgpool_divisors(n, n_out, k, s, p, with_pad)])


def _window_tables(in_hw, out_hw, kernel, stride, padding, with_pad):
    """The row and column windows of :func:`_windows` for (H, W) -> (Ho, Wo)."""
    return tuple(_windows(out_hw[axis], kernel[axis], stride[axis], padding[axis],
                          in_hw[axis], with_pad) for axis in (0, 1))


cdef void _avgpool_plane(const floating *x, floating *y, Py_ssize_t W, Py_ssize_t Ho,
                         Py_ssize_t Wo, const int64_t *rows, const int64_t *cols) noexcept nogil:
    """One (H, W) plane's (Ho, Wo) window means; rows/cols: start, stop, divisor factor of
    each window along that axis (see _windows), three arrays one after another."""
    cdef Py_ssize_t i, j, h, w
    cdef floating total
    for i in range(Ho):
        for j in range(Wo):
            total = 0
            for h in range(rows[i], rows[Ho + i]):
                for w in range(cols[j], cols[Wo + j]):
                    total = total + x[h * W + w]
            y[i * Wo + j] = total / (<floating>rows[2 * Ho + i] * <floating>cols[2 * Wo + j])


cdef void _avgpool_back_plane(const floating *dy, floating *dx, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t Ho, Py_ssize_t Wo, const int64_t *rows,
                              const int64_t *cols) noexcept nogil:
    """One plane's dx: each dy[i, j] / divisor added over its window."""
    cdef Py_ssize_t i, j, h, w
    cdef floating share
    memset(dx, 0, H * W * sizeof(floating))
    for i in range(Ho):
        for j in range(Wo):
            share = dy[i * Wo + j] / (<floating>rows[2 * Ho + i] * <floating>cols[2 * Wo + j])
            for h in range(rows[i], rows[Ho + i]):
                for w in range(cols[j], cols[Wo + j]):
                    dx[h * W + w] = dx[h * W + w] + share


cdef void _avgpool_2x2_plane(const floating *x, floating *y, Py_ssize_t W, Py_ssize_t Ho,
                             Py_ssize_t Wo) noexcept nogil:
    """_avgpool_plane for 2x2 windows at stride 2 that all lie inside the plane (DenseNet's
    transitions): the same sums in the same order, without the window tables (0.45 against
    0.07 ms for 128 planes of 56x56)."""
    cdef Py_ssize_t i, j
    cdef const floating *top
    cdef const floating *bottom
    for i in range(Ho):
        top = x + 2 * i * W
        bottom = top + W
        for j in range(Wo):
            y[i * Wo + j] = ((((<floating>0 + top[2 * j]) + top[2 * j + 1]) + bottom[2 * j])
                             + bottom[2 * j + 1]) / 4


cdef void _avgpool_planes(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                          const int64_t[::1] rows, const int64_t[::1] cols, Py_ssize_t taps,
                          bint halving) noexcept:
    cdef Py_ssize_t P = x.shape[0], p
    for p in prange(P, nogil=True, schedule="static",
                    num_threads=threads_for(P * y.shape[1] * y.shape[2] * taps)):
        if halving:
            _avgpool_2x2_plane(&x[p, 0, 0], &y[p, 0, 0], x.shape[2], y.shape[1], y.shape[2])
        else:
            _avgpool_plane(&x[p, 0, 0], &y[p, 0, 0], x.shape[2], y.shape[1], y.shape[2],
                           &rows[0], &cols[0])


cdef void _avgpool_back_planes(const floating[:, :, ::1] dy, floating[:, :, ::1] dx,
                               const int64_t[::1] rows, const int64_t[::1] cols,
                               Py_ssize_t taps) noexcept:
    cdef Py_ssize_t P = dx.shape[0], p
    for p in prange(P, nogil=True, schedule="static",
                    num_threads=threads_for(P * dy.shape[1] * dy.shape[2] * taps)):
        _avgpool_back_plane(&dy[p, 0, 0], &dx[p, 0, 0], dx.shape[1], dx.shape[2], dy.shape[1],
                            dy.shape[2], &rows[0], &cols[0])


def _planes(a, what, op):
    """a (N, C, H, W) float32/float64 as contiguous (N*C, H, W) planes."""
    a = np.ascontiguousarray(a)
    if a.ndim != 4 or a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{op}: {what} must be a float32 or float64 (N, C, H, W) array, got "
                         f"{a.dtype} {a.shape}")
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


def avgpool_forward(x, kernel, stride, padding, out_size, count_include_pad):
    """y (N, C, Ho, Wo): the mean of each window of x (N, C, H, W); sizes are pairs."""
    planes = _planes(x, "x", "avgpool_forward")
    N, C, H, W = x.shape
    Ho, Wo = out_size
    y = np.empty((N * C, Ho, Wo), dtype=planes.dtype)
    if y.size == 0:
        return y.reshape(N, C, Ho, Wo)
    rows, cols = _window_tables((H, W), (Ho, Wo), kernel, stride, padding, count_include_pad)
    halving = (tuple(kernel) == tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
               and 2 * Ho <= H and 2 * Wo <= W)
    if planes.dtype == np.float32:
        _avgpool_planes[float](planes, y, rows, cols, kernel[0] * kernel[1], halving)
    else:
        _avgpool_planes[double](planes, y, rows, cols, kernel[0] * kernel[1], halving)
    return y.reshape(N, C, Ho, Wo)


def avgpool_backward(dy, x_shape, kernel, stride, padding, count_include_pad):
    """dx (x_shape): each dy spread evenly (by the forward divisor) over its window."""
    planes = _planes(dy, "dy", "avgpool_backward")
    N, C, H, W = (int(v) for v in x_shape)
    if dy.shape[:2] != (N, C):
        raise ValueError(f"avgpool_backward: dy {dy.shape} does not match x_shape "
                         f"{tuple(x_shape)}")
    Ho, Wo = dy.shape[2:]
    dx = np.empty((N * C, H, W), dtype=planes.dtype)  # each plane is zeroed by its thread
    if dx.size == 0 or dy.size == 0:
        dx[...] = 0
        return dx.reshape(N, C, H, W)
    rows, cols = _window_tables((H, W), (Ho, Wo), kernel, stride, padding, count_include_pad)
    if planes.dtype == np.float32:
        _avgpool_back_planes[float](planes, dx, rows, cols, kernel[0] * kernel[1])
    else:
        _avgpool_back_planes[double](planes, dx, rows, cols, kernel[0] * kernel[1])
    return dx.reshape(N, C, H, W)


# ---------------------------------------------------------------- the plane means

cdef void _plane_means(const floating[:, ::1] x, floating[::1] y) noexcept:
    cdef Py_ssize_t planes = x.shape[0], P = x.shape[1], p
    cdef floating size = <floating>P
    # static: thread t takes the t-th contiguous run of planes
    for p in prange(planes, nogil=True, schedule="static", num_threads=threads_for(planes * P)):
        if floating is float:
            y[p] = _plane_sum_f(&x[p, 0], P) / size
        else:
            y[p] = _plane_sum_d(&x[p, 0], P) / size


def plane_means(x):
    """The mean of each plane: x (N, C, *spatial) float32/float64 -> (N, C, 1, ..., 1)."""
    if not isinstance(x, np.ndarray) or x.ndim < 3 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"plane_means: x must be a float32 or float64 (N, C, *spatial) array, "
                         f"got {getattr(x, 'dtype', type(x).__name__)} {np.shape(x)}")
    N, C = x.shape[:2]
    planes = np.ascontiguousarray(x).reshape(N * C, -1) if x.size else None
    y = np.empty(N * C, dtype=x.dtype)
    if planes is None:       # no planes, or empty ones (NumPy's mean of nothing: NaN)
        y[...] = np.nan
    elif x.dtype == np.float32:
        _plane_means[float](planes, y)
    else:
        _plane_means[double](planes, y)
    return y.reshape((N, C) + (1,) * (x.ndim - 2))
