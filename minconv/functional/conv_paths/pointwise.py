"""The pointwise path: a 1x1 convolution is a matrix product, with no unfolding at all.

With 1x1 filters and no padding every output position sees one input position,
so for each image, with W2 = W.reshape(F, C) and x_s = x[:, :, ::sh, ::sw] (the
positions a stride keeps; x itself at stride 1):

    y[n]   = W2 @ x_s[n] + b              (F, L) = (F, C) @ (C, L),   L = Ho*Wo
    dx_s[n] = W2^T @ dy[n]                (C, L); dx is zero off the kept positions
    dW2   += dy[n] @ x_s[n]^T             (F, C);  db += sum of dy[n] over positions

At stride 1 x[n] and y[n] are (C, L) and (F, L) views of NCHW memory: no copy
is made on the way in or out (im2col would copy all of x into columns first).
ResNet-50's bottlenecks have 36 of their 53 convolutions 1x1. The batch's
forward products are one call: the cores split the images' positions, and the
bias and a fused ReLU are applied as each block is written. In float32 where
the compiled tiles run it is their ``pointwise_matmul``, which sums every output
channel in the same order (OpenBLAS's kernels do not: two identical filters then
differ by a few ulps, and ONNX's squeezenet, whose filters are all alike, turned
that into a different softmax). At batch 1 it ran SqueezeNet's 16 -> 64 on 55x55
in 0.05-0.07 ms against BLAS's 0.10-0.16 and ResNet-50's 1x1 layers in 0.74-1.04
of BLAS's time. Elsewhere it is :func:`runtime.batched_matmul`. The tiles also add a
residual (``residual=``, a ResNet bottleneck's shortcut) as they store y: the sum the
Add after them would make, without writing y out and reading it back.

On small maps (fewer than :data:`ONE_GEMM_BELOW` positions: ResNet-50's 7x7
stage) an (F, C) @ (C, 49) product per image is too thin for the BLAS kernels
(23 against 33 GFLOP/s for F=2048, C=512 on one core), so the images of a chunk
are laid side by side, X = (C, n*L), and multiplied at once.

A window that is not 1x1 without padding has no product to skip: the path then
runs :mod:`.per_image`'s (the planner only chooses this path for 1x1 windows).
"""
from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from . import (ConvPath, chunk_rows, chunks, output_array, output_hw, per_image, sum_in_order,
               with_residual)

# Maps of fewer positions multiply a whole chunk in one GEMM.
ONE_GEMM_BELOW = 100


def serves(W_shape, win):
    """True when the window is 1x1 without padding (any stride; dilation is moot)."""
    return tuple(W_shape[2:]) == (1, 1) and tuple(win.padding) == (0, 0)


def _kept(a, win):
    """The positions a stride keeps: a[:, :, ::sh, ::sw] (a view)."""
    sh, sw = win.stride
    return a if (sh, sw) == (1, 1) else a[:, :, ::sh, ::sw]


def _as_matrices(xp, a, n, channels, L):
    """(n, channels, Ho, Wo) -> (n, channels, L): a view when ``a`` is contiguous, else a
    copy into scratch memory."""
    if a.flags.c_contiguous:
        return a.reshape(n, channels, L)
    out = runtime.scratch(xp, a.dtype, (n, channels) + tuple(a.shape[2:]))
    out[...] = a
    return out.reshape(n, channels, L)


def _batch_parts(a, win, C, L, workspace, xp):
    """The whole batch where its (C, L) matrices are views of ``a``; else chunks whose
    copies fit the workspace."""
    if a.flags.c_contiguous and tuple(win.stride) == (1, 1):
        return [slice(0, a.shape[0])]
    return chunks(slice(0, a.shape[0]), C, L, a.dtype.itemsize, workspace, xp)


def _tiles(x, W, b):
    """Whether the tiles take this product (float32 where they run: every output channel
    summed in one order)."""
    fused = getattr(kernels_for(x), "fused_kernels", None)
    return (fused is not None and fused(x.dtype) and W.dtype == x.dtype
            and (b is None or b.dtype == x.dtype))


def _batch_product(x, W2, b):
    """The tiles' product or BLAS's, as ``multiply(W2, x3, out, bias, relu)``."""
    if _tiles(x, W2, b):
        kernels = kernels_for(x)
        return lambda W2, x3, out, bias, relu: kernels.pointwise_matmul(W2, x3, out, bias, relu)
    return runtime.batched_matmul


def _residual_in_tiles(x, W, b, win, residual, out):
    """Whether the tiles add ``residual`` as they store y: one product over the whole batch
    into a fresh y, and a residual laid out as y."""
    Ho, Wo = output_hw(x.shape, W.shape, win)
    return (out is None and serves(W.shape, win) and _tiles(x, W, b)
            and (Ho * Wo >= ONE_GEMM_BELOW or x.shape[0] == 1)
            and residual.dtype == x.dtype and residual.flags.c_contiguous)


