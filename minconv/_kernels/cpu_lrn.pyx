# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Local response normalisation across channels in Cython: twins of the reference.

    x, y, scale : (N, C, H, W)

        scale_c = k + alpha/size * sum_{c' in window(c)} x_c'^2
        y_c     = x_c * scale_c^(-beta)
        dx_i    = dy_i * scale_i^(-beta)
                  - 2*alpha*beta/size * x_i * sum_{j : i in window(j)} dy_j * y_j / scale_j

with window(c) = [c - size//2, c + (size-1)//2], zero outside the channels.

Each image is cut into chunks of ``CHUNK`` spatial positions; a thread takes a
whole (n, chunk) block and walks its channels, so the inner loops run over
contiguous positions (vectorised) and the window rows stay in L1. The window
sums add the few taps directly in channel order rather than keeping a running
sum: that is as cheap for size ~5, never cancels, and rounds like the reference.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.math cimport sqrt, sqrtf, pow, powf
from libc.stdlib cimport malloc, free

from minconv._kernels._parallel cimport threads_for

import numpy as np

cdef enum:
    CHUNK = 512


cdef inline void _pow_neg(const floating *s, floating *out, Py_ssize_t m,
                          floating beta) noexcept nogil:
    """out = s^(-beta); beta = 0.75 (Caffe/ZFNet), 0.5 and 1 avoid pow."""
    cdef Py_ssize_t p
    cdef floating r
    if beta == 0.75:
        for p in range(m):
            if floating is float:
                r = 1 / sqrtf(s[p])
                out[p] = r * sqrtf(r)
            else:
                r = 1 / sqrt(s[p])
                out[p] = r * sqrt(r)
    elif beta == 0.5:
        for p in range(m):
            if floating is float:
                out[p] = 1 / sqrtf(s[p])
            else:
                out[p] = 1 / sqrt(s[p])
    elif beta == 1:
        for p in range(m):
            out[p] = 1 / s[p]
    else:
        for p in range(m):
            if floating is float:
                out[p] = powf(s[p], -beta)
            else:
                out[p] = pow(s[p], -beta)


cdef void _lrn_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                       floating[:, :, ::1] scale, Py_ssize_t size, floating coef,
                       floating k, floating beta) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2]
    cdef Py_ssize_t chunks = (HW + CHUNK - 1) // CHUNK
    cdef Py_ssize_t before = size // 2, after = (size - 1) // 2
    cdef Py_ssize_t t, n, p0, m, c, cc, lo, hi, p
    cdef floating *s
    cdef floating *yr
    cdef const floating *a
    for t in prange(N * chunks, nogil=True, schedule="guided",
                    num_threads=threads_for(N * C * HW * size)):
        n = t // chunks
        p0 = (t % chunks) * CHUNK
        m = HW - p0 if HW - p0 < CHUNK else CHUNK
        for c in range(C):
            lo = c - before if c >= before else 0
            hi = c + after if c + after < C else C - 1
            s = &scale[n, c, p0]
            for p in range(m):
                s[p] = 0
            for cc in range(lo, hi + 1):
                a = &x[n, cc, p0]
                for p in range(m):
                    s[p] += a[p] * a[p]
            for p in range(m):
                s[p] = s[p] * coef + k
            yr = &y[n, c, p0]
            a = &x[n, c, p0]
            _pow_neg(s, yr, m, beta)
            for p in range(m):
                yr[p] = a[p] * yr[p]


