# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The direct tiles: a convolution of an input of few channels (a first layer on grey or
colour images) summed tap by tap, channels first (``_direct_avx512.h``,
``_direct_avx2.h``: a row's outputs to a vector; ``_direct_filters_avx2.h``: filters to a
vector, for rows that fill vectors badly), and the same with the max pooling that follows
it made band by band (``_direct_maxpool.h``).

    conv2d_direct              y = conv(x, W) + b (max(., 0) with relu)     the reference's twin
    conv2d_direct_weight_grad  dW of it (width stride 1)
    conv2d_direct_maxpool      maxpool(conv(x, W) + b), the convolution's output never formed

Float32 where the tiles of :mod:`.cpu_tiles` run, at its instruction-set level; otherwise
the reference computes them (``conv2d_direct_maxpool``: an error). They run on the
calling thread, but for a batch smaller than the OpenMP threads, split by bands of output
(or pooled) rows.
"""
cdef extern from "_tiles.h" nogil:
    void mc_tiles_conv2d_direct(int level, int b, const float *xq, Py_ssize_t N, Py_ssize_t C,
                                Py_ssize_t Hp, Py_ssize_t row_len, int kh, int kw, int sh,
                                int dh, const Py_ssize_t *cols, Py_ssize_t r0, Py_ssize_t r1,
                                Py_ssize_t Wo, const float *wb, Py_ssize_t F, Py_ssize_t b0,
                                Py_ssize_t b1, const float *bias, int relu, float *y,
                                Py_ssize_t y_plane, Py_ssize_t y_row0)
    int mc_tiles_direct_filters(int level)
    int mc_tiles_direct_filter_tiles(int level)
    void mc_tiles_conv2d_direct_wgrad(int level, const float *xp, Py_ssize_t N, Py_ssize_t C,
                                      Py_ssize_t Hp, Py_ssize_t Wp, int kh, int kw, int sh,
                                      int dh, int dw, Py_ssize_t Ho, Py_ssize_t Wo,
                                      const float *dy, Py_ssize_t F, float *dwt)

cdef extern from "_direct_maxpool.h" nogil:
    void mc_tiles_conv2d_direct_maxpool(int level, const float *xq, Py_ssize_t C,
                                        Py_ssize_t Hp, Py_ssize_t row_len, int kh, int kw,
                                        int sh, int dh, const Py_ssize_t *cols, Py_ssize_t Ho,
                                        Py_ssize_t Wo, const float *wb, Py_ssize_t F,
                                        const float *bias, int relu, int pkh, int pkw,
                                        int psh, int psw, int pph, int ppw, Py_ssize_t p0,
                                        Py_ssize_t p1, Py_ssize_t Hpo, Py_ssize_t Wpo,
                                        float *buf, Py_ssize_t buf_rows, float *m, float *y)
    Py_ssize_t mc_values_row_span(Py_ssize_t W, int kw, int sw, int pw, Py_ssize_t Wo)

from cython.parallel cimport prange, threadid

from minconv._kernels._parallel cimport max_threads

import numpy as np

from . import reference
from .cpu_conv import (_float_array, _geometry, _prepared_output, _unfold_target,
                       _written_into)
from .cpu_layout import phased_buffer, phased_padded
from .cpu_tiles import BAND_MIN_MACS, _fusing_level, isa


def _direct_operands(op, x, W_shape, stride, padding, dilation):
    x = _float_array(x, f"{op}: input")
    F, C, kh, kw = (int(v) for v in W_shape)
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"{op}: input {x.shape} does not match the weight shape {tuple(W_shape)}")
    geometry = _geometry(x.shape, kh, kw, stride, padding, dilation)
    return x, F, C, kh, kw, geometry


def _tap_columns(kw, dw, sw, Wq):
    """Where tap j's column lies in a row split into sw phases of Wq columns: padded
    column j*dw is column (j*dw)//sw of phase (j*dw) % sw."""
    return np.array([j * dw % sw * Wq + j * dw // sw for j in range(kw)], dtype=np.intp)


# The tiles that hold filters to a vector (_direct_filters_avx2.h) compute no output twice
# but store each tile's outputs one by one: a layer of at least this many taps (C*kh*kw)
# takes them where its rows waste more of the row tiles' vectors than its filters waste of
# their blocks. At batch 1 (AMD EPYC, AVX2, 2 threads), alone, against the row tiles:
# SqueezeNet's 64 -> 256 on 13x13 0.84, 48 -> 192 on 13x13 0.85, 32 -> 128 on 27x27 0.91,
# 64 -> 128 on 28x28 0.86, 64 -> 192 on 56x56 0.95, 128 -> 32 on 14x14 0.91; 16 -> 64 on
# 55x55 (144 taps) level. SqueezeNet's pass at batch 1: 0.946.
FILTER_TILES_MIN_TAPS = 288


def _row_tiles_share(Wo, vector):
    """The share of the outputs a row's tiles compute that it keeps: tiles of two vectors,
    one where the row fits in it (a lone vector at a row's end takes about a pair's time)."""
    return Wo / (vector if Wo <= vector else 2 * vector * -(-Wo // (2 * vector)))


def direct_filter_tiles():
    """Filters of a block of the tiles that hold filters to a vector at this CPU's level
    (16 with AVX2), 0 where there are none."""
    level = _fusing_level(np.float32)
    return mc_tiles_direct_filter_tiles(level) if level else 0


def direct_block_filters(x_shape, W_shape, stride, padding, dilation):
    """Filters of a block of the direct tiles that take x (N, C, H, W) and W (F, C, kh, kw)
    at this CPU's level: the tiles that hold a row's outputs to a vector (6 for AVX2, 8 for
    AVX-512), or those that hold 16 filters to two vectors (AVX2) where they keep more of
    their work (FILTER_TILES_MIN_TAPS)."""
    level = _fusing_level(np.float32)
    if level == 0:
        raise ValueError(f"direct_block_filters: the tiles do not run here (isa {isa()!r})")
    row_tiles, filter_tiles = mc_tiles_direct_filters(level), mc_tiles_direct_filter_tiles(level)
    F, C, kh, kw = (int(v) for v in W_shape)
    Wo = _geometry(x_shape, kh, kw, stride, padding, dilation)[11]
    if filter_tiles == 0 or C * kh * kw < FILTER_TILES_MIN_TAPS or Wo < 1 or F < 1:
        return row_tiles
    filters_share = F / (filter_tiles * -(-F // filter_tiles))
    return filter_tiles if filters_share > _row_tiles_share(Wo, 8) else row_tiles


def direct_filter_blocks(W, filters=None):
    """The weights as the direct tiles read them at this CPU's level: W (F, C, kh, kw)
    float32 -> (ceil(F/b), C*kh*kw, b), block k holding filters k*b .. k*b + b - 1 tap by
    tap (zeros past F); b = ``filters``, one of the tiles' (:func:`direct_block_filters`),
    by default the row tiles' 6 (AVX2) or 8 (AVX-512)."""
    W = np.asarray(W)
    if W.ndim != 4 or W.dtype != np.float32:
        raise ValueError(f"direct_filter_blocks: expected float32 weights (F, C, kh, kw), got "
                         f"{W.dtype} {W.shape}")
    level = _fusing_level(W.dtype)
    if level == 0:
        raise ValueError(f"direct_filter_blocks: the tiles do not run here (isa {isa()!r})")
    block = mc_tiles_direct_filters(level) if filters is None else int(filters)
    if block not in _block_kinds(level):
        raise ValueError(f"direct_filter_blocks: no tiles of {filters} filters here "
                         f"(isa {isa()!r}: {', '.join(map(str, _block_kinds(level)))})")
    F = W.shape[0]
    blocks = -(-F // block)
    wb = np.zeros((blocks * block, W[0].size), dtype=np.float32)
    wb[:F] = W.reshape(F, -1)
    return np.ascontiguousarray(wb.reshape(blocks, block, -1).transpose(0, 2, 1))


def _block_kinds(level):
    """Filters of a block of each kind of direct tile at ``level``."""
    return tuple(b for b in (mc_tiles_direct_filters(level), mc_tiles_direct_filter_tiles(level))
                 if b)


def _filter_blocks(op, W, blocks, kinds=None):
    """``blocks`` checked against W (blocks of any of the ``kinds`` of tile given, by
    default every kind here), or W's row tiles' blocks made here."""
    if blocks is None:
        return direct_filter_blocks(W)
    kinds = _block_kinds(_fusing_level(W.dtype)) if kinds is None else kinds
    b = blocks.shape[2] if isinstance(blocks, np.ndarray) and blocks.ndim == 3 else kinds[0]
    want = (-(-W.shape[0] // b), W[0].size, b)
    if (not isinstance(blocks, np.ndarray) or blocks.shape != want or b not in kinds
            or blocks.dtype != np.float32 or not blocks.flags.c_contiguous):
        raise ValueError(f"{op}: filter blocks must be C-contiguous float32 "
                         f"{' or '.join(str((-(-W.shape[0] // k), W[0].size, k)) for k in kinds)}"
                         f" (direct_filter_blocks of W {W.shape}), got "
                         f"{getattr(blocks, 'dtype', type(blocks).__name__)} "
                         f"{getattr(blocks, 'shape', '')}")
    return blocks


def conv2d_direct(x, W, bias, stride, padding, dilation, out=None, relu=False, blocks=None):
    """A convolution summed tap by tap, channels first (the reference's twin).

    x : (N, C, H, W), W : (F, C, kh, kw), bias : (F,) or None -> y : (N, F, Ho, Wo),
    ``out`` when given; max(y, 0) with ``relu``, applied as the tiles store y. Compiled
    for float32 where the tiles run (:func:`fused_kernels`), at a width stride sw > 1 on
    the input's sw column phases (:func:`~.cpu_layout.phased_padded`), in which the
    columns of one tap for neighbouring outputs are neighbours; otherwise the reference
    computes it. ``blocks``: W's :func:`direct_filter_blocks`, when kept (else made here).
    A batch smaller than the OpenMP threads is split by bands of rows or shares of the
    filter blocks, whichever divides more evenly.
    """
    x, F, C, kh, kw, geometry = _direct_operands("conv2d_direct", x, np.shape(W), stride,
                                                 padding, dilation)
    N, _, H, Wd, sh, sw, ph, pw, dh, dw, Ho, Wo = geometry
    W = np.ascontiguousarray(W)
    if W.dtype != x.dtype or (bias is not None and np.asarray(bias).dtype != x.dtype):
        raise ValueError(f"conv2d_direct: weight and bias must be {x.dtype}")
    level = _fusing_level(x.dtype)
    if level == 0:
        return reference.conv2d_direct(x, W, bias, stride, padding, dilation, out=out, relu=relu)
    y = _unfold_target(out, (N, F, Ho, Wo), x, "conv2d_direct")
    if blocks is None:
        blocks = direct_filter_blocks(W, direct_block_filters(x.shape, W.shape, stride, padding,
                                                              dilation))
    wb = _filter_blocks("conv2d_direct", W, blocks)
    b = None if bias is None else np.ascontiguousarray(bias)
    if y.size:
        xq = phased_padded(x, ph, pw, sw)                                # (N, C, Hp, sw, Wq)
        Hp, Wq = xq.shape[2], xq.shape[4]
        cols = _tap_columns(kw, dw, sw, Wq)
        _direct(xq.reshape(N, C, Hp, sw * Wq), cols, wb, b, y, kh, kw, sh, dh, relu, level)
    return _written_into(y, out)


cdef class PreparedDirect:
    """:func:`conv2d_direct` for inputs of one shape, its operands checked and its padded
    input's buffer made once: a call checks only its input and output, pads the input into
    that buffer and runs the tiles (SqueezeNet's 3x3 layers at batch 1 take a few tenths of
    a millisecond, of which the checks and the padded copy's allocation were a twentieth).

    x_shape (N, C, H, W); W (F, C, kh, kw) float32, bias (F,) float32 or None, stride,
    padding and dilation pairs, ``relu`` as for :func:`conv2d_direct`; ``blocks(W)`` gives
    W's :func:`direct_filter_blocks` on each call (kept by the caller while W is locked).
    ``run(x, out)`` -> y (N, F, Ho, Wo), out when given; None where x is not a C-contiguous
    float32 ndarray of x_shape or out not a C-contiguous float32 array of y's shape (the
    caller then takes the general path). The buffer makes a call non-reentrant: one
    thread at a time.
    """
    cdef readonly tuple x_shape, y_shape
    cdef object W, bias, blocks, cols, buffer, xq
    cdef int kh, kw, sh, dh, ph, pw, sw, level
    cdef bint relu

    def __init__(self, x_shape, W, bias, stride, padding, dilation, relu, blocks):
        x_shape = tuple(int(v) for v in x_shape)
        if (not isinstance(W, np.ndarray) or W.dtype != np.float32 or W.ndim != 4
                or len(x_shape) != 4 or x_shape[1] != W.shape[1]):
            raise ValueError(f"PreparedDirect: input shape {x_shape} does not match the "
                             f"weights {getattr(W, 'dtype', type(W).__name__)} {np.shape(W)}")
        if bias is not None and (not isinstance(bias, np.ndarray) or bias.dtype != np.float32
                                 or bias.shape != (W.shape[0],)):
            raise ValueError(f"PreparedDirect: bias must be float32 ({W.shape[0]},), got "
                             f"{getattr(bias, 'dtype', type(bias).__name__)} {np.shape(bias)}")
        self.level = _fusing_level(np.float32)
        if self.level == 0:
            raise ValueError(f"PreparedDirect: the tiles do not run here (isa {isa()!r})")
        F, C, kh, kw = W.shape
        N, _, H, Wd, sh, sw, ph, pw, dh, dw, Ho, Wo = _geometry(x_shape, kh, kw, stride,
                                                                padding, dilation)
        if min(N, F, Ho, Wo) < 1:
            raise ValueError(f"PreparedDirect: no output for input {x_shape} and weights "
                             f"{W.shape}")
        self.x_shape, self.y_shape = x_shape, (N, F, Ho, Wo)
        self.W, self.blocks, self.relu = W, blocks, relu
        self.bias = None if bias is None else np.ascontiguousarray(bias)
        self.kh, self.kw, self.sh, self.dh, self.ph, self.pw, self.sw = kh, kw, sh, dh, ph, pw, sw
        self.buffer = phased_buffer(x_shape, ph, pw, sw)
        Hp, Wq = H + 2 * ph, -(-(Wd + 2 * pw) // sw)
        self.xq = self.buffer[:N * C * Hp * sw * Wq].reshape(N, C, Hp, sw * Wq)
        self.cols = _tap_columns(kw, dw, sw, Wq)

    def run(self, x, out=None):
        out = _prepared_output(x, self.x_shape, out, self.y_shape, True)
        if out is None:
            return None
        wb = _filter_blocks("PreparedDirect", self.W, self.blocks(self.W))
        phased_padded(x, self.ph, self.pw, self.sw, out=self.buffer)
        _direct(self.xq, self.cols, wb, self.bias, out, self.kh, self.kw, self.sh, self.dh,
                self.relu, self.level)
        return out


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


# With a batch smaller than the threads, each image is cut into about this many jobs per
# thread, taken in turn as threads come free: the cores of a shared machine run at unequal
# speeds, and with one share each the faster waited for the slower (a fifth of a 48 -> 192
# 3x3 layer's time). Where the weights outweigh the padded input (many channels), a job is
# a filter block over a band of rows (all the rows where there are blocks enough), else a
# band of rows with every block (an RGB first layer: each job would read the whole image),
# BANDS_PER_THREAD of them a thread: smaller bands read more halo rows again (SqueezeNet's
# 16 -> 64 on 55x55 took 0.975 of the pass in 4 bands rather than 16).
JOBS_PER_THREAD = 8
BANDS_PER_THREAD = 2


cdef void _direct(const float[:, :, :, ::1] xq, const Py_ssize_t[::1] cols,
                  const float[:, :, ::1] wb, const float[::1] bias, float[:, :, :, ::1] y, int kh,
                  int kw, int sh, int dh, bint relu, int level) noexcept:
    """The direct tiles over the batch on this thread; with fewer images than OpenMP
    threads (a batch of one) and at least BAND_MIN_MACS multiply-adds, the threads take
    jobs of an image as they come free: a filter block over a band of rows where the
    weights outweigh the padded input (JOBS_PER_THREAD each on average), else a band of
    rows with every block (BANDS_PER_THREAD each)."""
    cdef const float *b = NULL
    cdef Py_ssize_t N = xq.shape[0], C = xq.shape[1], Hp = xq.shape[2], row_len = xq.shape[3]
    cdef Py_ssize_t F = y.shape[1], Ho = y.shape[2], Wo = y.shape[3], blocks = wb.shape[0]
    cdef Py_ssize_t bands, jobs, job, n, band, block, per_job
    cdef int threads = max_threads()
    if bias is not None:
        b = &bias[0]
    if N >= threads or N * Ho * Wo * wb.shape[1] * F < BAND_MIN_MACS:
        with nogil:
            mc_tiles_conv2d_direct(level, wb.shape[2], &xq[0, 0, 0, 0], N, C, Hp, row_len, kh,
                                   kw, sh, dh, &cols[0], 0, Ho, Wo, &wb[0, 0, 0], F, 0, blocks,
                                   b, relu, &y[0, 0, 0, 0], Ho * Wo, 0)
        return
    if C * Hp * row_len > wb.size:       # blocks a job makes
        per_job, bands = blocks, min(Ho, -(-BANDS_PER_THREAD * threads // N))
    else:
        per_job, bands = 1, min(Ho, max(1, -(-JOBS_PER_THREAD * threads // (N * blocks))))
    jobs = bands * (blocks // per_job)
    for job in prange(N * jobs, num_threads=threads, schedule="dynamic", nogil=True):
        n = job // jobs
        band = job % jobs // (blocks // per_job)
        block = job % (blocks // per_job) * per_job
        mc_tiles_conv2d_direct(level, wb.shape[2], &xq[n, 0, 0, 0], 1, C, Hp, row_len, kh, kw,
                               sh, dh, &cols[0], band * Ho // bands, (band + 1) * Ho // bands,
                               Wo, &wb[0, 0, 0], F, block, block + per_job, b, relu,
                               &y[n, 0, 0, 0], Ho * Wo, 0)


# Rows of every map a thread's band buffer holds when the direct tiles feed a max pooling:
# about this many bytes, within a core's L2 cache with the input rows beside them.
POOLED_BAND_BYTES = 384 * 1024


def conv2d_direct_maxpool(x, W, bias, stride, padding, dilation, relu, pool_kernel,
                          pool_stride, pool_padding, pooled_hw, out=None, blocks=None):
    """``maxpool(conv2d_direct(x, ...))`` band by band (``_direct_maxpool.h``): each thread
    computes the convolution rows that a band of pooled rows covers into a buffer of its
    own and pools them from there, so the convolution's output is never formed.

    x : (N, C, H, W) float32, W : (F, C, kh, kw), bias : (F,) or None; ``relu`` applies
    max(., 0) to the convolution; the pool's window, stride and (symmetric) padding are
    pairs, ``pooled_hw`` its output size (Hpo, Wpo) from its geometry (ceil mode
    included) -> y (N, F, Hpo, Wpo), ``out`` when given; ``blocks`` as for
    :func:`conv2d_direct`. Where the tiles run (:func:`fused_kernels`).
    """
    x, F, C, kh, kw, geometry = _direct_operands("conv2d_direct_maxpool", x, np.shape(W),
                                                 stride, padding, dilation)
    N, _, H, Wd, sh, sw, ph, pw, dh, dw, Ho, Wo = geometry
    level = _fusing_level(x.dtype)
    if level == 0:
        raise ValueError(f"conv2d_direct_maxpool: the tiles take float32 (isa {isa()!r}, "
                         f"{x.dtype})")
    W = np.ascontiguousarray(W)
    if W.dtype != np.float32 or (bias is not None and np.asarray(bias).dtype != np.float32):
        raise ValueError("conv2d_direct_maxpool: weight and bias must be float32")
    (pkh, pkw), (psh, psw), (pph, ppw) = pool_kernel, pool_stride, pool_padding
    Hpo, Wpo = (int(v) for v in pooled_hw)
    if min(pkh, pkw, psh, psw, Hpo, Wpo) < 1 or min(pph, ppw) < 0 or pkh > Ho + 2 * pph:
        raise ValueError(f"conv2d_direct_maxpool: no pooled output {(Hpo, Wpo)} with window "
                         f"{(pkh, pkw)}, stride {(psh, psw)}, padding {(pph, ppw)} over "
                         f"{(Ho, Wo)} maps")
    y = _unfold_target(out, (N, F, Hpo, Wpo), x, "conv2d_direct_maxpool")
    if y.size == 0:
        return _written_into(y, out)
    xq = phased_padded(x, ph, pw, sw)                                    # (N, C, Hp, sw, Wq)
    Hp, Wq = xq.shape[2], xq.shape[4]
    cols = _tap_columns(kw, dw, sw, Wq)
    wb = _filter_blocks("conv2d_direct_maxpool", W, blocks, (mc_tiles_direct_filters(level),))
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    buf_rows = max(pkh, min(Ho, POOLED_BAND_BYTES // (4 * F * Wo)))
    span = mc_values_row_span(Wo, pkw, psw, ppw, Wpo) + 16
    _direct_maxpool(xq.reshape(N, C, Hp, sw * Wq), cols, wb, b, relu, kh, kw, sh, dh, Ho, Wo,
                    pkh, pkw, psh, psw, pph, ppw, buf_rows, span, level, y)
    return _written_into(y, out)


cdef void _direct_maxpool(const float[:, :, :, ::1] xq, const Py_ssize_t[::1] cols,
                          const float[:, :, ::1] wb, const float[::1] bias, bint relu, int kh,
                          int kw, int sh, int dh, Py_ssize_t Ho, Py_ssize_t Wo, int pkh,
                          int pkw, int psh, int psw, int pph, int ppw, Py_ssize_t buf_rows,
                          Py_ssize_t span, int level, float[:, :, :, ::1] y):
    """Each thread a band of one image's pooled rows: all of them (a batch that fills
    the threads), else a share of the rows."""
    cdef const float *b = NULL
    cdef Py_ssize_t N = xq.shape[0], C = xq.shape[1], Hp = xq.shape[2], row_len = xq.shape[3]
    cdef Py_ssize_t F = y.shape[1], Hpo = y.shape[2], Wpo = y.shape[3], job, n, p0, p1
    cdef int threads = max_threads(), t
    cdef Py_ssize_t bands = 1 if N >= threads else min(Hpo, (threads + N - 1) // N)
    threads = min(threads, N * bands)
    cdef float[:, ::1] bufs = np.empty((threads, F * buf_rows * Wo), dtype=np.float32)
    cdef float[:, ::1] rows = np.empty((threads, span), dtype=np.float32)
    if bias is not None:
        b = &bias[0]
    for job in prange(N * bands, num_threads=threads, schedule="static", nogil=True):
        t = threadid()
        n = job // bands
        p0 = job % bands * Hpo // bands
        p1 = (job % bands + 1) * Hpo // bands
        mc_tiles_conv2d_direct_maxpool(level, &xq[n, 0, 0, 0], C, Hp, row_len, kh, kw, sh, dh,
                                       &cols[0], Ho, Wo, &wb[0, 0, 0], F, b, relu, pkh, pkw, psh,
                                       psw, pph, ppw, p0, p1, Hpo, Wpo, &bufs[t, 0], buf_rows,
                                       &rows[t, 0], &y[n, 0, 0, 0])


cdef void _direct_wgrad(const float[:, :, :, ::1] xp, const float[:, :, :, ::1] dy,
                        float[:, ::1] dwt, int kh, int kw, int sh, int dh, int dw,
                        int level) noexcept:
    with nogil:
        mc_tiles_conv2d_direct_wgrad(level, &xp[0, 0, 0, 0], xp.shape[0], xp.shape[1],
                                     xp.shape[2], xp.shape[3], kh, kw, sh, dh, dw, dy.shape[2],
                                     dy.shape[3], &dy[0, 0, 0, 0], dy.shape[1], &dwt[0, 0])
