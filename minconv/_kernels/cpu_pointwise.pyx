# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Convolutions as 1x1 products on register tiles, channels first (``_pointwise.h``).

    pointwise_matmul   out[n] = w @ x[n] (+ bias, ReLU)             a 1x1 convolution of a batch
    conv2d_shifted     y = conv(x, W), each tap (c, i, j) of the       the shifted path
                       padded input one input channel of a 1x1 product

Both sum every output channel in one order (identical filters give identical
outputs), store y where it lies with the bias and ReLU, and share the output positions
among the cores. Float32 where the tiles of :mod:`.cpu_tiles` run,
at its instruction-set level.
"""
cdef extern from "_pointwise.h" nogil:
    int mc_tiles_pointwise(int level, const float *w, Py_ssize_t F, Py_ssize_t C,
                           const float *x, Py_ssize_t ldx, Py_ssize_t p0, Py_ssize_t p1,
                           const float *bias, int relu, float *y, const float *z,
                           Py_ssize_t ldy)
    Py_ssize_t mc_pointwise_min_piece(int level, Py_ssize_t F, Py_ssize_t K)
    int mc_pointwise_blocked(Py_ssize_t F, Py_ssize_t K)
    enum: MC_PW_ROWS     # output channels of a tile

cdef extern from "_shifted.h" nogil:
    int mc_tiles_shifted(int level, const float *w, Py_ssize_t F, Py_ssize_t K,
                         const float *xp, const Py_ssize_t *offsets, Py_ssize_t row_step,
                         Py_ssize_t Wo, Py_ssize_t p0, Py_ssize_t p1, const float *bias,
                         int relu, float *y, Py_ssize_t ldy)

from cython.parallel cimport prange

from minconv._kernels._parallel cimport max_threads, piece_end

import numpy as np

from .cpu_layout import phased_padded
from .cpu_conv import _prepared_output
from .cpu_direct import _direct_operands
from .cpu_tiles import BAND_MIN_MACS, _fusing_level, isa


def pointwise_matmul(w, x, out, bias=None, bint relu=False, addend=None):
    """``out[n] = w @ x[n]`` (``+ bias[:, None]``, ``+ addend[n]``; ``max(., 0)`` with
    ``relu``) for every image n: a 1x1 convolution of a batch as the register tiles of
    ``_pointwise.h``, which sum every output channel in one order (identical filters give
    identical outputs), and add ``addend`` (a residual connection) as they store out.

    w (F, C), x (N, C, P), out (N, F, P): float32 with unit stride along the last axis;
    bias (F,) float32 or None; addend None or float32 of out's shape and strides. The
    cores split the N*P positions of the images laid side by side, each its own
    contiguous range. Float32 where the tiles run (:func:`fused_kernels`); returns out.
    """
    level = _fusing_level(np.float32)
    if level == 0:
        raise ValueError("pointwise_matmul: the tiles do not run on this CPU (isa 'none')")
    for name, a, ndim in (("w", w, 2), ("x", x, 3), ("out", out, 3)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != ndim or (
                a.size and a.strides[ndim - 1] != 4):
            raise ValueError(f"pointwise_matmul: {name} must be a {ndim}-D float32 array with "
                             f"unit stride along its last axis, got "
                             f"{getattr(a, 'dtype', type(a).__name__)} {np.shape(a)}")
    w = np.ascontiguousarray(w)
    cdef Py_ssize_t F = w.shape[0], C = w.shape[1], N = x.shape[0], P = x.shape[2]
    if x.shape[1] != C or out.shape != (N, F, P):
        raise ValueError(f"pointwise_matmul: w {w.shape} @ x {x.shape} does not give "
                         f"out {out.shape}")
    if bias is not None:
        bias = np.ascontiguousarray(bias)
        if bias.shape != (F,) or bias.dtype != np.float32:
            raise ValueError(f"pointwise_matmul: bias must be float32 ({F},), got "
                             f"{bias.dtype} {bias.shape}")
    if addend is not None and (not isinstance(addend, np.ndarray) or addend.dtype != np.float32
                               or addend.shape != out.shape or addend.strides != out.strides):
        raise ValueError(f"pointwise_matmul: addend must be float32 {out.shape} with out's "
                         f"strides {out.strides}, got {getattr(addend, 'dtype', None)} "
                         f"{np.shape(addend)} {getattr(addend, 'strides', None)}")
    if out.size == 0:
        return out
    if C == 0:
        out[...] = 0 if bias is None else bias[:, None]
        if addend is not None:
            out += addend
        if relu:
            np.maximum(out, 0, out=out)
        return out
    if _pointwise(level, w, x, out, bias, relu, addend) != 0:
        raise MemoryError("pointwise_matmul: out of memory for a panel of the positions")
    return out


cdef class PreparedPointwise:
    """:func:`pointwise_matmul` for inputs of one shape, its operands checked once: a call
    checks only its input and output (a net's forward product at batch 1 runs in tens of
    microseconds, of which the checks were several).

    w (F, C) float32, bias (F,) float32 or None, x_shape (N, C, H, W); ``relu`` as for
    :func:`pointwise_matmul`. ``run(x, out)`` -> y (N, F, H, W), out when given: y[n] =
    w @ x[n] (+ bias, ReLU) over the H*W positions; None where x is not a C-contiguous
    float32 ndarray of x_shape, or out not a float32 array of y's shape with each image's
    maps contiguous (the caller then takes the general path).
    """
    cdef readonly tuple x_shape, y_shape
    cdef const float[:, ::1] w
    cdef const float[::1] bias
    cdef bint relu
    cdef int level
    cdef Py_ssize_t P

    def __init__(self, w, x_shape, bias=None, relu=False):
        self.level = _fusing_level(np.float32)
        if self.level == 0:
            raise ValueError("PreparedPointwise: the tiles do not run on this CPU (isa 'none')")
        if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.ndim != 2:
            raise ValueError(f"PreparedPointwise: w must be a float32 (F, C) array, got "
                             f"{getattr(w, 'dtype', type(w).__name__)} {np.shape(w)}")
        x_shape = tuple(int(v) for v in x_shape)
        if len(x_shape) != 4 or x_shape[1] != w.shape[1] or min(x_shape) < 1 or w.shape[0] < 1:
            raise ValueError(f"PreparedPointwise: input shape {x_shape} does not fit w "
                             f"{w.shape} (N, C, H, W, none of them 0)")
        if bias is not None and (not isinstance(bias, np.ndarray) or bias.dtype != np.float32
                                 or bias.shape != (w.shape[0],)):
            raise ValueError(f"PreparedPointwise: bias must be float32 ({w.shape[0]},), got "
                             f"{getattr(bias, 'dtype', type(bias).__name__)} {np.shape(bias)}")
        self.w = np.ascontiguousarray(w)
        self.bias = None if bias is None else np.ascontiguousarray(bias)
        self.relu = relu
        self.x_shape = x_shape
        self.y_shape = (x_shape[0], w.shape[0], x_shape[2], x_shape[3])
        self.P = x_shape[2] * x_shape[3]

    def run(self, x, out=None):
        out = _prepared_output(x, self.x_shape, out, self.y_shape, False)
        if out is None:
            return None
        cdef const float[:, :, :, ::1] xv = x
        cdef float[:, :, :, :] yv = out            # each image's maps contiguous (checked)
        if _tiles_over_positions(self.level, False, self.w, &xv[0, 0, 0, 0],
                                 xv.strides[0] // 4, self.P, NULL, 0, 1, self.bias, self.relu,
                                 &yv[0, 0, 0, 0], NULL, yv.strides[0] // 4, self.P,
                                 xv.shape[0], self.P) != 0:
            raise MemoryError("PreparedPointwise: out of memory for a panel of the positions")
        return out


cdef int _pointwise(int level, const float[:, ::1] w, const float[:, :, :] x,
                    float[:, :, :] out, const float[::1] bias, bint relu,
                    const float[:, :, :] addend) noexcept:
    cdef const float *z = NULL
    if addend is not None:
        z = &addend[0, 0, 0]
    return _tiles_over_positions(level, False, w, &x[0, 0, 0], x.strides[0] // 4,
                                 x.strides[1] // 4, NULL, 0, 1, bias, relu, &out[0, 0, 0], z,
                                 out.strides[0] // 4, out.strides[1] // 4, x.shape[0],
                                 x.shape[2])


def _image_maps(out, shape, op):
    """``out`` checked as a float32 array of ``shape`` whose images' maps are each contiguous
    (it may be a slice of a larger array's channels); a fresh array when None."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    N, F, Ho, Wo = shape
    if (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape
            or (out.size and out.strides[1:] != (Ho * Wo * 4, Wo * 4, 4))):
        raise ValueError(f"{op}: out must be a float32 array of shape {shape} with each "
                         f"image's maps contiguous, got {getattr(out, 'dtype', type(out).__name__)} "
                         f"{np.shape(out)}")
    return out


def conv2d_shifted(x, W, bias, stride, padding, dilation, relu=False, out=None):
    """A convolution as shifted 1x1 products, channels first: each tap (c, i, j) of the
    padded input, shifted by ``i*dh`` rows and ``j*dw`` columns, is one input channel of a
    1x1 product (``_shifted.h``'s ``mc_tiles_shifted``), so the image is never moved to
    channels last and y is written in place, the bias and ``relu`` applied as each tile
    is stored. At a width stride sw > 1 the padded input is first split into sw column
    phases (:func:`~.cpu_layout.phased_padded`), in which each tap's columns are again
    neighbours.

    x : (N, C, H, W) float32, W : (F, C, kh, kw) float32, bias : (F,) or None
    -> y : (N, F, Ho, Wo), ``out`` when given (float32, each image's maps contiguous: a
    slice of a larger array's channels will do). Where the tiles run (:func:`fused_kernels`).
    """
    x, F, C, kh, kw, geometry = _direct_operands("conv2d_shifted", x, np.shape(W), stride,
                                                 padding, dilation)
    N, _, H, Wd, sh, sw, ph, pw, dh, dw, Ho, Wo = geometry
    level = _fusing_level(x.dtype)
    if level == 0:
        raise ValueError(f"conv2d_shifted: the tiles take float32 (isa {isa()!r}, {x.dtype})")
    W = np.ascontiguousarray(W)
    if W.dtype != np.float32 or (bias is not None and np.asarray(bias).dtype != np.float32):
        raise ValueError("conv2d_shifted: weight and bias must be float32")
    y = _image_maps(out, (N, F, Ho, Wo), "conv2d_shifted")
    if y.size == 0:
        return y
    xq = phased_padded(x, ph, pw, sw)                                 # (N, C, Hp, sw, Wq)
    Hp, Wq = xq.shape[2], xq.shape[4]
    row = sw * Wq                                                 # one padded row, all phases
    c, i, j = (a.reshape(-1) for a in np.meshgrid(np.arange(C), np.arange(kh), np.arange(kw),
                                                  indexing="ij"))
    offsets = (c * (Hp * row) + i * dh * row + (j * dw) % sw * Wq
               + (j * dw) // sw).astype(np.intp)
    b = None if bias is None else np.ascontiguousarray(bias)
    if _shifted(level, W.reshape(F, C * kh * kw), xq.reshape(N, C, Hp, row), offsets,
                sh * row, b, relu, y) != 0:
        raise MemoryError("conv2d_shifted: out of memory for a panel of the taps")
    return y


cdef int _shifted(int level, const float[:, ::1] w, const float[:, :, :, ::1] xp,
                  const Py_ssize_t[::1] offsets, Py_ssize_t row_step, const float[::1] bias,
                  bint relu, float[:, :, :, :] y) noexcept:
    return _tiles_over_positions(level, True, w, &xp[0, 0, 0, 0], xp.strides[0] // 4, 0,
                                 &offsets[0], row_step, y.shape[3], bias, relu, &y[0, 0, 0, 0],
                                 NULL, y.strides[0] // 4, y.strides[1] // 4, y.shape[0],
                                 y.shape[2] * y.shape[3])


# Pieces of a product's positions per thread, taken in turn as threads come free: the
# cores of a shared machine run at unequal speeds, and with one contiguous share each the
# faster waited for the slower.
PIECES_PER_THREAD = 8
# A 1x1 product of one image whose weights are swept in blocks (larger than the L2 share
# the tiles give them) is cut by output channels instead, this many shares a thread, each
# over all the positions: each core then reads its share of the weights once, where
# pieces of positions each read all of them (ResNet-50's 1024 -> 256 on 14x14: 1 MB of
# weights for each of 5 pieces of 48 positions). At batch 1, one share a thread: resnet50
# 0.954 of the pass, squeezenet 0.972 (its 512 -> 1000 on 13x13), densenet121 0.986,
# inception_v1 0.987; two a thread 1.01, four 1.04 of that on resnet50.
FILTER_SHARES_PER_THREAD = 1


cdef int _tiles_over_positions(int level, bint shifted, const float[:, ::1] w, const float *x,
                               Py_ssize_t x_image, Py_ssize_t ldx, const Py_ssize_t *offsets,
                               Py_ssize_t row_step, Py_ssize_t Wo, const float[::1] bias,
                               bint relu, float *y, const float *z, Py_ssize_t y_image,
                               Py_ssize_t ldy, Py_ssize_t N, Py_ssize_t P) noexcept:
    """The tiles over the P output positions of each of N images laid side by side, cut
    into pieces (up to PIECES_PER_THREAD a thread, none smaller than
    mc_pointwise_min_piece but for one a thread) that the threads take in turn as they
    come free, each piece cut again where an image ends; a 1x1 product of one image whose
    weights are swept in blocks is cut by output channels instead (FILTER_SHARES_PER_THREAD
    shares a thread, each over every position). Each piece is the 1x1 product of image n's
    (K, P) matrix at x + n*x_image (rows ldx apart), or, ``shifted``, the shifted products
    of its padded image there (taps at ``offsets``; strips cross output rows, so none is
    left short at a row's end). y's image n at y + n*y_image, rows ldy apart; z (NULL or
    laid out as y) added to it.
    Returns -1 when a thread ran out of memory for its panels, else 0."""
    cdef Py_ssize_t F = w.shape[0], K = w.shape[1], total = N * P, per, lo, hi, at, n, p0, p1
    cdef Py_ssize_t pieces, piece
    cdef const float *b = NULL
    cdef int threads = max_threads() if N * F * K * P >= BAND_MIN_MACS else 1
    cdef int status = 0
    cdef int *failed = &status  # written through a pointer: shared by the threads
    if bias is not None:
        b = &bias[0]
    cdef Py_ssize_t width = 64 if level == 2 else 16     # a strip's positions
    cdef Py_ssize_t shares = FILTER_SHARES_PER_THREAD * threads, rows_per, f0
    if (threads > 1 and shares > 0 and not shifted and N == 1 and mc_pointwise_blocked(F, K)
            and F >= 2 * MC_PW_ROWS * shares):
        # whole tiles of output channels a share (each output's sum is the same whatever
        # tile holds it)
        rows_per = ((F + MC_PW_ROWS - 1) // MC_PW_ROWS + shares - 1) // shares * MC_PW_ROWS
        shares = (F + rows_per - 1) // rows_per
        for piece in prange(shares, num_threads=threads, schedule="dynamic", nogil=True):
            f0 = piece * rows_per
            if mc_tiles_pointwise(level, &w[f0, 0], min(F, f0 + rows_per) - f0, K, x, ldx, 0,
                                  P, b + f0 if b != NULL else NULL, relu, y + f0 * ldy,
                                  z + f0 * ldy if z != NULL else NULL, ldy) != 0:
                failed[0] = -1
        return status
    per = total
    if threads > 1:
        # a multiple of the threads, as many as pieces of the fewest positions allow (one
        # a thread at least), whole strips each: ResNet-50's 1x1 layers at 7x7 (49
        # positions, weights swept in blocks of 96) in two pieces, not one
        pieces = total // (threads * mc_pointwise_min_piece(level, F, K))
        pieces = threads * max(1, min(PIECES_PER_THREAD, pieces))
        per = ((total + width - 1) // width + pieces - 1) // pieces * width
    pieces = (total + per - 1) // per
    for piece in prange(pieces, num_threads=threads, schedule="dynamic", nogil=True):
        lo = piece * per
        hi = min(total, lo + per)
        at = lo
        while at < hi:
            n = at // P
            p0 = at - n * P
            p1 = p0 + piece_end(at, hi, P) - at
            if shifted:
                if mc_tiles_shifted(level, &w[0, 0], F, K, x + n * x_image, offsets, row_step,
                                    Wo, p0, p1, b, relu, y + n * y_image, ldy) != 0:
                    failed[0] = -1
            elif mc_tiles_pointwise(level, &w[0, 0], F, K, x + n * x_image, ldx, p0, p1, b,
                                    relu, y + n * y_image,
                                    z + n * y_image if z != NULL else NULL, ldy) != 0:
                failed[0] = -1
            at = at + p1 - p0
    return status
