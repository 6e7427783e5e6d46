# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Batch normalisation in Cython: the twins of :mod:`minconv._kernels.reference_norm`.

NCHW keeps each (n, c) plane contiguous, so every kernel works on rows of H*W values:
the statistics and the parameter gradients take one channel per thread (its N rows),
the elementwise passes one row per thread. Each row is summed in the array's type with
a vectorised reduction and the rows are added in double, so float32 statistics lose
nothing over a million-element channel.

    stats     mean = sum(x) / M,  var = sum((x - mean)^2) / M        (two passes)
    apply     y = x * scale_c + shift_c                               (one pass)
    backward  dbeta = sum(dy), dgamma = invstd * sum(dy * (x - mean))  (one pass)
              dx = a*dy + b*(x - mean) + c per channel                 (one pass)
"""
from cython cimport floating
from cython.parallel cimport prange

from minconv._kernels._parallel cimport threads_for

import numpy as np

cdef extern from "_row_sum.h" nogil:
    float _sum_f "mc_row_sum_f"(const float *x, Py_ssize_t n)      # summed in float
    double _sum_d "mc_row_sum_d"(const double *x, Py_ssize_t n)

cdef extern from *:
    """
    #define MINCONV_BN_KERNELS(T, S)                                                      \\
    static double minconv_bn_sqdev_##S(const T *x, Py_ssize_t n, T m) {                  \\
        T s = 0;                                                                          \\
        _Pragma("omp simd reduction(+:s)")                                                \\
        for (Py_ssize_t i = 0; i < n; i++) { const T d = x[i] - m; s += d * d; }          \\
        return (double)s;                                                                 \\
    }                                                                                     \\
    static void minconv_bn_affine_##S(const T *x, T *y, Py_ssize_t n, T a, T b) {        \\
        _Pragma("omp simd")                                                               \\
        for (Py_ssize_t i = 0; i < n; i++) y[i] = x[i] * a + b;                           \\
    }                                                                                     \\
    /* the same, then v < 0 ? 0 : v (a ReLU that keeps NaN) while v is in a register */  \\
    static void minconv_bn_affine_relu_##S(const T *x, T *y, Py_ssize_t n, T a, T b) {   \\
        _Pragma("omp simd")                                                               \\
        for (Py_ssize_t i = 0; i < n; i++) {                                              \\
            const T v = x[i] * a + b;                                                     \\
            y[i] = v < 0 ? (T)0 : v;                                                      \\
        }                                                                                 \\
    }                                                                                     \\
    static void minconv_bn_dsums_##S(const T *dy, const T *x, Py_ssize_t n, T m,         \\
                                     double *sdy, double *sdyx) {                         \\
        T s1 = 0, s2 = 0;                                                                 \\
        _Pragma("omp simd reduction(+:s1,s2)")                                            \\
        for (Py_ssize_t i = 0; i < n; i++) { s1 += dy[i]; s2 += dy[i] * (x[i] - m); }     \\
        *sdy += s1; *sdyx += s2;                                                          \\
    }                                                                                     \\
    static void minconv_bn_dx_##S(const T *dy, const T *x, T *dx, Py_ssize_t n, T m,      \\
                                  T a, T b, T c) {                                        \\
        _Pragma("omp simd")                                                               \\
        for (Py_ssize_t i = 0; i < n; i++) dx[i] = a * dy[i] + b * (x[i] - m) + c;        \\
    }
    MINCONV_BN_KERNELS(float, f)
    MINCONV_BN_KERNELS(double, d)
    """
    double _sqdev_f "minconv_bn_sqdev_f"(const float *x, Py_ssize_t n, float m) nogil
    double _sqdev_d "minconv_bn_sqdev_d"(const double *x, Py_ssize_t n, double m) nogil
    void _affine_f "minconv_bn_affine_f"(const float *x, float *y, Py_ssize_t n, float a,
                                         float b) nogil
    void _affine_d "minconv_bn_affine_d"(const double *x, double *y, Py_ssize_t n, double a,
                                         double b) nogil
    void _affine_relu_f "minconv_bn_affine_relu_f"(const float *x, float *y, Py_ssize_t n,
                                                   float a, float b) nogil
    void _affine_relu_d "minconv_bn_affine_relu_d"(const double *x, double *y, Py_ssize_t n,
                                                   double a, double b) nogil
    void _dsums_f "minconv_bn_dsums_f"(const float *dy, const float *x, Py_ssize_t n, float m,
                                       double *sdy, double *sdyx) nogil
    void _dsums_d "minconv_bn_dsums_d"(const double *dy, const double *x, Py_ssize_t n,
                                       double m, double *sdy, double *sdyx) nogil
    void _dx_f "minconv_bn_dx_f"(const float *dy, const float *x, float *dx, Py_ssize_t n,
                                 float m, float a, float b, float c) nogil
    void _dx_d "minconv_bn_dx_d"(const double *dy, const double *x, double *dx, Py_ssize_t n,
                                 double m, double a, double b, double c) nogil


cdef void _stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], c, n
    cdef double s, M = N * HW
    for c in prange(C, nogil=True, schedule="static", num_threads=threads_for(2 * N * C * HW)):
        s = 0
        for n in range(N):
            if floating is float:
                s = s + _sum_f(&x[n, c, 0], HW)
            else:
                s = s + _sum_d(&x[n, c, 0], HW)
        mean[c] = s / M
        s = 0
        for n in range(N):
            if floating is float:
                s = s + _sqdev_f(&x[n, c, 0], HW, <float>mean[c])
            else:
                s = s + _sqdev_d(&x[n, c, 0], HW, mean[c])
        var[c] = s / M


cdef void _apply(const floating[:, :, ::1] x, const floating[::1] scale,
                 const floating[::1] shift, floating[:, :, ::1] y, bint relu) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], r, n, c
    for r in prange(N * C, nogil=True, schedule="static", num_threads=threads_for(2 * N * C * HW)):
        n = r // C
        c = r % C
        if floating is float:
            if relu:
                _affine_relu_f(&x[n, c, 0], &y[n, c, 0], HW, scale[c], shift[c])
            else:
                _affine_f(&x[n, c, 0], &y[n, c, 0], HW, scale[c], shift[c])
        else:
            if relu:
                _affine_relu_d(&x[n, c, 0], &y[n, c, 0], HW, scale[c], shift[c])
            else:
                _affine_d(&x[n, c, 0], &y[n, c, 0], HW, scale[c], shift[c])


cdef void _sums(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                const floating[::1] mean, double[::1] sdy, double[::1] sdyx) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], c, n
    for c in prange(C, nogil=True, schedule="static", num_threads=threads_for(2 * N * C * HW)):
        sdy[c] = 0
        sdyx[c] = 0
        for n in range(N):
            if floating is float:
                _dsums_f(&dy[n, c, 0], &x[n, c, 0], HW, mean[c], &sdy[c], &sdyx[c])
            else:
                _dsums_d(&dy[n, c, 0], &x[n, c, 0], HW, mean[c], &sdy[c], &sdyx[c])


cdef void _dx(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
              const floating[::1] mean, const floating[::1] a, const floating[::1] b,
              const floating[::1] k, floating[:, :, ::1] dx) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], r, n, c
    for r in prange(N * C, nogil=True, schedule="static", num_threads=threads_for(3 * N * C * HW)):
        n = r // C
        c = r % C
        if floating is float:
            _dx_f(&dy[n, c, 0], &x[n, c, 0], &dx[n, c, 0], HW, mean[c], a[c], b[c], k[c])
        else:
            _dx_d(&dy[n, c, 0], &x[n, c, 0], &dx[n, c, 0], HW, mean[c], a[c], b[c], k[c])


def _rows(x, what):
    """x (N, C, H, W) as a contiguous (N, C, H*W) float32/float64 array."""
    if x.ndim != 4 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"batch norm kernels: {what} must be a 4-D float32/float64 array, "
                         f"got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    return x.reshape(x.shape[0], x.shape[1], -1)


def _vector(v, dtype):
    return np.ascontiguousarray(v, dtype=dtype)


def batchnorm_stats(x):
    """(mean, var) over (N, H, W) per channel, biased var, in x's dtype."""
    rows = _rows(x, "x")
    C = rows.shape[1]
    mean, var = np.empty(C), np.empty(C)
    if rows.dtype == np.float32:
        _stats[float](rows, mean, var)
    else:
        _stats[double](rows, mean, var)
    return mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_apply(x, scale, shift, relu=False):
    """y = x * scale_c + shift_c; with ``relu``, max(y, 0) (NaN kept) in the same pass."""
    rows = _rows(x, "x")
    y = np.empty_like(rows)
    scale, shift = _vector(scale, rows.dtype), _vector(shift, rows.dtype)
    if rows.dtype == np.float32:
        _apply[float](rows, scale, shift, y, relu)
    else:
        _apply[double](rows, scale, shift, y, relu)
    return y.reshape(x.shape)


