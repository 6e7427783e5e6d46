"""Convolution as im2col + one matrix multiply, and its transpose C^T.

A convolution is linear in its input: ``conv2d(x, W).ravel() == C @ x.ravel()``
for a sparse matrix C built from the filters. im2col makes that product
cheap: it unfolds every receptive field into a column, so that

    Y[f, (n, ho, wo)] = sum_k W2[f, k] * cols[k, (n, ho, wo)]      (Y = W2 @ cols)

with ``W2 = W.reshape(F, C*kh*kw)``. The backward pass is three products:

    dW   = dY @ cols^T                      (F, C*kh*kw)
    db   = sum of dY over (n, ho, wo)       (F,)
    dx   = col2im(W2^T @ dY)                 = C^T dy

``C^T dy`` is also the forward pass of the transposed convolution
(``conv_transpose2d``), so both go through one function, :func:`_apply_conv_transpose`.

Memory: the columns of a large batch are large (ZFNet conv1 at batch 128 is
~0.9 GB), so every product runs over chunks of the batch whose columns fit in
a workspace of ``workspace_limit()`` bytes (256 MB by default), reused from
call to call. The result does not depend on the chunking.
"""
import threading

import numpy as np

from . import _parallel
from .._kernels import kernels_for
from ..geometry import (check_groups, conv_geometry, conv_output_size, conv_transpose_geometry,
                        conv_transpose_output_size)
from ..backend import get_array_module
from ._checks import check_array, check_same_dtype, check_shape

_WORKSPACE_LIMIT = [256 * 2 ** 20]
_scratch = threading.local()  # each thread's buffers, freed with the thread


def workspace_limit():
    """Bytes that the im2col columns of one chunk may take."""
    return _WORKSPACE_LIMIT[0]


def set_workspace_limit(nbytes):
    """Set the column workspace budget (bytes); returns the previous one."""
    if int(nbytes) < 1:
        raise ValueError(f"set_workspace_limit: expected a positive byte count, got {nbytes}")
    previous = _WORKSPACE_LIMIT[0]
    _WORKSPACE_LIMIT[0] = int(nbytes)
    _scratch.__dict__.clear()  # the caller's; a worker's are at most one cache chunk
    return previous


