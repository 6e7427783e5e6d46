# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled tiles: a convolution's products computed without unfolding the input.

im2row_matmul and im2row_t_matmul are the two products a convolution takes of
im2row's rows (:mod:`minconv._kernels.cpu_conv`), ``rows @ w`` and ``rows.T @ dy``.
In float32 on CPUs with AVX-512 or AVX2+FMA, for weights within each set's cap (below),
they never form the rows: the C tiles of ``_im2row_matmul.h`` (AVX-512) and
``_im2row_matmul_avx2.h`` read the taps from the padded image as they multiply
(``_tiles.h`` gives each product one entry that takes the instruction set's level;
:mod:`.cpu_direct` holds the tiles of inputs of few channels). :func:`isa` names the
instruction set in use; :func:`set_isa_cap` or ``MINCONV_ISA`` can hold it lower;
without tiles the products are im2row and a GEMM. Both run on the calling thread alone,
but for a batch smaller than the OpenMP threads, whose forward product is split by bands
of output rows (or, on small maps, by output channels).
"""
cdef extern from "_tiles.h" nogil:
    int mc_tiles_level()
    int mc_tiles_im2row_matmul(int level, const float *xt, Py_ssize_t N, Py_ssize_t Hp,
                               Py_ssize_t Wp, Py_ssize_t C, int kh, int kw, int sh, int sw,
                               int dh, int dw, Py_ssize_t Ho, Py_ssize_t Wo, const float *w,
                               Py_ssize_t F, Py_ssize_t f_begin, Py_ssize_t f_end,
                               const float *bias, float *y)
    int mc_tiles_im2row_t_matmul(int level, const float *xt, Py_ssize_t N, Py_ssize_t Hp,
                                 Py_ssize_t Wp, Py_ssize_t C, int kh, int kw, int sh, int sw,
                                 int dh, int dw, Py_ssize_t Ho, Py_ssize_t Wo, const float *dy,
                                 Py_ssize_t F, float *dwt)

from cython.parallel cimport prange

from minconv._kernels._parallel cimport aligned_share, max_threads

import os

import numpy as np

from . import reference
from .cpu_conv import _float_array, _geometry, _unfold_target, _written_into, im2row
from .cpu_layout import padded_channels_last


# ---------------------------------------------------------------- products of the rows

# The instruction sets of the tiles, by level: the CPU's best is chosen when the
# module loads, and a cap (MINCONV_ISA, or set_isa_cap) can hold it lower, so
# that any machine can run and measure the AVX2 tiles or none.
ISA_NAMES = ("none", "avx2", "avx512")
cdef int _ISA_SUPPORTED = mc_tiles_level()
cdef int _isa_cap = 2
cdef int _isa = _ISA_SUPPORTED

# How large a (kh*kw*C, F) weight matrix each set's tiles take, in floats. The
# AVX-512 tiles sweep wide weights a chunk of input channels at a time, each chunk
# small enough to stay in a core's L2 cache (on one core, ResNet's 3x3 layers at
# 95-106 GFLOP/s: `bench_kernels.py --tiles`); they take the families' widest
# (512 -> 512, 2.4M floats):
# at batch 8 on 7x7 maps 11.6 ms for dx against 12.2 as im2row + OpenBLAS, 13.8 for
# dW against 14.4 (the two paths' functions timed alone; `bench_conv_shapes.py` has
# the forward pass). The AVX2 tiles
# stream one 16-channel panel of the weights at a time: with their forward product
# alone on one core 5-10% ahead of im2row and OpenBLAS's Haswell sgemm
# (`bench_kernels.py --tiles`), ZFNet's 13x13 layers on both cores ran 10-30% slower
# fused (`bench_layers.py --isa avx2`), and their weight gradient 10-30% slower even
# alone: both keep a 256K limit.
_FUSED_MAX_WEIGHTS = {("avx512", "forward"): 2 ** 22, ("avx512", "weight_grad"): 2 ** 22,
                      ("avx2", "forward"): 2 ** 18, ("avx2", "weight_grad"): 2 ** 18}
PRODUCTS = ("forward", "weight_grad")
# A batch smaller than the OpenMP threads splits each image's forward product by bands
# of output rows from this many multiply-adds. With the team's idle threads asleep a
# second thread took 70 us to wake, and bands paid from about 2^23 (8M) multiply-adds;
# with them spinning (runtime), 2^20 and 2^18 ran level in whole passes at batch 1.
BAND_MIN_MACS = 2 ** 20
# Below this many output positions, and with a padded input of at most this many bytes
# (it then stays in a core's L2 while each thread sweeps all of it), the threads share a
# product's output channels rather than bands of its rows: each thread packs only its
# own channels' weights. Bands of a 13x13 map left the threads 78 and 91 positions; at
# batch 1 (AMD EPYC, AVX2) 64 -> 256 and 48 -> 192 on 13x13 ran at 58-75 and 60-61
# GMAC/s against 37-61 and 37-59, 32 -> 128 on 27x27 at 62-65 against 41-60; 128 -> 128
# on 28x28 (460 KB of input) lost, 42-66 against 68-82.
SPLIT_CHANNELS_BELOW = 1024
SPLIT_CHANNELS_MAX_INPUT = 256 * 1024


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
    see :func:`isa`): then :func:`conv2d_direct` runs compiled, and
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
    """The tiles over the batch, on this thread; with fewer images than OpenMP threads
    (a batch of one), each thread takes a share: on small maps (``SPLIT_CHANNELS_BELOW``,
    ``SPLIT_CHANNELS_MAX_INPUT``) a share of the output channels, 16 at a time, over all
    positions; else a band of each image's output rows [r0, r1), which reads padded
    rows from r0*sh and writes rows r0*Wo.. of its image's block."""
    cdef const float *b = NULL
    cdef Py_ssize_t N = xt.shape[0], Hp = xt.shape[1], Wp = xt.shape[2], C = xt.shape[3]
    cdef Py_ssize_t F = w.shape[1], bands = 1, job, n, r0, r1, per, f0
    cdef int status = 0, threads = 1
    if bias is not None:
        b = &bias[0]
    if N < max_threads() and N * Ho * Wo * w.shape[0] * F >= BAND_MIN_MACS:
        threads = max_threads()
        bands = min(Ho, (threads + N - 1) // N)
    if bands == 1:
        with nogil:
            status = mc_tiles_im2row_matmul(level, &xt[0, 0, 0, 0], N, Hp, Wp, C, kh, kw, sh,
                                            sw, dh, dw, Ho, Wo, &w[0, 0], F, 0, F, b, &y[0, 0])
        return status
    if (N * Ho * Wo < SPLIT_CHANNELS_BELOW and F >= 16 * threads
            and xt.size * 4 <= SPLIT_CHANNELS_MAX_INPUT):
        per = aligned_share(F, threads, 16)
        for job in prange(threads, num_threads=threads, schedule="static", nogil=True):
            f0 = job * per
            if f0 < F:
                status |= mc_tiles_im2row_matmul(level, &xt[0, 0, 0, 0], N, Hp, Wp, C, kh, kw,
                                                 sh, sw, dh, dw, Ho, Wo, &w[0, 0], F, f0,
                                                 min(F, f0 + per), b, &y[0, 0])
        return status
    for job in prange(N * bands, num_threads=threads, schedule="static", nogil=True):
        n = job // bands
        r0 = job % bands * Ho // bands
        r1 = (job % bands + 1) * Ho // bands
        status |= mc_tiles_im2row_matmul(level, &xt[n, r0 * sh, 0, 0], 1, Hp, Wp, C, kh, kw,
                                         sh, sw, dh, dw, r1 - r0, Wo, &w[0, 0], F, 0, F, b,
                                         &y[(n * Ho + r0) * Wo, 0])
    return status


cdef int _fused_t_matmul(const float[:, :, :, ::1] xt, const float[:, ::1] dy, float[:, ::1] dwt,
                         int kh, int kw, int sh, int sw, int dh, int dw, Py_ssize_t Ho,
                         Py_ssize_t Wo, int level) noexcept:
    cdef int status
    with nogil:
        status = mc_tiles_im2row_t_matmul(level, &xt[0, 0, 0, 0], xt.shape[0], xt.shape[1],
                                          xt.shape[2], xt.shape[3], kh, kw, sh, sw, dh, dw, Ho,
                                          Wo, &dy[0, 0], dy.shape[1], &dwt[0, 0])
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
        if _fused_matmul(padded_channels_last(x, ph, pw), w_rows, bias, y,
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
        if _fused_t_matmul(padded_channels_last(x, ph, pw), dy_rows, dw_rows,
                           kh, kw, sh, sw, dh, dw, Ho, Wo, level) != 0:
            raise MemoryError("im2row_t_matmul: out of memory for its scratch arrays")
    else:
        np.matmul(im2row(x, kh, kw, stride, padding, dilation).T, dy_rows, out=dw_rows)
    return _written_into(dw_rows, out)
