"""The per-image path: im2col of a chunk, then one GEMM per image.

On large maps (ZFNet's conv1: 110x110 = 12100 positions; zfnet_mini's conv1:
28x28 = 784) each image's product is already a large GEMM, and multiplying
image by image reads dy[i] and writes y[i] where they lie in NCHW: the two
layout transposes of the one-GEMM path disappear.

    y[i]        = W2 @ cols_i + b           (F, L),  cols_i = columns of image i (C*kh*kw, L)
    dcols_i     = W2^T @ dy[i]              dx = col2im(dcols)
    dW2        += dy[i] @ cols_i^T          db += sum of dy[i] over positions
"""
from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from . import ConvPath, Gather, chunks, output_hw, weight_grad_by_chunks, weight_matrix


def _image_columns(cols, i, L):
    """The columns of image i of a chunk: (C*kh*kw, L), a strided view."""
    return cols[:, i * L:(i + 1) * L]


def forward(x, W, b, win, workspace=None, relu=False):
    xp, kernels = get_array_module(x), kernels_for(x)
    F, C, kh, kw = W.shape
    Ho, Wo = output_hw(x.shape, W.shape, win)
    L, W2 = Ho * Wo, weight_matrix(W)                                     # W2 : (F, C*kh*kw)
    y = xp.empty((x.shape[0], F, Ho, Wo), dtype=x.dtype)

    def convolve(share):
        for part in chunks(share, C * kh * kw, L, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            cols = runtime.scratch(xp, x.dtype, (C * kh * kw, n * L))
            kernels.im2col(x[part], kh, kw, *win, out=cols)
            y3 = y[part].reshape(n, F, L)                                 # a view of y
            for i in range(n):
                runtime.matmul(W2, _image_columns(cols, i, L), out=y3[i], bias=b,  # (F, L)
                               relu=relu)

    runtime.map_shares(convolve, x.shape[0], xp)
    return y


def data_grad(dy, W, x_shape, win, workspace=None):
    xp, kernels = get_array_module(dy), kernels_for(dy)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W.shape
    L, W2 = Ho * Wo, weight_matrix(W)
    dx = Gather(xp, x_shape, dy.dtype)

    def fold(share):
        for part in chunks(share, C * kh * kw, L, dy.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            dcols = runtime.scratch(xp, dy.dtype, (C * kh * kw, n * L))
            dy3 = dy[part].reshape(n, F, L)
            for i in range(n):
                runtime.matmul(W2.T, dy3[i], out=_image_columns(dcols, i, L))  # (C*kh*kw, L)
            dx.put(part, kernels.col2im(dcols, (n,) + tuple(x_shape[1:]), kh, kw, *win))

    runtime.map_shares(fold, N, xp)
    return dx.result()


def weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    xp, kernels = get_array_module(x), kernels_for(x)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W_shape
    L = Ho * Wo

    def add_chunk(part, dW2, db):
        n = part.stop - part.start
        cols = runtime.scratch(xp, x.dtype, (C * kh * kw, n * L))
        kernels.im2col(x[part], kh, kw, *win, out=cols)
        dy3 = dy[part].reshape(n, F, L)
        for i in range(n):
            dW2 += runtime.matmul(dy3[i], _image_columns(cols, i, L).T)  # (F, C*kh*kw)
            if db is not None:
                db += dy3[i].sum(axis=1)

    dW2, db = weight_grad_by_chunks(dy, x, W_shape, workspace, with_bias, add_chunk)
    return dW2.reshape(W_shape), db


PATH = ConvPath("per_image", forward, data_grad, weight_grad)
