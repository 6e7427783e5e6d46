"""The named fast paths of the convolution, and what they share.

Each path computes the same three products as the readable one in
:mod:`minconv.functional.conv` (im2col + one GEMM, and C^T), faster for some
shapes, as a triple of functions on one group of channels:

    forward(x, W, b, win, workspace, relu)         -> y  (N, F, Ho, Wo)     y  = C x + b
    data_grad(dy, W, x_shape, win, workspace)      -> dx x_shape            dx = C^T dy
    weight_grad(dy, x, W_shape, win, workspace, with_bias)
                                                   -> (dW, db or None)      dW = dY cols^T

``win`` is a :class:`Window` (stride, padding, dilation pairs). With ``relu`` the
forward pass returns max(C x + b, 0): a ReLU that follows the convolution, applied
where the path writes its output (:func:`rectified` after the paths that cannot).
Every result is a fresh array (never a view of scratch memory). A path whose
``writes_into`` is true also takes ``out=``: an (N, F, Ho, Wo) array, each image's maps
contiguous (the channel slice of a concatenation's output, say), written and returned
in place of a fresh y. A path whose ``adds_residual`` is true also takes ``residual=``
(an array of y's shape, C-contiguous), which it adds to y as it writes it, before the
ReLU (a residual connection: the Add after a bottleneck's last 1x1 convolution). A path
with a ``prepare`` makes, for inputs of one shape, its forward product as one kernel call
with everything else worked out beforehand:

    prepare(x_shape, W, b, win, relu) -> run(x, out) -> y, or None where x or out do not
                                         fit it; None where the product is not one call

which a layer keeps while its input's shape, weights and plan stay the same (a pass at
batch 1 spends about as long in the Python around each kernel as SqueezeNet's smaller
kernels take: run skips it). The
paths, and the measurements
behind each, are described in docs/architecture.md; :mod:`..conv_plan` picks one:

    columns     im2col + one GEMM over a chunk of images (conv.py; the GPU's path)
    per_image   im2col, then one GEMM per image, in NCHW where y and dy lie (maps >= 512 positions)
    rows        channels last: im2row + GEMM, row2im (small maps on the CPU)
    fused_rows  the im2row products as register tiles that never form the rows; dx at
                stride 1 as a convolution of dy with the flipped filters (float32, AVX2/AVX-512)
    direct      tap by tap, channels first: few input channels (first layers), expanding layers at batch 1
    pointwise   1x1 filters without padding: W (F, C) @ x (C, H*W) per image, nothing unfolded
"""
from typing import NamedTuple

import numpy as np

from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from ...geometry import conv_output_size
from ..prepared import derived


class Window(NamedTuple):
    """The hyper-parameters of a convolution's window, each a (rows, cols) pair."""
    stride: tuple
    padding: tuple
    dilation: tuple


class ConvPath(NamedTuple):
    """One way of computing a convolution's three products (see the module docstring)."""
    name: str
    forward: object
    data_grad: object
    weight_grad: object
    writes_into: bool = False   # forward takes out= (see the module docstring)
    adds_residual: bool = False  # forward takes residual= (see the module docstring)
    prepare: object = None       # a one-call forward product (see the module docstring)


def output_hw(x_shape, W_shape, win):
    """(Ho, Wo) of a convolution of an x_shape input by W_shape filters."""
    kh, kw = W_shape[2:]
    return (conv_output_size(x_shape[2], kh, win.stride[0], win.padding[0], win.dilation[0]),
            conv_output_size(x_shape[3], kw, win.stride[1], win.padding[1], win.dilation[1]))


