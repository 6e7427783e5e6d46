# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Winograd F(2x2, 3x3) transforms in C: twins of :mod:`minconv._kernels.reference_winograd`.

    winograd_weights(W, transposed=False)   (F, C, 3, 3) -> U (16, C, F)  [(16, F, C)]
    winograd_tiles(x, padding, out)         (N, C, H, W) -> V (16, P, C)
    winograd_output(M, N, Ho, Wo, bias)     (16, P, F)   -> y (N, F, Ho, Wo)
    winograd_grad_tiles(dy, out)            (N, F, Ho, Wo) -> dM (16, P, F)
    winograd_weight_grad(dU)                (16, C, F)   -> dW (F, C, 3, 3)

The input goes channels last first (``padded_channels_last``) and the output comes back
from channels last (``channels_first``): in between, every transform reads and writes
runs of contiguous channels. Tiles (and the weights' input channels) are shared among
the OpenMP threads.
"""
from cython cimport floating
from cython.parallel cimport prange

from minconv._kernels._parallel cimport threads_for

import numpy as np

from .cpu_conv import _unfold_target, _written_into
from .cpu_layout import channels_first, padded_channels_last, reversed_axes
from .reference_winograd import winograd_tile_counts

cdef extern from "_winograd.h" nogil:
    void mc_wg_tiles_f32(const float *xt, const float *zeros, Py_ssize_t Hp, Py_ssize_t Wp,
                         Py_ssize_t C, Py_ssize_t th, Py_ssize_t tw, Py_ssize_t P,
                         Py_ssize_t p_start, Py_ssize_t p_stop, float *V)
    void mc_wg_tiles_f64(const double *xt, const double *zeros, Py_ssize_t Hp, Py_ssize_t Wp,
                         Py_ssize_t C, Py_ssize_t th, Py_ssize_t tw, Py_ssize_t P,
                         Py_ssize_t p_start, Py_ssize_t p_stop, double *V)
    void mc_wg_output_f32(const float *M, const float *bias, float *sink, Py_ssize_t Ho,
                          Py_ssize_t Wo, Py_ssize_t F, Py_ssize_t th, Py_ssize_t tw,
                          Py_ssize_t P, Py_ssize_t p_start, Py_ssize_t p_stop, float *yt)
    void mc_wg_output_f64(const double *M, const double *bias, double *sink, Py_ssize_t Ho,
                          Py_ssize_t Wo, Py_ssize_t F, Py_ssize_t th, Py_ssize_t tw,
                          Py_ssize_t P, Py_ssize_t p_start, Py_ssize_t p_stop, double *yt)
    void mc_wg_weights_f32(const float *W, Py_ssize_t lane_step, int flipped,
                           Py_ssize_t lanes, Py_ssize_t plane, float *U)
    void mc_wg_weights_f64(const double *W, Py_ssize_t lane_step, int flipped,
                           Py_ssize_t lanes, Py_ssize_t plane, double *U)
    void mc_wg_grad_tiles_f32(const float *dyt, const float *zeros, Py_ssize_t Ho,
                              Py_ssize_t Wo, Py_ssize_t F, Py_ssize_t th, Py_ssize_t tw,
                              Py_ssize_t P, Py_ssize_t p_start, Py_ssize_t p_stop, float *dM)
    void mc_wg_grad_tiles_f64(const double *dyt, const double *zeros, Py_ssize_t Ho,
                              Py_ssize_t Wo, Py_ssize_t F, Py_ssize_t th, Py_ssize_t tw,
                              Py_ssize_t P, Py_ssize_t p_start, Py_ssize_t p_stop, double *dM)
    void mc_wg_weight_grad_f32(const float *dU, Py_ssize_t plane, Py_ssize_t start,
                               Py_ssize_t stop, float *taps)
    void mc_wg_weight_grad_f64(const double *dU, Py_ssize_t plane, Py_ssize_t start,
                               Py_ssize_t stop, double *taps)


def _float_array(a, what, ndim):
    a = np.ascontiguousarray(a)
    if a.ndim != ndim or a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{what} must be a {ndim}-D float32 or float64 array, got "
                         f"{a.dtype} {a.shape}")
    return a


cdef inline Py_ssize_t _bound(Py_ssize_t total, int parts, int part) noexcept nogil:
    return total * part // parts


cdef void _tiles(const floating[:, :, :, ::1] xt, const floating[::1] zeros, Py_ssize_t th,
                 Py_ssize_t tw, floating[:, :, ::1] V) noexcept nogil:
    cdef Py_ssize_t P = V.shape[1], C = V.shape[2]
    cdef int parts = threads_for(16 * P * C), part
    for part in prange(parts, num_threads=parts, schedule="static"):
        if floating is float:
            mc_wg_tiles_f32(&xt[0, 0, 0, 0], &zeros[0], xt.shape[1], xt.shape[2], C, th, tw,
                            P, _bound(P, parts, part), _bound(P, parts, part + 1), &V[0, 0, 0])
        else:
            mc_wg_tiles_f64(&xt[0, 0, 0, 0], &zeros[0], xt.shape[1], xt.shape[2], C, th, tw,
                            P, _bound(P, parts, part), _bound(P, parts, part + 1), &V[0, 0, 0])


def winograd_tiles(x, padding, out=None):
    """V (16, P, C): the transformed 4x4 input tiles B^T d B of x (N, C, H, W) padded by
    ``padding`` (ph, pw), one row per 2x2 output block p; ``out`` when given."""
    x = _float_array(x, "winograd_tiles: input", 4)
    N, C, H, W = x.shape
    ph, pw = (int(v) for v in padding)
    th, tw = winograd_tile_counts(H + 2 * ph - 2, W + 2 * pw - 2)
    if th < 1 or tw < 1 or C == 0:
        raise ValueError(f"winograd_tiles: no 3x3 output for input {x.shape} with padding "
                         f"{(ph, pw)}")
    V = _unfold_target(out, (16, N * th * tw, C), x, "winograd_tiles")
    if V.size:
        if x.dtype == np.float32:
            _tiles[float](padded_channels_last(x, ph, pw), np.zeros(C, x.dtype), th, tw, V)
        else:
            _tiles[double](padded_channels_last(x, ph, pw), np.zeros(C, x.dtype), th, tw, V)
    return _written_into(V, out)


cdef void _output(const floating[:, :, ::1] M, const floating[::1] bias,
                  floating[:, ::1] sinks, Py_ssize_t th, Py_ssize_t tw,
                  floating[:, :, :, ::1] yt) noexcept nogil:
    cdef Py_ssize_t P = M.shape[1], F = M.shape[2]
    cdef int parts = sinks.shape[0], part
    for part in prange(parts, num_threads=parts, schedule="static"):
        if floating is float:
            mc_wg_output_f32(&M[0, 0, 0], &bias[0], &sinks[part, 0], yt.shape[1], yt.shape[2],
                             F, th, tw, P, _bound(P, parts, part), _bound(P, parts, part + 1),
                             &yt[0, 0, 0, 0])
        else:
            mc_wg_output_f64(&M[0, 0, 0], &bias[0], &sinks[part, 0], yt.shape[1], yt.shape[2],
                             F, th, tw, P, _bound(P, parts, part), _bound(P, parts, part + 1),
                             &yt[0, 0, 0, 0])


def winograd_output(M, N, Ho, Wo, bias=None):
    """y (N, F, Ho, Wo) from the products M (16, P, F): each tile's 2x2 block A^T M_p A,
    cropped to the map, plus ``bias`` (F,)."""
    M = _float_array(M, "winograd_output: M", 3)
    N, Ho, Wo = int(N), int(Ho), int(Wo)
    th, tw = winograd_tile_counts(Ho, Wo)
    F = M.shape[2]
    if M.shape[:2] != (16, N * th * tw):
        raise ValueError(f"winograd_output: M {M.shape} does not hold (16, {N * th * tw}, F) "
                         f"products for {N} maps of {Ho}x{Wo}")
    if bias is None:
        bias = np.zeros(F, M.dtype)
    bias = np.ascontiguousarray(bias, dtype=M.dtype)
    if bias.shape != (F,):
        raise ValueError(f"winograd_output: bias must be ({F},), got {bias.shape}")
    yt = np.empty((N, Ho, Wo, F), dtype=M.dtype)
    if yt.size:
        sinks = np.empty((threads_for(16 * M.shape[1] * F), F), dtype=M.dtype)  # cropped outputs
        if M.dtype == np.float32:
            _output[float](M, bias, sinks, th, tw, yt)
        else:
            _output[double](M, bias, sinks, th, tw, yt)
    return channels_first(yt)


cdef void _weights(const floating[:, :, ::1] W, bint transposed,
                   floating[:, :, ::1] U) noexcept nogil:
    """Row r of U's planes from W (F, C, 9): input channel r's filters (U (16, C, F)),
    or for C^T output channel r's, flipped (U (16, F, C))."""
    cdef Py_ssize_t F = W.shape[0], C = W.shape[1], r
    cdef Py_ssize_t rows = F if transposed else C
    cdef Py_ssize_t lanes = C if transposed else F
    cdef Py_ssize_t row_step = C * 9 if transposed else 9
    cdef Py_ssize_t lane_step = 9 if transposed else C * 9
    for r in prange(rows, num_threads=threads_for(25 * F * C), schedule="static"):
        if floating is float:
            mc_wg_weights_f32(&W[0, 0, 0] + r * row_step, lane_step, transposed, lanes,
                              F * C, &U[0, r, 0])
        else:
            mc_wg_weights_f64(&W[0, 0, 0] + r * row_step, lane_step, transposed, lanes,
                              F * C, &U[0, r, 0])


def winograd_weights(W, transposed=False):
    """U (16, C, F) = G W[f, c] G^T from W (F, C, 3, 3); ``transposed``: the flipped
    filters of C^T as U (16, F, C).

    Each thread takes rows of U (input channels, or output channels for C^T) and
    reads their filters' taps straight from W."""
    W = _float_array(W, "winograd_weights: weight", 4)
    if W.shape[2:] != (3, 3):
        raise ValueError(f"winograd_weights: F(2x2, 3x3) takes 3x3 filters, got {W.shape}")
    F, C = W.shape[:2]
    U = np.empty((16, F, C) if transposed else (16, C, F), dtype=W.dtype)
    if U.size:
        taps = W.reshape(F, C, 9)
        if W.dtype == np.float32:
            _weights[float](taps, bool(transposed), U)
        else:
            _weights[double](taps, bool(transposed), U)
    return U


cdef void _grad_tiles(const floating[:, :, :, ::1] dyt, const floating[::1] zeros,
                      Py_ssize_t th, Py_ssize_t tw, floating[:, :, ::1] dM) noexcept nogil:
    cdef Py_ssize_t P = dM.shape[1], F = dM.shape[2]
    cdef int parts = threads_for(16 * P * F), part
    for part in prange(parts, num_threads=parts, schedule="static"):
        if floating is float:
            mc_wg_grad_tiles_f32(&dyt[0, 0, 0, 0], &zeros[0], dyt.shape[1], dyt.shape[2], F,
                                 th, tw, P, _bound(P, parts, part), _bound(P, parts, part + 1),
                                 &dM[0, 0, 0])
        else:
            mc_wg_grad_tiles_f64(&dyt[0, 0, 0, 0], &zeros[0], dyt.shape[1], dyt.shape[2], F,
                                 th, tw, P, _bound(P, parts, part), _bound(P, parts, part + 1),
                                 &dM[0, 0, 0])


def winograd_grad_tiles(dy, out=None):
    """dM (16, P, F): A dY A^T for the 2x2 block dY of dy (N, F, Ho, Wo) under each tile p
    (zero past the map's edge): the products' gradient, for the weight gradient; ``out``
    when given."""
    dy = _float_array(dy, "winograd_grad_tiles: dy", 4)
    N, F, Ho, Wo = dy.shape
    th, tw = winograd_tile_counts(Ho, Wo)
    dM = _unfold_target(out, (16, N * th * tw, F), dy, "winograd_grad_tiles")
    if dM.size:
        if dy.dtype == np.float32:
            _grad_tiles[float](padded_channels_last(dy, 0, 0), np.zeros(F, dy.dtype), th, tw,
                               dM)
        else:
            _grad_tiles[double](padded_channels_last(dy, 0, 0), np.zeros(F, dy.dtype), th, tw,
                                dM)
    return _written_into(dM, out)


cdef void _weight_grad(const floating[:, ::1] dU, floating[:, ::1] taps) noexcept nogil:
    cdef Py_ssize_t plane = dU.shape[1]
    cdef int parts = threads_for(25 * plane), part
    for part in prange(parts, num_threads=parts, schedule="static"):
        if floating is float:
            mc_wg_weight_grad_f32(&dU[0, 0], plane, _bound(plane, parts, part),
                                  _bound(plane, parts, part + 1), &taps[0, 0])
        else:
            mc_wg_weight_grad_f64(&dU[0, 0], plane, _bound(plane, parts, part),
                                  _bound(plane, parts, part + 1), &taps[0, 0])


def winograd_weight_grad(dU):
    """dW (F, C, 3, 3) = G^T dU_{c,f} G from dU (16, C, F): nine tap planes first, then
    the filters' layout."""
    dU = _float_array(dU, "winograd_weight_grad: dU", 3)
    if dU.shape[0] != 16:
        raise ValueError(f"winograd_weight_grad: dU must be (16, C, F), got {dU.shape}")
    C, F = dU.shape[1:]
    taps = np.empty((9, C * F), dtype=dU.dtype)
    if taps.size:
        if dU.dtype == np.float32:
            _weight_grad[float](dU.reshape(16, C * F), taps)
        else:
            _weight_grad[double](dU.reshape(16, C * F), taps)
    return reversed_axes(taps.reshape(9, C, F)).reshape(F, C, 3, 3)