def batchnorm_backward(dy, x, mean, invstd, gamma, train):
    """(dx, dgamma, dbeta); see the reference for the equations."""
    rows, drows = _rows(x, "x"), _rows(dy, "dy")
    if drows.shape != rows.shape or drows.dtype != rows.dtype:
        raise ValueError(f"batchnorm_backward: dy {dy.dtype} {dy.shape} does not match x "
                         f"{x.dtype} {x.shape}")
    dtype, (N, C, HW) = rows.dtype, rows.shape
    mean = _vector(mean, dtype)
    sdy, sdyx = np.empty(C), np.empty(C)
    if dtype == np.float32:
        _sums[float](drows, rows, mean, sdy, sdyx)
    else:
        _sums[double](drows, rows, mean, sdy, sdyx)
    invstd64 = np.asarray(invstd, dtype=np.float64)
    gamma64 = np.asarray(gamma, dtype=np.float64)
    dbeta, dgamma = sdy, sdyx * invstd64
    scale = gamma64 * invstd64
    M = N * HW
    if train:   # dx = scale * (dy - dbeta/M - xhat * dgamma/M), xhat = (x - mean) * invstd
        a, b, k = scale, -scale * invstd64 * dgamma / M, -scale * dbeta / M
    else:       # dx = scale * dy
        a, b, k = scale, np.zeros(C), np.zeros(C)
    dx = np.empty_like(rows)
    a, b, k = _vector(a, dtype), _vector(b, dtype), _vector(k, dtype)
    if dtype == np.float32:
        _dx[float](drows, rows, mean, a, b, k, dx)
    else:
        _dx[double](drows, rows, mean, a, b, k, dx)
    return dx.reshape(x.shape), dgamma.astype(dtype), dbeta.astype(dtype)