def chunks(part, rows, positions, itemsize, workspace, xp=np):
    """Sub-slices of the batch slice ``part`` whose columns (rows x n*positions) fit in
    the workspace (and on the CPU, where the workspace allows, in about
    :func:`runtime.cache_chunk_bytes`); the budget is shared by the cores working at once."""
    budget = runtime.workspace_limit() if workspace is None else int(workspace)
    if xp is np:
        budget = min(budget, runtime.cache_chunk_bytes()) // (
            runtime.cpu_threads() if runtime.in_worker() else 1)
    per_image = max(1, rows * positions * itemsize)
    n_images = part.stop - part.start
    step = max(1, min(n_images, budget // per_image))
    return [slice(n, min(n + step, part.stop)) for n in range(part.start, part.stop, step)]


class Gather:
    """dx assembled chunk by chunk into a fresh array; a chunk that is the whole batch
    (a fresh array: every caller folds into one) is taken as it is (no copy)."""

    def __init__(self, xp, shape, dtype):
        self.xp, self.shape, self.dtype = xp, tuple(shape), dtype
        self.out = xp.empty(self.shape, dtype=dtype) if self.shape[0] != 1 else None
        self.whole = None

    def put(self, part, folded):
        if part.stop - part.start == self.shape[0]:
            self.whole = folded
        else:
            self.out[part] = folded

    def result(self):
        return self.whole if self.whole is not None else self.out


def weight_grad_by_chunks(dy, x, W_shape, workspace, with_bias, add_chunk, shape=None):
    """dW2 = sum over the batch of each chunk's product, ``shape`` (F, C*kh*kw unless
    given); db = dY summed, (F,).

    The cores take their shares of the batch; each walks its share chunk by chunk
    (:func:`chunks`), calling ``add_chunk(part, dW2, db)`` to add that chunk's terms in
    place (``db`` is None without a bias), and the shares' sums are then added in share
    order. The tap order of dW2's columns is the path's own.
    """
    xp = get_array_module(x)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W_shape

    def correlate(share):
        dW2 = xp.zeros(shape or (F, C * kh * kw), dtype=x.dtype)
        db = xp.zeros(F, dtype=dy.dtype) if with_bias else None
        for part in chunks(share, C * kh * kw, Ho * Wo, x.dtype.itemsize, workspace, xp):
            add_chunk(part, dW2, db)
        return dW2, db

    return sum_in_order(runtime.map_shares(correlate, N, xp), with_bias)


def sum_in_order(partials, with_bias):
    """The shares' (dW, db) partial sums added in share order: the same sum on every call."""
    dW, db = partials[0]
    for dW_term, db_term in partials[1:]:
        dW += dW_term
        if with_bias:
            db += db_term
    return dW, (db if with_bias else None)


# ---------------------------------------------------------------- layouts of the operands

def chunk_rows(dy_part, F, L):
    """dy of a chunk as the GEMM operand dY: (n, F, Ho, Wo) -> (F, n*L)."""
    n = dy_part.shape[0]
    return dy_part.reshape(n, F, L).transpose(1, 0, 2).reshape(F, n * L)


def position_rows(dy_part):
    """dy of a chunk with one row per position: (n, F, Ho, Wo) -> (n*Ho*Wo, F), a new
    array (the kernels' blocked transpose: NumPy's strided copy is 2-5x slower)."""
    return kernels_for(dy_part).padded_channels_last(dy_part, 0, 0).reshape(-1, dy_part.shape[1])


def write_channels_first(rows, out, relu=False):
    """Rows of a product, one per position (n*Ho*Wo, F), written channels first into
    ``out`` (n, F, Ho, Wo), each image's maps contiguous (a slice of the batch's output,
    or of a concatenation's channels); max(., 0) of each value with ``relu``."""
    n, F, Ho, Wo = out.shape
    images = rows.reshape(n, Ho, Wo, F)
    if out.flags.c_contiguous:
        kernels_for(rows).channels_first(images, out=out, relu=relu)
        return
    for i in range(n):
        kernels_for(rows).channels_first(images[i:i + 1], out=out[i:i + 1], relu=relu)


def output_array(xp, out, shape, dtype):
    """``out`` where the caller gave one (a path that ``writes_into``), else a fresh array."""
    return xp.empty(shape, dtype=dtype) if out is None else out


def rectified(y, relu):
    """max(y, 0) in place with ``relu`` (a path that cannot apply it as it writes y)."""
    return kernels_for(y).relu_forward(y, out=y) if relu else y


def with_residual(y, residual, relu):
    """max(y + residual, 0) (without ``relu``, y + residual) in place: the residual added
    after a product that cannot add it as it writes y."""
    y += residual
    return rectified(y, relu)


def weight_matrix(W):
    """W (F, C, kh, kw) as im2col's GEMM operand: (F, C*kh*kw), taps (c, i, j)."""
    return W.reshape(W.shape[0], -1)


def weight_matrix_channels_last(W):
    """W (F, C, kh, kw) as the GEMM operand of im2row's rows: (F, kh*kw*C), taps (i, j, c).
    Its transpose (kh*kw*C, F) is the fused product's ``w_rows``. (Copied with C as
    the inner run; a transpose straight to (kh*kw*C, F) is 2-10x slower.) Once for
    locked weights (:mod:`..prepared`)."""
    return derived(W, "channels_last",
                   lambda W: W.transpose(0, 2, 3, 1).reshape(W.shape[0], -1))


def weights_from_channels_last(W2, W_shape):
    """The inverse of :func:`weight_matrix_channels_last`: (F, kh*kw*C) -> (F, C, kh, kw)."""
    F, C, kh, kw = W_shape
    return W2.reshape(F, kh, kw, C).transpose(0, 3, 1, 2).copy()
