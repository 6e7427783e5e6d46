"""The channels-last path: im2row + GEMM, row2im (small maps on the CPU).

im2row unfolds every receptive field into a *row*, taps ordered (i, j, c): in a
padded channels-last image the taps (i, 0..kw-1) of a position are one run of
kw*C values, where im2col copies rows of Wo values. On 14- and 7-wide maps that
unfolds and folds 2-5x faster. The rows hold the numbers of ``im2col(x).T`` with
the columns reordered from (c, i, j) to (i, j, c), so the weights are too:

    y_rows  = rows @ W2^T + b               (n*L, F),  W2 = W in (F, kh*kw*C)
    drows   = dy_rows @ W2                  dx = row2im(drows)
    dW2    += dy_rows^T @ rows              db += sum of dy_rows over positions
"""
from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from . import (ConvPath, Gather, chunks, output_hw, position_rows, weight_grad_by_chunks,
               weight_matrix_channels_last, weights_from_channels_last, write_channels_first)


def forward(x, W, b, win, workspace=None, relu=False):
    xp, kernels = get_array_module(x), kernels_for(x)
    F, C, kh, kw = W.shape
    Ho, Wo = output_hw(x.shape, W.shape, win)
    L, W2 = Ho * Wo, weight_matrix_channels_last(W)                      # (F, kh*kw*C)
    y = xp.empty((x.shape[0], F, Ho, Wo), dtype=x.dtype)

    def convolve(share):
        for part in chunks(share, C * kh * kw, L, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            rows = runtime.scratch(xp, x.dtype, (n * L, C * kh * kw))
            kernels.im2row(x[part], kh, kw, *win, out=rows)
            y_rows = runtime.matmul(rows, W2.T)                           # (n*L, F)
            if b is not None:
                y_rows += b
            write_channels_first(y_rows, y[part], relu)

    runtime.map_shares(convolve, x.shape[0], xp)
    return y


def data_grad(dy, W, x_shape, win, workspace=None):
    xp, kernels = get_array_module(dy), kernels_for(dy)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W.shape
    L, W2 = Ho * Wo, weight_matrix_channels_last(W)
    dx = Gather(xp, x_shape, dy.dtype)

    def fold(share):
        for part in chunks(share, C * kh * kw, L, dy.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            drows = runtime.scratch(xp, dy.dtype, (n * L, C * kh * kw))
            runtime.matmul(position_rows(dy[part]), W2, out=drows)       # (n*L, kh*kw*C)
            dx.put(part, kernels.row2im(drows, (n,) + tuple(x_shape[1:]), kh, kw, *win))

    runtime.map_shares(fold, N, xp)
    return dx.result()


def weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    xp, kernels = get_array_module(x), kernels_for(x)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W_shape
    L = Ho * Wo

    def add_chunk(part, dW2, db):
        n = part.stop - part.start
        dy_rows = position_rows(dy[part])                                 # (n*L, F)
        rows = runtime.scratch(xp, x.dtype, (n * L, C * kh * kw))
        kernels.im2row(x[part], kh, kw, *win, out=rows)
        dW2 += runtime.matmul(dy_rows.T, rows)                            # (F, kh*kw*C)
        if db is not None:
            db += dy_rows.sum(axis=0)

    dW2, db = weight_grad_by_chunks(dy, x, W_shape, workspace, with_bias, add_chunk)
    return weights_from_channels_last(dW2, W_shape), db


PATH = ConvPath("rows", forward, data_grad, weight_grad)