def forward(x, W, b, win, workspace=None, relu=False, out=None, residual=None):
    if residual is not None:
        if not _residual_in_tiles(x, W, b, win, residual, out):
            return with_residual(forward(x, W, b, win, workspace, False, out), residual, relu)
        return _forward_with_residual(x, W, b, win, workspace, relu, residual)
    if not serves(W.shape, win):
        y = per_image.forward(x, W, b, win, workspace, relu)
        if out is None:
            return y
        out[...] = y
        return out
    xp = get_array_module(x)
    F, C = W.shape[:2]
    Ho, Wo = output_hw(x.shape, W.shape, win)
    L, W2 = Ho * Wo, W.reshape(F, C)
    y = output_array(xp, out, (x.shape[0], F, Ho, Wo), x.dtype)
    if L >= ONE_GEMM_BELOW or x.shape[0] == 1:  # y[n] = W2 @ x_s[n], the cores sharing it
        multiply = _batch_product(x, W2, b)
        for part in _batch_parts(x, win, C, L, workspace, xp):
            n = part.stop - part.start
            multiply(W2, _as_matrices(xp, _kept(x[part], win), n, C, L),
                     out=y[part].reshape(n, F, L), bias=b, relu=relu)
        return y

    def convolve(share):
        for part in chunks(share, C, L, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            X = _kept(x[part], win).transpose(1, 0, 2, 3).reshape(C, n * L)  # (C, n*L)
            y[part] = runtime.matmul(W2, X, bias=b, relu=relu).reshape(
                F, n, Ho, Wo).transpose(1, 0, 2, 3)

    runtime.map_shares(convolve, x.shape[0], xp)
    return y


def prepare(x_shape, W, b, win, relu):
    """The forward product for inputs of ``x_shape`` as one call of the tiles (see the
    package's docstring): at stride 1 on the float32 tiles, where :func:`forward` makes it
    so (a batch of one, or maps of at least ONE_GEMM_BELOW positions); run returns None for
    an input that is not C-contiguous or an ``out`` that does not fit."""
    N, C, H, Wd = x_shape
    F = W.shape[0]
    if (not serves(W.shape, win) or tuple(win.stride) != (1, 1) or not W.flags.c_contiguous
            or not _tiles(W, W, b) or not (H * Wd >= ONE_GEMM_BELOW or N == 1)):
        return None
    kernels = kernels_for(W)
    if min(x_shape) < 1 or F < 1 or not hasattr(kernels, "PreparedPointwise"):
        return None
    return kernels.PreparedPointwise(W.reshape(F, C), x_shape, b, relu).run


def _forward_with_residual(x, W, b, win, workspace, relu, residual):
    """y[n] = W2 @ x_s[n] + b + residual[n] on the tiles, the batch's parts in one call each."""
    xp, kernels = get_array_module(x), kernels_for(x)
    F, C = W.shape[:2]
    Ho, Wo = output_hw(x.shape, W.shape, win)
    L, W2 = Ho * Wo, W.reshape(F, C)
    y = xp.empty((x.shape[0], F, Ho, Wo), dtype=x.dtype)
    for part in _batch_parts(x, win, C, L, workspace, xp):
        n = part.stop - part.start
        kernels.pointwise_matmul(W2, _as_matrices(xp, _kept(x[part], win), n, C, L),
                                 y[part].reshape(n, F, L), b, relu,
                                 addend=residual[part].reshape(n, F, L))
    return y


def data_grad(dy, W, x_shape, win, workspace=None):
    if not serves(W.shape, win):
        return per_image.data_grad(dy, W, x_shape, win, workspace)
    xp = get_array_module(dy)
    N, F, Ho, Wo = dy.shape
    C = W.shape[1]
    L, W2 = Ho * Wo, W.reshape(F, C)
    strided = tuple(win.stride) != (1, 1)
    dx = (xp.zeros if strided else xp.empty)(x_shape, dtype=dy.dtype)
    if L >= ONE_GEMM_BELOW or N == 1:  # dx_s[n] = W2^T @ dy[n] for the whole batch
        W2T = xp.ascontiguousarray(W2.T)                                  # (C, F)
        for part in _batch_parts(dy, win, C, L, workspace, xp):
            n = part.stop - part.start
            dy3 = dy[part].reshape(n, F, L)
            if strided:
                dxs = runtime.batched_matmul(W2T, dy3, out=runtime.scratch(xp, dy.dtype,
                                                                          (n, C, L)))
                _kept(dx[part], win)[...] = dxs.reshape(n, C, Ho, Wo)
            else:
                runtime.batched_matmul(W2T, dy3, out=dx[part].reshape(n, C, L))
        return dx

    def fold(share):
        for part in chunks(share, C, L, dy.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            dxs = runtime.matmul(W2.T, chunk_rows(dy[part], F, L)).reshape(C, n, Ho, Wo)
            _kept(dx[part], win)[...] = dxs.transpose(1, 0, 2, 3)

    runtime.map_shares(fold, N, xp)
    return dx


def weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    if not serves(W_shape, win):
        return per_image.weight_grad(dy, x, W_shape, win, workspace, with_bias)
    xp = get_array_module(x)
    N, F, Ho, Wo = dy.shape
    C = W_shape[1]
    L = Ho * Wo

    def correlate(share):
        dW2 = xp.zeros((F, C), dtype=x.dtype)
        db = xp.zeros(F, dtype=dy.dtype) if with_bias else None
        for part in chunks(share, C, L, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            if L < ONE_GEMM_BELOW:
                X = _kept(x[part], win).transpose(1, 0, 2, 3).reshape(C, n * L)
                dY = chunk_rows(dy[part], F, L)                           # (F, n*L)
                dW2 += runtime.matmul(dY, X.T)                            # (F, C)
                if with_bias:
                    db += dY.sum(axis=1)
                continue
            x3 = _as_matrices(xp, _kept(x[part], win), n, C, L)
            dy3 = dy[part].reshape(n, F, L)
            for i in range(n):
                dW2 += runtime.matmul(dy3[i], x3[i].T)                    # (F, C)
            if with_bias:
                db += dy3.sum(axis=(0, 2))
        return dW2, db

    dW2, db = sum_in_order(runtime.map_shares(correlate, N, xp), with_bias)
    return dW2.reshape(W_shape), db


PATH = ConvPath("pointwise", forward, data_grad, weight_grad, writes_into=True,
                adds_residual=True, prepare=prepare)
