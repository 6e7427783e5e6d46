"""The direct path: a convolution summed tap by tap, channels first, for inputs of
few channels (first layers: 1 or 3) and, at a batch of one, expanding layers.

With C*kh*kw = 25 (zfnet_mini's conv1) the rows of im2col are too short to
multiply well; the compiled ``conv2d_direct`` tiles keep 8 (AVX2) or 16
(AVX-512) outputs of a row in a register and add each tap's contribution:

    y[n, f, ho, wo] = b[f] + sum_{i,j} sum_c W[f, c, i, j] * x_pad[n, c, ho*sh + i*dh, wo*sw + j*dw]
    dW[f, c, i, j]  = sum_{n,ho,wo} dy[n, f, ho, wo] * x_pad[n, c, ho*sh + i*dh, wo*sw + j*dw]

At a width stride sw > 1 the tiles read the input's column phases (column u*sw + q of
x_pad at column u of phase q), where tap j's columns for neighbouring outputs are again
neighbours. A ReLU that follows is applied as the tiles store y. The weight gradient's
tiles take width stride 1 (elsewhere the reference's, tap by tap).

Over many channels (SqueezeNet's 3x3 expands, F = 4C, at batch 1) the tiles run the same
sums with 6 (AVX2) or 8 (AVX-512) filters to a tile, whose weights lie in blocks read in
order (:func:`filter_blocks`): channels first, no moves to channels last and back. On rows
of 13 or 27 outputs a row's vectors of 8 compute 16 or 32; there (AVX2, >= 288 taps) the
tiles turn round and hold 16 filters to two vectors at 6 positions of the map, computing
each output once (:func:`tile_filters`).

Outside training a max pooling that alone reads the output can run with the tiles
(:func:`forward_maxpool`): each band of pooled rows is pooled from the convolution rows it
covers as soon as they are computed, so SqueezeNet's 64x111x111 first map (3 MB at batch
1) is never written out and read back.

There is no direct form of C^T for these layers (their dx is rarely needed: the
input image's gradient), so the data gradient is the per-image path's.
"""
import numpy as np

from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from ..prepared import derived
from . import ConvPath, output_array, output_hw, per_image, sum_in_order


def tile_filters(kernels, dtype, x_shape, W_shape, win):
    """Filters of a block of the tiles that take x_shape and W_shape here
    (:func:`~minconv._kernels.cpu_direct.direct_block_filters`: a row's outputs to a vector,
    or filters to a vector where rows of 13 or 27 outputs would waste a fifth of the row
    tiles' work), None where the reference computes the product."""
    if not (dtype == np.float32 and getattr(kernels, "fused_kernels", None)
            and kernels.fused_kernels(dtype)):
        return None
    return kernels.direct_block_filters(x_shape, W_shape, *win)


def holds_filters(kernels, dtype, x_shape, W_shape, win):
    """Whether the tiles that hold filters to a vector take x_shape and W_shape here."""
    filters = tile_filters(kernels, dtype, x_shape, W_shape, win)
    return filters is not None and filters == kernels.direct_filter_tiles()


def filter_blocks(kernels, W, filters=None):
    """W as the tiles read it, in blocks of ``filters`` (by default the row tiles')
    (:func:`~minconv._kernels.cpu_direct.direct_filter_blocks`); once for locked weights
    (:mod:`..prepared`), None where the reference computes the product."""
    if not (W.dtype == np.float32 and getattr(kernels, "fused_kernels", None)
            and kernels.fused_kernels(W.dtype)):
        return None
    return derived(W, f"direct_blocks_{kernels.isa()}_{filters or 'rows'}",
                   lambda W: kernels.direct_filter_blocks(W, filters))


def forward(x, W, b, win, workspace=None, relu=False, out=None):
    xp, kernels = get_array_module(x), kernels_for(x)
    Ho, Wo = output_hw(x.shape, W.shape, win)
    y = output_array(xp, out, (x.shape[0], W.shape[0], Ho, Wo), x.dtype)
    blocks = (filter_blocks(kernels, W, tile_filters(kernels, W.dtype, x.shape, W.shape, win))
              if x.dtype == W.dtype else None)

    def convolve(share):
        # an image of a channel slice (a concatenation's part) is contiguous; a share of
        # several is not, so those are written image by image
        images = [share] if y[share].flags.c_contiguous else [
            slice(n, n + 1) for n in range(share.start, share.stop)]
        for part in images:
            kernels.conv2d_direct(x[part], W, b, *win, out=y[part], relu=relu, blocks=blocks)

    runtime.map_shares(convolve, x.shape[0], xp)
    return y


def prepare(x_shape, W, b, win, relu):
    """The forward product for a batch of one as one call of the tiles (see the package's
    docstring), float32 where they run; run returns None for an ``out`` that does not
    fit."""
    kernels = kernels_for(W)
    if x_shape[0] != 1 or W.dtype != np.float32 or filter_blocks(kernels, W) is None:
        return None
    if (min(x_shape) < 1 or min(output_hw(x_shape, W.shape, win)) < 1 or W.shape[0] < 1
            or not hasattr(kernels, "PreparedDirect")):
        return None
    filters = tile_filters(kernels, W.dtype, x_shape, W.shape, win)
    return kernels.PreparedDirect(x_shape, W, b, *win, relu,
                                  lambda W: filter_blocks(kernels, W, filters)).run


def pools(kernels, x, W, b):
    """Whether :func:`forward_maxpool` takes these operands: float32 on the compiled tiles."""
    fused = getattr(kernels, "fused_kernels", None)
    return (fused is not None and fused(x.dtype) and x.dtype == W.dtype == np.float32
            and (b is None or b.dtype == np.float32)
            and hasattr(kernels, "conv2d_direct_maxpool"))


def forward_maxpool(x, W, b, win, relu, pool_kernel, pool_stride, pool_padding, pooled_hw):
    """maxpool(y) for y the forward product (max(y, 0) with ``relu``), each share of the
    batch pooling bands of its convolution's rows as the tiles make them: the convolution's
    output is never formed (:func:`~minconv._kernels.cpu_direct.conv2d_direct_maxpool`).
    Where :func:`pools` says so."""
    kernels = kernels_for(x)
    N, F = x.shape[0], W.shape[0]
    y = np.empty((N, F) + tuple(pooled_hw), dtype=x.dtype)

    def convolve_and_pool(share):
        kernels.conv2d_direct_maxpool(x[share], W, b, *win, relu, pool_kernel, pool_stride,
                                      pool_padding, pooled_hw, out=y[share],
                                      blocks=filter_blocks(kernels, W))

    runtime.map_shares(convolve_and_pool, N)
    return y


def weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    xp, kernels = get_array_module(x), kernels_for(x)

    def correlate(share):
        dW = kernels.conv2d_direct_weight_grad(dy[share], x[share], W_shape, *win)
        return dW, dy[share].sum(axis=(0, 2, 3)) if with_bias else None

    return sum_in_order(runtime.map_shares(correlate, x.shape[0], xp), with_bias)


PATH = ConvPath("direct", forward, per_image.data_grad, weight_grad, writes_into=True,
                prepare=prepare)