def _workspace(xp, dtype, shape):
    """A reusable scratch array of ``shape``, one per thread, shared by all convolutions
    on that thread (CPU only)."""
    size = int(np.prod(shape))
    if xp is not np:
        return xp.empty(shape, dtype=dtype)  # CuPy's memory pool already reuses blocks
    key = np.dtype(dtype).name
    buf = getattr(_scratch, key, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        setattr(_scratch, key, buf)
    return buf[:size].reshape(shape)


# Columns written by im2col are read back at once by the GEMM: chunks of about
# this size are still in cache then, which measures 5-20% faster on the large
# layers than one batch-sized chunk. The workspace limit stays the hard bound.
_CACHE_CHUNK_BYTES = 8 * 2 ** 20


def _chunks(part, rows, positions, itemsize, workspace, xp=np):
    """Sub-slices of the batch slice ``part`` whose columns (rows x n*positions) fit in
    the workspace (and on the CPU, where the workspace allows, in about
    ``_CACHE_CHUNK_BYTES``); the budget is shared by the cores working at once."""
    budget = workspace_limit() if workspace is None else int(workspace)
    if xp is np:
        budget = min(budget, _CACHE_CHUNK_BYTES) // (_parallel.cpu_threads()
                                                     if _parallel.in_worker() else 1)
    per_image = max(1, rows * positions * itemsize)
    n_images = part.stop - part.start
    step = max(1, min(n_images, budget // per_image))
    return [slice(n, min(n + step, part.stop)) for n in range(part.start, part.stop, step)]


def _geometry(op, x_shape, W_shape, stride, padding, dilation):
    """Normalise the hyper-parameters and check them against the shapes."""
    return conv_geometry(op, x_shape, W_shape[2:], stride, padding, dilation)


def _check_conv_args(op, x, W, b, channels_axis, groups=1):
    """Check the operands of a (transposed, ``channels_axis=0``) convolution; returns groups."""
    check_array(x, op, "input", 4, "(N, C, H, W)")
    check_array(W, op, "weight", 4)
    check_same_dtype(op, input=x, weight=W, bias=b)
    if channels_axis == 1:   # W : (F, C/groups, kh, kw)
        in_channels, out_channels = W.shape[1] * groups if isinstance(groups, int) else None, \
            W.shape[0]
    else:                    # W : (C_in, C_out/groups, kh, kw)
        in_channels, out_channels = W.shape[0], W.shape[1] * groups \
            if isinstance(groups, int) else None
    groups = check_groups(op, groups, x.shape[1], out_channels)
    if x.shape[1] != in_channels:
        raise ValueError(f"{op}: input has {x.shape[1]} channels but the weight {tuple(W.shape)} "
                         f"with groups={groups} expects {in_channels} "
                         f"(input shape {tuple(x.shape)})")
    if b is not None:
        check_array(b, op, "bias", 1)
        check_shape(b, (out_channels,), op, "bias")
    return groups


# ---------------------------------------------------------------- the three products
#
# Three ways to multiply by the columns of a chunk of n images:
#
# - large maps (ZFNet conv1: 110x110 = 12100 positions; zfnet_mini conv1:
#   28x28 = 784): one GEMM per image reads dy[i] and writes y[i] where they
#   lie in NCHW, and skips two layout transposes;
# - small maps (13x13, 7x7) on the CPU: the columns channels-last, as rows
#   (im2row: one row per position, taps (i, j, c)), through the kernels
#   ``im2row_matmul`` (rows @ w) and ``im2row_t_matmul`` (rows^T @ dy). In
#   float32 with AVX-512, for weights that fit in cache, those never form the
#   rows; elsewhere they are im2row and a GEMM, im2row copying runs of kw*C
#   values where im2col copies rows of Wo values (2-5x faster on 14- and 7-wide
#   maps);
# - small maps on the GPU: one GEMM over the chunk's columns (im2col).
#
# Both layouts hold the same numbers: rows == im2col(x).T with the columns
# reordered from (c, i, j) to (i, j, c), and so the weights are reordered too.
#
# On the rows path dx = C^T dy is, for stride 1, itself a convolution: of dy,
# padded by d(k-1) - p, with the filters flipped in space and their in/out
# channels swapped, so where the product is fused it goes through it too.

_PER_IMAGE_MIN_POSITIONS = 512
# Inputs of at most this many channels (first layers) convolve channels first,
# 16 outputs of a row to a vector, where the AVX-512 tiles run (conv2d_direct).
_DIRECT_MAX_CHANNELS = 4


def _layout(xp, L):
    """'image' (one GEMM per image), 'rows' (channels last) or 'columns'."""
    if L >= _PER_IMAGE_MIN_POSITIONS:
        return "image"
    return "rows" if xp is np else "columns"


def _direct(x, C, stride):
    """True when the forward pass and weight gradient go through conv2d_direct: few
    input channels, width stride 1, and the compiled tiles serving x's dtype."""
    fused = getattr(kernels_for(x), "fused_kernels", None)
    return (C <= _DIRECT_MAX_CHANNELS and stride[1] == 1 and fused is not None
            and get_array_module(x) is np and fused(x.dtype))


def _image_columns(cols, i, L):
    """The columns of image i of a chunk: (C*kh*kw, L), a strided view."""
    return cols[:, i * L:(i + 1) * L]


def _chunk_rows(dy_part, F, L):
    """dy of a chunk as the GEMM operand dY: (n, F, Ho, Wo) -> (F, n*L)."""
    n = dy_part.shape[0]
    return dy_part.reshape(n, F, L).transpose(1, 0, 2).reshape(F, n * L)


def _position_rows(dy_part):
    """dy of a chunk with one row per position: (n, F, Ho, Wo) -> (n*Ho*Wo, F)."""
    return dy_part.transpose(0, 2, 3, 1).reshape(-1, dy_part.shape[1])


def _channels_first(rows, n, Ho, Wo):
    """(n*Ho*Wo, F) with one row per position -> (n, F, Ho, Wo), a view."""
    return rows.reshape(n, Ho, Wo, -1).transpose(0, 3, 1, 2)


def _weight_matrix(W):
    """W (F, C, kh, kw) as im2col's GEMM operand: (F, C*kh*kw), taps (c, i, j)."""
    return W.reshape(W.shape[0], -1)


def _weight_matrix_channels_last(W):
    """W (F, C, kh, kw) as the GEMM operand of im2row's rows: (F, kh*kw*C), taps (i, j, c).
    Its transpose (kh*kw*C, F) is the fused product's ``w_rows``. (Copied with C as
    the inner run; a transpose straight to (kh*kw*C, F) is 2-10x slower.)"""
    return W.transpose(0, 2, 3, 1).reshape(W.shape[0], -1)


def _fuses(kernels, dtype, taps, channels):
    """True when the kernels' im2row products run fused for these weights (taps x channels)."""
    fuses = getattr(kernels, "fuses_im2row", None)
    return fuses is not None and fuses(dtype, taps, channels)


def _weights_from_channels_last(W2, W_shape):
    """The inverse of :func:`_weight_matrix_channels_last`: (F, kh*kw*C) -> (F, C, kh, kw)."""
    F, C, kh, kw = W_shape
    return W2.reshape(F, kh, kw, C).transpose(0, 3, 1, 2).copy()


def _flipped_weight_rows(W):
    """The filters of C^T as a convolution: W[f, c, kh-1-i, kw-1-j] at row (i*kw + j)*F + f,
    column c, so (kh*kw*F, C)."""
    F, C, kh, kw = W.shape
    return W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * F, C)


def _transpose_padding(kernels, dy, W_shape, stride, padding, dilation):
    """The padding of dy under which C^T dy is taken as a convolution, or None.

    With stride 1, dx[h] = sum_i dy[h + p - i*d] W[i] = sum_i dy[h - p' + i*d] W[k-1-i],
    p' = d(k-1) - p: a convolution of dy with the flipped filters. It is taken so
    where the fused im2row product runs it; larger strides (and p > d(k-1)), and
    everything else, go through row2im.
    """
    F, C, kh, kw = W_shape
    full = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    if tuple(stride) != (1, 1) or min(full) < 0 or not _fuses(kernels, dy.dtype, kh * kw * F, C):
        return None
    return full


def _apply_conv(x, W, stride, padding, dilation, Ho, Wo, workspace=None, b=None):
    """y = conv(x, W) + b: (N, C, H, W) -> (N, F, Ho, Wo). The bias is added by the
    core that computed each block, while the block is still in its cache."""
    xp = get_array_module(x)
    kernels = kernels_for(x)
    F, C, kh, kw = W.shape
    L = Ho * Wo
    layout = _layout(xp, L)
    fused = layout == "rows" and _fuses(kernels, x.dtype, C * kh * kw, F)
    if layout == "rows":  # (kh*kw*C, F) for the fused product, (F, kh*kw*C) for the GEMM
        W2 = _weight_matrix_channels_last(W)
        if fused:
            W2 = xp.ascontiguousarray(W2.T)
    else:
        W2 = _weight_matrix(W)
    y = xp.empty((x.shape[0], F, Ho, Wo), dtype=x.dtype)
    direct = _direct(x, C, stride)

    def convolve(share):
        if direct:
            kernels.conv2d_direct(x[share], W, b, stride, padding, dilation, out=y[share])
            return
        for part in _chunks(share, C * kh * kw, L, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            if fused:
                y_rows = kernels.im2row_matmul(x[part], W2, kh, kw, stride, padding, dilation,
                                               bias=b, out=_workspace(xp, x.dtype, (n * L, F)))
                y[part] = _channels_first(y_rows, n, Ho, Wo)
                continue
            if layout == "rows":
                rows = _workspace(xp, x.dtype, (n * L, C * kh * kw))
                kernels.im2row(x[part], kh, kw, stride, padding, dilation, out=rows)
                y_rows = rows @ W2.T                                         # (n*L, F)
                if b is not None:
                    y_rows += b
                y[part] = _channels_first(y_rows, n, Ho, Wo)
                continue
            cols = _workspace(xp, x.dtype, (C * kh * kw, n * L))
            kernels.im2col(x[part], kh, kw, stride, padding, dilation, out=cols)
            if layout == "image":
                y3 = y[part].reshape(n, F, L)                                # a view of y
                for i in range(n):
                    xp.matmul(W2, _image_columns(cols, i, L), out=y3[i])     # (F, L)
                    if b is not None:
                        y3[i] += b[:, None]
            else:
                y2 = W2 @ cols                                               # (F, n*L)
                if b is not None:
                    y2 += b[:, None]
                y[part] = y2.reshape(F, n, Ho, Wo).transpose(1, 0, 2, 3)     # (n, F, Ho, Wo)

    _parallel.map_shares(convolve, x.shape[0], xp)
    return y


def _apply_conv_transpose(dy, W, x_shape, stride, padding, dilation, workspace=None):
    """dx = C^T dy = col2im(W2^T @ dY): (N, F, Ho, Wo) -> x_shape = (N, C, H, W)."""
    xp = get_array_module(dy)
    kernels = kernels_for(dy)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W.shape
    L = Ho * Wo
    layout = _layout(xp, L)
    full_padding = _transpose_padding(kernels, dy, W.shape, stride, padding, dilation)
    if layout == "rows" and full_padding is not None:
        W2 = xp.ascontiguousarray(_flipped_weight_rows(W))                  # (kh*kw*F, C)
    else:
        W2 = _weight_matrix_channels_last(W) if layout == "rows" else _weight_matrix(W)
    dx = xp.empty(x_shape, dtype=dy.dtype) if N > 1 else None  # filled chunk by chunk
    whole = []                                                   # ... unless one chunk is all

    def fold(share):
        for part in _chunks(share, C * kh * kw, L, dy.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            chunk_shape = (n,) + tuple(x_shape[1:])
            if layout == "rows" and full_padding is not None:
                H, Wd = x_shape[2:]
                dx_rows = kernels.im2row_matmul(dy[part], W2, kh, kw, (1, 1), full_padding,
                                                dilation, out=_workspace(xp, dy.dtype,
                                                                         (n * H * Wd, C)))
                folded = _channels_first(dx_rows, n, H, Wd)   # a view of the workspace
                if n == N:
                    folded = folded.copy()                     # ... which the next call reuses
            elif layout == "rows":
                drows = _workspace(xp, dy.dtype, (n * L, C * kh * kw))
                xp.matmul(_position_rows(dy[part]), W2, out=drows)          # (n*L, kh*kw*C)
                folded = kernels.row2im(drows, chunk_shape, kh, kw, stride, padding, dilation)
            else:
                dcols = _workspace(xp, dy.dtype, (C * kh * kw, n * L))
                if layout == "image":
                    dy3 = dy[part].reshape(n, F, L)
                    for i in range(n):
                        xp.matmul(W2.T, dy3[i], out=_image_columns(dcols, i, L))  # (C*kh*kw, L)
                else:
                    xp.matmul(W2.T, _chunk_rows(dy[part], F, L), out=dcols)   # (C*kh*kw, n*L)
                folded = kernels.col2im(dcols, chunk_shape, kh, kw, stride, padding, dilation)
            if n == N:
                whole.append(folded)  # the batch in one chunk: no copy
            else:
                dx[part] = folded

    _parallel.map_shares(fold, N, xp)
    return whole[0] if whole else dx


def _weight_grad(dy, x, W_shape, stride, padding, dilation, workspace=None, with_bias=False):
    """dW = dY @ cols^T, summed over the batch: (F, C, kh, kw); with ``with_bias`` also
    db = dy summed over (n, ho, wo), taken by each core from its share while in cache."""
    xp = get_array_module(x)
    kernels = kernels_for(x)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W_shape
    L = Ho * Wo
    layout = _layout(xp, L)

    direct = _direct(x, C, stride)
    fused = layout == "rows" and _fuses(kernels, x.dtype, C * kh * kw, F)

    def correlate(share):
        if direct:
            dW = kernels.conv2d_direct_weight_grad(dy[share], x[share], W_shape, stride,
                                                   padding, dilation)
            return dW, dy[share].sum(axis=(0, 2, 3)) if with_bias else None
        dW2, db = None, xp.zeros(F, dtype=dy.dtype) if with_bias else None
        for part in _chunks(share, C * kh * kw, L, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            if dW2 is None:
                dW2 = xp.zeros((F, C * kh * kw), dtype=x.dtype)
            if layout == "rows":
                dy_rows = _position_rows(dy[part])                              # (n*L, F)
                if fused:
                    dW2 += kernels.im2row_t_matmul(x[part], dy_rows, kh, kw, stride, padding,
                                                   dilation).T                  # (F, kh*kw*C)
                else:
                    rows = _workspace(xp, x.dtype, (n * L, C * kh * kw))
                    kernels.im2row(x[part], kh, kw, stride, padding, dilation, out=rows)
                    dW2 += dy_rows.T @ rows
                if with_bias:
                    db += dy_rows.sum(axis=0)
                continue
            cols = _workspace(xp, x.dtype, (C * kh * kw, n * L))
            kernels.im2col(x[part], kh, kw, stride, padding, dilation, out=cols)
            if layout == "image":
                dy3 = dy[part].reshape(n, F, L)
                for i in range(n):
                    dW2 += dy3[i] @ _image_columns(cols, i, L).T                 # (F, C*kh*kw)
                    if with_bias:
                        db += dy3[i].sum(axis=1)
            else:
                dY = _chunk_rows(dy[part], F, L)
                dW2 += dY @ cols.T
                if with_bias:
                    db += dY.sum(axis=1)
        return dW2, db

    partial = _parallel.map_shares(correlate, N, xp)
    dW2, db = partial[0]
    for term, db_term in partial[1:]:  # in share order: the same sum on every call
        dW2 += term
        if with_bias:
            db += db_term
    if direct:
        dW = dW2
    else:
        dW = _weights_from_channels_last(dW2, W_shape) if layout == "rows" \
            else dW2.reshape(W_shape)
    return (dW, db) if with_bias else dW


# ---------------------------------------------------------------- public ops

def _group_slices(groups, channels):
    """The channel slices of ``groups`` equal groups of ``channels``."""
    size = channels // groups
    return [slice(g * size, (g + 1) * size) for g in range(groups)]


def conv2d(x, W, b=None, stride=1, padding=0, dilation=1, groups=1, *, workspace=None):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    x : (N, C, H, W)    W : (F, C/groups, kh, kw)    b : (F,) or None
    y : (N, F, Ho, Wo), Ho = floor((H + 2*ph - dh*(kh-1) - 1) / sh) + 1

        y[n, f, ho, wo] = b[f] + sum_{c,i,j} W[f, c, i, j] * x[n, c, ho*sh - ph + i*dh, wo*sw - pw + j*dw]

    With ``groups`` g the channels split into g groups: output group k (F/g filters)
    sees only input group k (C/g channels); depthwise when g == C.
    ``padding`` may be "same" or "valid". ``workspace`` overrides the column budget
    in bytes for this call.
    """
    groups = _check_conv_args("conv2d", x, W, b, channels_axis=1, groups=groups)
    stride, padding, dilation, Ho, Wo = _geometry("conv2d", x.shape, W.shape,
                                                  stride, padding, dilation)
    if groups == 1:
        return _apply_conv(x, W, stride, padding, dilation, Ho, Wo, workspace, b)
    xp = get_array_module(x)
    y = xp.empty((x.shape[0], W.shape[0], Ho, Wo), dtype=x.dtype)
    for cs, fs in zip(_group_slices(groups, x.shape[1]), _group_slices(groups, W.shape[0])):
        y[:, fs] = _apply_conv(xp.ascontiguousarray(x[:, cs]), W[fs], stride, padding, dilation,
                               Ho, Wo, workspace, None if b is None else b[fs])
    return y


def conv2d_backward(dy, x, W, stride=1, padding=0, dilation=1, groups=1, *, workspace=None,
                    need_input_grad=True, need_weight_grad=True):
    """Gradients of :func:`conv2d`: ``(dx, dW, db)``.

    dy : (N, F, Ho, Wo)  ->  dx : (N, C, H, W) = C^T dy,  dW : (F, C/groups, kh, kw),  db : (F,)
    A gradient that is not needed comes back as None.
    """
    groups = _check_conv_args("conv2d_backward", x, W, None, channels_axis=1, groups=groups)
    stride, padding, dilation, Ho, Wo = _geometry("conv2d_backward", x.shape, W.shape,
                                                  stride, padding, dilation)
    check_array(dy, "conv2d_backward", "dy", 4)
    check_shape(dy, (x.shape[0], W.shape[0], Ho, Wo), "conv2d_backward", "dy")
    check_same_dtype("conv2d_backward", dy=dy, input=x)
    if groups > 1:
        return _grouped_conv2d_backward(dy, x, W, stride, padding, dilation, groups, workspace,
                                        need_input_grad, need_weight_grad)
    dx = dW = db = None
    if need_weight_grad:
        dW, db = _weight_grad(dy, x, W.shape, stride, padding, dilation, workspace,
                              with_bias=True)
    if need_input_grad:
        dx = _apply_conv_transpose(dy, W, x.shape, stride, padding, dilation, workspace)
    return dx, dW, db


def _grouped_conv2d_backward(dy, x, W, stride, padding, dilation, groups, workspace,
                             need_input_grad, need_weight_grad):
    """:func:`conv2d_backward` one group at a time, on the group's channel slices."""
    xp = get_array_module(x)
    dx = xp.empty_like(x) if need_input_grad else None
    dW = xp.empty_like(W) if need_weight_grad else None
    db = dy.sum(axis=(0, 2, 3)) if need_weight_grad else None
    for cs, fs in zip(_group_slices(groups, x.shape[1]), _group_slices(groups, W.shape[0])):
        dy_g = xp.ascontiguousarray(dy[:, fs])
        if need_weight_grad:
            dW[fs] = _weight_grad(dy_g, xp.ascontiguousarray(x[:, cs]), W[fs].shape, stride,
                                  padding, dilation, workspace)
        if need_input_grad:
            dx[:, cs] = _apply_conv_transpose(dy_g, W[fs], (x.shape[0],) + W[fs].shape[1:2]
                                              + x.shape[2:], stride, padding, dilation,
                                              workspace)
    return dx, dW, db


def _transpose_geometry(op, x, W, stride, padding, dilation, output_padding, groups=1):
    stride, padding, dilation, _, y_shape = conv_transpose_geometry(
        op, x.shape, W.shape[2:], W.shape[1] * groups, stride, padding, dilation, output_padding)
    return stride, padding, dilation, y_shape


def _fits(x_shape, y_shape, W_shape, stride, padding, dilation):
    """True when convolving a ``y_shape`` image gives back exactly x's (Hi, Wi).

    It does not when output_padding >= stride (allowed when dilation > stride): the
    extra rows then lie beyond what one symmetric padding can describe.
    """
    kh, kw = W_shape[2:]
    return (conv_output_size(y_shape[2], kh, stride[0], padding[0], dilation[0]) == x_shape[2]
            and conv_output_size(y_shape[3], kw, stride[1], padding[1], dilation[1]) == x_shape[3])


def _uncropped_shape(x_shape, W_shape, stride, dilation):
    """(N, C_out, Hf, Wf): the transposed convolution's output before padding crops it."""
    N, _, Hi, Wi = x_shape
    _, C_out, kh, kw = W_shape
    return (N, C_out, conv_transpose_output_size(Hi, kh, stride[0], 0, dilation[0]),
            conv_transpose_output_size(Wi, kw, stride[1], 0, dilation[1]))


def _crop(full, y_shape, padding):
    """full[:, :, ph:ph+H, pw:pw+W], zero where that window runs past full's edge."""
    xp = get_array_module(full)
    (ph, pw), (H, W) = padding, y_shape[2:]
    h, w = min(H, full.shape[2] - ph), min(W, full.shape[3] - pw)
    y = xp.zeros(y_shape, dtype=full.dtype)
    y[:, :, :h, :w] = full[:, :, ph:ph + h, pw:pw + w]
    return y


def _uncrop(dy, full_shape, padding):
    """The transpose of :func:`_crop`: dy placed at (ph, pw) in zeros of ``full_shape``."""
    xp = get_array_module(dy)
    (ph, pw), (H, W) = padding, dy.shape[2:]
    h, w = min(H, full_shape[2] - ph), min(W, full_shape[3] - pw)
    full = xp.zeros(full_shape, dtype=dy.dtype)
    full[:, :, ph:ph + h, pw:pw + w] = dy[:, :, :h, :w]
    return full


def conv_transpose2d(x, W, b=None, stride=1, padding=0, dilation=1, groups=1, *,
                     output_padding=0, workspace=None):
    """Transposed convolution: multiplication by C^T, the data-gradient of a convolution.

    x : (N, C_in, Hi, Wi)    W : (C_in, C_out/groups, kh, kw)    b : (C_out,) or None
    y : (N, C_out, H, W),  H = (Hi - 1)*sh - 2*ph + dh*(kh - 1) + 1 + output_padding

    ``conv_transpose2d(dy, W) == conv2d_backward(dy, x, W)[0]`` for the convolution
    with the same W (seen as (F=C_in, C=C_out/groups, kh, kw)) and an x of shape
    (N, C_out, H, W), with the same ``groups``.
    """
    groups = _check_conv_args("conv_transpose2d", x, W, b, channels_axis=0, groups=groups)
    stride, padding, dilation, y_shape = _transpose_geometry(
        "conv_transpose2d", x, W, stride, padding, dilation, output_padding, groups)
    xp = get_array_module(x)
    if groups == 1:
        y = _transpose_one(x, W, y_shape, stride, padding, dilation, workspace)
    else:
        y = xp.empty(y_shape, dtype=x.dtype)
        group_shape = (y_shape[0], W.shape[1]) + tuple(y_shape[2:])
        for cs, os_ in zip(_group_slices(groups, x.shape[1]), _group_slices(groups, y_shape[1])):
            y[:, os_] = _transpose_one(xp.ascontiguousarray(x[:, cs]), W[cs], group_shape,
                                       stride, padding, dilation, workspace)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _transpose_one(x, W, y_shape, stride, padding, dilation, workspace):
    """C^T x for one group, cropping where output_padding reaches past one padding."""
    if _fits(x.shape, y_shape, W.shape, stride, padding, dilation):
        return _apply_conv_transpose(x, W, y_shape, stride, padding, dilation, workspace)
    full_shape = _uncropped_shape(x.shape, W.shape, stride, dilation)
    full = _apply_conv_transpose(x, W, full_shape, stride, (0, 0), dilation, workspace)
    return _crop(full, y_shape, padding)


def conv_transpose2d_backward(dy, x, W, stride=1, padding=0, dilation=1, groups=1, *,
                              output_padding=0, workspace=None, need_input_grad=True,
                              need_weight_grad=True):
    """Gradients of :func:`conv_transpose2d`: ``(dx, dW, db)``.

    The duality runs both ways: the input-gradient of C^T is C, a plain convolution,
    and the weight-gradient is that of the convolution with x and dy swapped.
    """
    op = "conv_transpose2d_backward"
    groups = _check_conv_args(op, x, W, None, channels_axis=0, groups=groups)
    stride, padding, dilation, y_shape = _transpose_geometry(
        op, x, W, stride, padding, dilation, output_padding, groups)
    check_array(dy, op, "dy", 4)
    check_shape(dy, y_shape, op, "dy")
    check_same_dtype(op, dy=dy, input=x)
    xp = get_array_module(x)
    db = dy.sum(axis=(0, 2, 3)) if need_weight_grad else None
    if groups == 1:
        dx, dW = _transpose_backward_one(dy, x, W, stride, padding, dilation, workspace,
                                         need_input_grad, need_weight_grad)
        return dx, dW, db
    dx = xp.empty_like(x) if need_input_grad else None
    dW = xp.empty_like(W) if need_weight_grad else None
    for cs, os_ in zip(_group_slices(groups, x.shape[1]), _group_slices(groups, y_shape[1])):
        dx_g, dW_g = _transpose_backward_one(
            xp.ascontiguousarray(dy[:, os_]), xp.ascontiguousarray(x[:, cs]), W[cs], stride,
            padding, dilation, workspace, need_input_grad, need_weight_grad)
        if need_input_grad:
            dx[:, cs] = dx_g
        if need_weight_grad:
            dW[cs] = dW_g
    return dx, dW, db


def _transpose_backward_one(dy, x, W, stride, padding, dilation, workspace, need_input_grad,
                            need_weight_grad):
    """(dx, dW) of C^T x for one group: dx = C dy, dW the convolution's with x, dy swapped."""
    y_shape = dy.shape
    dx = dW = None
    if not _fits(x.shape, y_shape, W.shape, stride, padding, dilation):
        dy = _uncrop(dy, _uncropped_shape(x.shape, W.shape, stride, dilation), padding)
        padding = (0, 0)
    if need_input_grad:
        dx = _apply_conv(dy, W, stride, padding, dilation, x.shape[2], x.shape[3], workspace)
    if need_weight_grad:
        dW = _weight_grad(x, dy, W.shape, stride, padding, dilation, workspace)
    return dx, dW


def im2col(x, kh, kw, stride=1, padding=0, dilation=1):
    """Unfold the receptive fields of x: (N, C, H, W) -> cols (C*kh*kw, N*Ho*Wo).

    Row ``(c*kh + i)*kw + j`` is tap (i, j) of channel c; column ``(n*Ho + ho)*Wo + wo``.
    """
    check_array(x, "im2col", "input", 4, "(N, C, H, W)")
    stride, padding, dilation, Ho, Wo = _geometry("im2col", x.shape, (0, 0, kh, kw),
                                                  stride, padding, dilation)
    return kernels_for(x).im2col(x, kh, kw, stride, padding, dilation)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0, dilation=1):
    """Fold columns (C*kh*kw, N*Ho*Wo) back onto an image of ``x_shape``, summing overlaps."""
    check_array(cols, "col2im", "cols", 2)
    x_shape = tuple(int(s) for s in x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"col2im: x_shape must be (N, C, H, W), got {x_shape}")
    stride, padding, dilation, Ho, Wo = _geometry("col2im", x_shape, (0, 0, kh, kw),
                                                  stride, padding, dilation)
    N, C = x_shape[:2]
    check_shape(cols, (C * kh * kw, N * Ho * Wo), "col2im", "cols")
    return kernels_for(cols).col2im(cols, x_shape, kh, kw, stride, padding, dilation)


def conv_matrix(W, input_shape, stride=1, padding=0, dilation=1):
    """The dense matrix C of a convolution, for small inputs: ``conv2d(x, W) == C @ x.ravel()``.

    W : (F, C, kh, kw), input_shape : (C, H, W) or (1, C, H, W)
    C : (F*Ho*Wo, C*H*W); then ``conv_transpose2d(y, W) == C.T @ y.ravel()``.

    Built column by column: column i is the convolution of the i-th unit image.
    """
    check_array(W, "conv_matrix", "weight", 4)
    shape = tuple(input_shape)[-3:]
    if len(shape) != 3 or shape[0] != W.shape[1]:
        raise ValueError(f"conv_matrix: input_shape {tuple(input_shape)} does not match the "
                         f"weight {tuple(W.shape)} (expected (C={W.shape[1]}, H, W))")
    xp = get_array_module(W)
    size = int(np.prod(shape))
    if size > 4096:
        raise ValueError(f"conv_matrix: input {shape} has {size} pixels; the dense matrix is "
                         "meant for small examples (at most 4096 input values)")
    units = xp.eye(size, dtype=W.dtype).reshape((size,) + shape)  # every unit image at once
    columns = conv2d(units, W, None, stride, padding, dilation)    # (size, F, Ho, Wo)
    return columns.reshape(size, -1).T.copy()
