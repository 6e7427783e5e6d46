# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The ReLU's gradient in Cython: the twin of :func:`minconv._kernels.reference.relu_backward`.

    dx = dy where x > 0, else 0

One pass over dy and x that writes dx, split among the cores; NumPy's
``dy * (x > 0)`` makes a mask array first and reads it back, which on the
first layers' activations (tens of MB, out of cache) costs as much again.
"""
from cython cimport floating
from cython.parallel cimport prange

from minconv._kernels._parallel cimport threads_for

import numpy as np

cdef extern from *:
    """
    /* plain C loops that read dy unconditionally and pick, which compilers turn
       into vector blends (a branch on the sign of x would be mispredicted half
       the time, and a load under a condition is not vectorised) */
    static void minconv_pass_where_positive_f(const float *dy, const float *x, float *dx,
                                              Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            const float d = dy[i];
            dx[i] = x[i] > 0.0f ? d : 0.0f;
        }
    }
    static void minconv_pass_where_positive_d(const double *dy, const double *x, double *dx,
                                              Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            const double d = dy[i];
            dx[i] = x[i] > 0.0 ? d : 0.0;
        }
    }
    """
    void _pass_f "minconv_pass_where_positive_f"(const float *dy, const float *x, float *dx,
                                                 Py_ssize_t n) nogil
    void _pass_d "minconv_pass_where_positive_d"(const double *dy, const double *x, double *dx,
                                                 Py_ssize_t n) nogil

cdef enum:
    BLOCK = 16384   # elements a thread takes at a time


cdef void _pass_where_positive(const floating[::1] dy, const floating[::1] x,
                               floating[::1] dx) noexcept:
    cdef Py_ssize_t b, start, n = dx.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK, nogil=True, schedule="static",
                    num_threads=threads_for(3 * n)):
        start = b * BLOCK
        if floating is float:
            _pass_f(&dy[start], &x[start], &dx[start], min(BLOCK, n - start))
        else:
            _pass_d(&dy[start], &x[start], &dx[start], min(BLOCK, n - start))


def relu_backward(dy, x):
    """The ReLU's true gradient: dy, x (any shape, float32 or float64) -> dx, x's shape.

    ``x`` may be the ReLU's input or its output: both are positive at the same places.
    """
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
    if dy.shape != x.shape or dy.dtype != x.dtype or dy.dtype not in (np.float32, np.float64):
        raise ValueError(f"relu_backward: dy and x must be float32 or float64 arrays of one "
                         f"shape and dtype, got {dy.dtype} {dy.shape} and {x.dtype} {x.shape}")
    dx = np.empty_like(dy)
    if dx.size:
        if dx.dtype == np.float32:
            _pass_where_positive[float](dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
        else:
            _pass_where_positive[double](dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx
