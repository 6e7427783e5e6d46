"""The fused channels-last path: the two products of the rows as register tiles.

``im2row_matmul`` (rows @ w) and ``im2row_t_matmul`` (rows^T @ dy) of the
compiled kernels read every tap straight from the padded channels-last image as
they multiply, so the rows are never formed (float32 on CPUs with AVX2+FMA or
AVX-512; elsewhere they are im2row and a GEMM). They beat im2row + GEMM while the
(kh*kw*C, F) weights stay in a core's cache (the planner checks with
``fuses_im2row``).

The data gradient at stride 1 is itself a convolution, so it runs through the
same tiles: with p' = d(k-1) - p,

    dx[h] = sum_i dy[h + p - i*d] W[i] = sum_i dy[h - p' + i*d] W[k-1-i],

a convolution of dy padded by p' with the filters flipped in space and their
in/out channels swapped. Larger strides (and p > d(k-1)) fold with row2im as the
``rows`` path does.
"""

from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from ..prepared import derived
from . import (ConvPath, chunks, output_array, output_hw, position_rows, rows,
               weight_grad_by_chunks, write_channels_first)


def flipped_padding(W_shape, win):
    """The padding p' under which C^T dy is a convolution of dy, or None (stride > 1 or
    p > d(k-1))."""
    kh, kw = W_shape[2:]
    full = (win.dilation[0] * (kh - 1) - win.padding[0],
            win.dilation[1] * (kw - 1) - win.padding[1])
    if tuple(win.stride) != (1, 1) or min(full) < 0:
        return None
    return full


def _flipped_weight_rows(W):
    """The filters of C^T as a convolution: W[f, c, kh-1-i, kw-1-j] at row (i*kw + j)*F + f,
    column c, so (kh*kw*F, C)."""
    F, C, kh, kw = W.shape
    return W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * F, C)


def tap_major_weights(W, kernels):
    """W (F, C, kh, kw) as the tiles' ``w_rows``: W[f, c, i, j] at row (i*kw + j)*C + c,
    column f, so (kh*kw*C, F); the reversal of the axes of W viewed as (F, C, kh*kw).
    Reordered on every call, once for locked weights (:mod:`..prepared`)."""
    def reorder(W):
        F, C, kh, kw = W.shape
        return kernels.reversed_axes(W.reshape(F, C, kh * kw)).reshape(kh * kw * C, F)

    return derived(W, "tap_major", reorder)


def forward(x, W, b, win, workspace=None, relu=False, out=None):
    xp, kernels = get_array_module(x), kernels_for(x)
    F, C, kh, kw = W.shape
    Ho, Wo = output_hw(x.shape, W.shape, win)
    L = Ho * Wo
    w_rows = tap_major_weights(W, kernels)                                  # (kh*kw*C, F)
    y = output_array(xp, out, (x.shape[0], F, Ho, Wo), x.dtype)

    def convolve(share):
        for part in chunks(share, C * kh * kw, L, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            y_rows = kernels.im2row_matmul(x[part], w_rows, kh, kw, *win, bias=b,
                                           out=runtime.scratch(xp, x.dtype, (n * L, F)))
            write_channels_first(y_rows, y[part], relu)

    runtime.map_shares(convolve, x.shape[0], xp)
    return y


def data_grad(dy, W, x_shape, win, workspace=None):
    full = flipped_padding(W.shape, win)
    if full is None:
        return rows.data_grad(dy, W, x_shape, win, workspace)
    xp, kernels = get_array_module(dy), kernels_for(dy)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W.shape
    H, Wd = x_shape[2:]
    w_rows = derived(W, "flipped_rows",                                   # (kh*kw*F, C)
                     lambda W: xp.ascontiguousarray(_flipped_weight_rows(W)))
    dx = xp.empty(x_shape, dtype=dy.dtype)

    def fold(share):
        for part in chunks(share, C * kh * kw, Ho * Wo, dy.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            dx_rows = kernels.im2row_matmul(dy[part], w_rows, kh, kw, (1, 1), full,
                                            win.dilation,
                                            out=runtime.scratch(xp, dy.dtype, (n * H * Wd, C)))
            write_channels_first(dx_rows, dx[part])

    runtime.map_shares(fold, N, xp)
    return dx


def weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    kernels = kernels_for(x)
    F, C, kh, kw = W_shape

    def add_chunk(part, dW_rows, db):
        dy_rows = position_rows(dy[part])                                 # (n*L, F)
        dW_rows += kernels.im2row_t_matmul(x[part], dy_rows, kh, kw, *win)  # (kh*kw*C, F)
        if db is not None:
            db += dy_rows.sum(axis=0)

    dW_rows, db = weight_grad_by_chunks(dy, x, W_shape, workspace, with_bias, add_chunk,
                                        shape=(kh * kw * C, F))
    # (kh*kw, C, F) -> (F, C, kh*kw)
    return kernels.reversed_axes(dW_rows.reshape(kh * kw, C, F)).reshape(W_shape), db


PATH = ConvPath("fused_rows", forward, data_grad, weight_grad, writes_into=True)