cdef Py_ssize_t _lrn_backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                        const floating[:, :, ::1] y, const floating[:, :, ::1] scale,
                        floating[:, :, ::1] dx, Py_ssize_t size, floating coef2,
                        floating beta) noexcept:
    """Writes dx; returns how many blocks found no scratch memory (then dx is incomplete)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2]
    cdef Py_ssize_t chunks = (HW + CHUNK - 1) // CHUNK
    cdef Py_ssize_t failed = 0
    # channel i collects the ratios of every j whose window holds i: the mirrored window
    cdef Py_ssize_t before = (size - 1) // 2, after = size // 2
    cdef Py_ssize_t t, n, p0, m, c, cc, lo, hi, p, ready
    cdef floating *ring = NULL  # ratio rows dy*y/scale of the last `size` channels
    cdef floating *back = NULL  # their window sum for the current channel
    cdef floating *r
    cdef const floating *a
    cdef const floating *b
    cdef const floating *d
    cdef floating *out
    with nogil, parallel(num_threads=threads_for(N * C * HW * size)):
        ring = <floating *> malloc((size + 1) * CHUNK * sizeof(floating))
        back = ring + size * CHUNK
        for t in prange(N * chunks, schedule="guided"):
            n = t // chunks
            p0 = (t % chunks) * CHUNK
            m = HW - p0 if HW - p0 < CHUNK else CHUNK
            if ring == NULL:
                failed += 1
                continue
            ready = 0                      # ratio rows computed so far
            for c in range(C):
                lo = c - before if c >= before else 0
                hi = c + after if c + after < C else C - 1
                while ready <= hi:
                    r = ring + (ready % size) * CHUNK
                    d = &dy[n, ready, p0]
                    a = &y[n, ready, p0]
                    b = &scale[n, ready, p0]
                    for p in range(m):
                        r[p] = d[p] * a[p] / b[p]
                    ready = ready + 1
                for p in range(m):
                    back[p] = 0
                for cc in range(lo, hi + 1):
                    r = ring + (cc % size) * CHUNK
                    for p in range(m):
                        back[p] += r[p]
                out = &dx[n, c, p0]
                _pow_neg(&scale[n, c, p0], out, m, beta)
                d = &dy[n, c, p0]
                a = &x[n, c, p0]
                for p in range(m):
                    out[p] = d[p] * out[p] - coef2 * a[p] * back[p]
        free(ring)
    return failed


def _prepare(arrays, what):
    arrays = [np.ascontiguousarray(a) for a in arrays]
    first = arrays[0]
    if first.ndim != 4 or first.dtype not in (np.float32, np.float64):
        raise ValueError(f"{what}: expected a float32/float64 (N, C, H, W) array, "
                         f"got {first.dtype} {first.shape}")
    for a in arrays[1:]:
        if a.shape != first.shape or a.dtype != first.dtype:
            raise ValueError(f"{what}: arrays differ: {[(b.dtype, b.shape) for b in arrays]}")
    return arrays


def lrn_forward(x, size, alpha, beta, k):
    """Cross-channel LRN. x : (N, C, H, W)  ->  (y, scale), both (N, C, H, W)."""
    x, = _prepare([x], "lrn_forward")
    size = int(size)
    if size < 1:
        raise ValueError(f"lrn_forward: size must be >= 1, got {size}")
    N, C, H, W = x.shape
    y = np.empty_like(x)
    scale = np.empty_like(x)
    shape3 = (N, C, H * W)
    if x.dtype == np.float32:
        _lrn_forward[float](x.reshape(shape3), y.reshape(shape3), scale.reshape(shape3),
                            size, alpha / size, k, beta)
    else:
        _lrn_forward[double](x.reshape(shape3), y.reshape(shape3), scale.reshape(shape3),
                             size, alpha / size, k, beta)
    return y, scale


def lrn_backward(dy, x, y, scale, size, alpha, beta):
    """Gradient of :func:`lrn_forward`. dy, x, y, scale : (N, C, H, W)  ->  dx (N, C, H, W)."""
    dy, x, y, scale = _prepare([dy, x, y, scale], "lrn_backward")
    size = int(size)
    if size < 1:
        raise ValueError(f"lrn_backward: size must be >= 1, got {size}")
    N, C, H, W = x.shape
    dx = np.empty_like(x)
    shape3 = (N, C, H * W)
    args = (dy.reshape(shape3), x.reshape(shape3), y.reshape(shape3),
            scale.reshape(shape3), dx.reshape(shape3), size, 2.0 * alpha * beta / size, beta)
    if x.dtype == np.float32:
        failed = _lrn_backward[float](*args)
    else:
        failed = _lrn_backward[double](*args)
    if failed:
        raise MemoryError("lrn_backward: no memory for the per-thread scratch rows")
    return dx
