"""Convolution as im2col + one matrix multiply, and its transpose C^T.

A convolution is linear in its input: ``conv2d(x, W).ravel() == C @ x.ravel()``
for a sparse matrix C built from the filters. im2col makes that product cheap:
it unfolds every receptive field into a column, so that with
``W2 = W.reshape(F, C*kh*kw)``

    Y   = W2 @ cols                       (F, N*Ho*Wo)     the forward pass
    dW  = dY @ cols^T                     (F, C*kh*kw)     the weight gradient
    db  = sum of dY over (n, ho, wo)      (F,)
    dx  = col2im(W2^T @ dY)  = C^T dy     (N, C, H, W)     the data gradient

``C^T dy`` is also the forward pass of the transposed convolution: one function,
:func:`columns_data_grad`, serves ``conv2d_backward``'s dx and ``conv_transpose2d``.

Memory: the columns of a large batch are large (ZFNet conv1 at batch 128 is
~0.9 GB), so each product runs over chunks of the batch whose columns fit in the
workspace (``mc.runtime.configure(workspace_mb=...)``, 256 MB by default); the
result does not depend on the chunking. The cores share the batch
(``runtime.map_shares``): each convolves its own images.

This readable path is the ``"columns"`` plan. Faster ways of computing the same
three products are named paths in :mod:`.conv_paths`, and :mod:`.conv_plan`
chooses one from the shapes, the device and the CPU; every op takes ``plan=``
to choose it yourself, and ``groups=`` for grouped (depthwise) convolution.
"""
import numpy as np

from .. import runtime
from .._kernels import kernels_for
from ..backend import get_array_module
from ..geometry import (check_groups, conv_geometry, conv_transpose_geometry,
                        conv_transpose_output_size)
from ._checks import check_array, check_same_dtype, check_shape
from .conv_paths import ConvPath, Gather, Window, chunk_rows, chunks, output_hw, weight_grad_by_chunks
from .conv_plan import derives_once, resolve
from .conv_run import run_data_grad, run_forward, run_weight_grad

# ---------------------------------------------------------------- the paper's path: columns


def columns_forward(x, W, b, win, workspace=None, relu=False):
    """y = W2 @ im2col(x) + b, chunk by chunk: (N, C, H, W) -> (N, F, Ho, Wo); max(y, 0)
    with ``relu``."""
    xp, kernels = get_array_module(x), kernels_for(x)
    F, C, kh, kw = W.shape
    Ho, Wo = output_hw(x.shape, W.shape, win)
    W2 = W.reshape(F, -1)                                                 # (F, C*kh*kw)
    y = xp.empty((x.shape[0], F, Ho, Wo), dtype=x.dtype)

    def convolve(share):
        for part in chunks(share, C * kh * kw, Ho * Wo, x.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            cols = runtime.scratch(xp, x.dtype, (C * kh * kw, n * Ho * Wo))
            kernels.im2col(x[part], kh, kw, *win, out=cols)               # (C*kh*kw, n*Ho*Wo)
            y2 = runtime.matmul(W2, cols, bias=b, relu=relu)              # (F, n*Ho*Wo)
            y[part] = y2.reshape(F, n, Ho, Wo).transpose(1, 0, 2, 3)      # (n, F, Ho, Wo)

    runtime.map_shares(convolve, x.shape[0], xp)
    return y


def columns_data_grad(dy, W, x_shape, win, workspace=None):
    """dx = C^T dy = col2im(W2^T @ dY): (N, F, Ho, Wo) -> x_shape (N, C, H, W)."""
    xp, kernels = get_array_module(dy), kernels_for(dy)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W.shape
    W2 = W.reshape(F, -1)
    dx = Gather(xp, x_shape, dy.dtype)

    def fold(share):
        for part in chunks(share, C * kh * kw, Ho * Wo, dy.dtype.itemsize, workspace, xp):
            n = part.stop - part.start
            dcols = runtime.scratch(xp, dy.dtype, (C * kh * kw, n * Ho * Wo))
            runtime.matmul(W2.T, chunk_rows(dy[part], F, Ho * Wo), out=dcols)  # (C*kh*kw, n*L)
            dx.put(part, kernels.col2im(dcols, (n,) + tuple(x_shape[1:]), kh, kw, *win))

    runtime.map_shares(fold, N, xp)
    return dx.result()


def columns_weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    """dW = dY @ cols^T summed over the batch, (F, C, kh, kw); db = dY summed, (F,) or None."""
    xp, kernels = get_array_module(x), kernels_for(x)
    N, F, Ho, Wo = dy.shape
    _, C, kh, kw = W_shape

    def add_chunk(part, dW2, db):
        n = part.stop - part.start
        cols = runtime.scratch(xp, x.dtype, (C * kh * kw, n * Ho * Wo))
        kernels.im2col(x[part], kh, kw, *win, out=cols)
        dY = chunk_rows(dy[part], F, Ho * Wo)                             # (F, n*Ho*Wo)
        dW2 += runtime.matmul(dY, cols.T)                                 # (F, C*kh*kw)
        if db is not None:
            db += dY.sum(axis=1)

    dW2, db = weight_grad_by_chunks(dy, x, W_shape, workspace, with_bias, add_chunk)
    return dW2.reshape(W_shape), db


COLUMNS = ConvPath("columns", columns_forward, columns_data_grad, columns_weight_grad)


# ---------------------------------------------------------------- public ops

def conv2d(x, W, b=None, stride=1, padding=0, dilation=1, groups=1, *, plan=None,
           workspace=None):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    x : (N, C, H, W)    W : (F, C/groups, kh, kw)    b : (F,) or None
    y : (N, F, Ho, Wo), Ho = floor((H + 2*ph - dh*(kh-1) - 1) / sh) + 1

        y[n, f, ho, wo] = b[f] + sum_{c,i,j} W[f, c, i, j] * x[n, c, ho*sh - ph + i*dh, wo*sw - pw + j*dw]

    ``groups`` g splits the channels: output group k (F/g filters) sees only input
    group k (C/g channels); depthwise when g == C. ``padding`` may be "same" or
    "valid". ``plan`` picks the path (a name of ``PLANS`` or a ``Plan``; default: the
    planner's). ``workspace`` overrides the column budget in bytes for this call.
    """
    return conv2d_planned(x, W, b, stride, padding, dilation, groups, plan=plan,
                          workspace=workspace)[0]


def conv2d_planned(x, W, b=None, stride=1, padding=0, dilation=1, groups=1, *, plan=None,
                   workspace=None, relu=False, out=None, residual=None):
    """:func:`conv2d` and the :class:`~.conv_plan.Plan` it ran: ``(y, plan)``, checked
    and planned once (a layer keeps the plan for its backward pass). With ``residual`` (an
    array of y's shape and dtype), y is conv2d(x, W, b) + residual: the Add of a residual
    connection, made as the path writes y where it can (``adds_residual``). With ``relu``,
    y is max(that, 0): a ReLU that follows, applied as the path writes y. With ``out``
    (an array of y's shape and dtype, each image's maps contiguous: the channel slice of a
    concatenation's output, say), y is written there and returned."""
    groups, win, group_shape = _prepare("conv2d", x, W, stride, padding, dilation, groups, b)
    plan = resolve(plan, x, group_shape, _group_weight(W.shape, groups, 0), win,
                   derives_once(W, groups))
    if out is not None:
        _check_out(out, x, W, win)
    if residual is not None:
        _check_residual(residual, x, W, win)
    return run_forward(plan, x, W, b, win, groups, workspace, relu, out, residual), plan


def _check_out(out, x, W, win):
    """``out`` must be y's shape and dtype, on y's device, each image's maps contiguous."""
    Ho, Wo = output_hw(x.shape, W.shape, win)
    shape = (x.shape[0], W.shape[0], Ho, Wo)
    itemsize = x.dtype.itemsize
    if (type(out) is not type(x) or tuple(out.shape) != shape or out.dtype != x.dtype
            or (out.size and tuple(out.strides[1:]) != (Ho * Wo * itemsize, Wo * itemsize,
                                                        itemsize))):
        raise ValueError(f"conv2d: out must be a {x.dtype} {type(x).__name__} of shape "
                         f"{shape} with each image's maps contiguous, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} "
                         f"{tuple(getattr(out, 'shape', ()))}")


def _check_residual(residual, x, W, win):
    """``residual`` must be an array of y's shape and dtype on y's device."""
    shape = (x.shape[0], W.shape[0]) + output_hw(x.shape, W.shape, win)
    if (type(residual) is not type(x) or tuple(residual.shape) != shape
            or residual.dtype != x.dtype):
        raise ValueError(f"conv2d: residual must be a {x.dtype} {type(x).__name__} of shape "
                         f"{shape}, got {getattr(residual, 'dtype', type(residual).__name__)} "
                         f"{tuple(getattr(residual, 'shape', ()))}")


def conv2d_backward(dy, x, W, stride=1, padding=0, dilation=1, groups=1, *, plan=None,
                    workspace=None, need_input_grad=True, need_weight_grad=True,
                    need_bias_grad=True):
    """Gradients of :func:`conv2d`: ``(dx, dW, db)``.

    dy : (N, F, Ho, Wo)  ->  dx : (N, C, H, W) = C^T dy,  dW : (F, C/groups, kh, kw),  db : (F,)
    A gradient that is not needed comes back as None (db also without
    ``need_bias_grad``: a convolution without bias). ``plan`` as in :func:`conv2d`
    (a layer passes the plan its forward pass used).
    """
    op = "conv2d_backward"
    groups, win, group_shape = _prepare(op, x, W, stride, padding, dilation, groups)
    check_array(dy, op, "dy", 4)
    check_shape(dy, (x.shape[0], W.shape[0]) + output_hw(x.shape, W.shape, win), op, "dy")
    check_same_dtype(op, dy=dy, input=x)
    plan = resolve(plan, x, group_shape, _group_weight(W.shape, groups, 0), win)
    dx = dW = db = None
    if need_weight_grad:
        dW, db = run_weight_grad(plan, dy, x, W.shape, win, groups, workspace,
                                 with_bias=need_bias_grad)
    if need_input_grad:
        dx = run_data_grad(plan, dy, W, x.shape, win, groups, workspace)
    return dx, dW, db


def _group_weight(W_shape, groups, axis):
    """The weight shape of one group: axis 0 (F) or, for a transposed conv's W, the same."""
    shape = list(W_shape)
    shape[axis] //= groups
    return tuple(shape)


# _prepare's answers by the operands' kinds, shapes and dtypes and the geometry: a net
# calls each of its layers with the same ones pass after pass (the checks took 5 us of
# the 40-60 a small layer's call costs at batch 1)
_prepared = {}


def _prepare(op, x, W, stride, padding, dilation, groups, b=None):
    """Check a convolution's operands; returns (groups, Window, one group's x shape)."""
    try:
        key = (op, type(x), x.shape, x.dtype, type(W), W.shape, W.dtype,
               None if b is None else (type(b), b.shape, b.dtype), stride, padding, dilation,
               groups)
        hash(key)
    except (AttributeError, TypeError):  # not arrays, or geometry given as lists
        return _check_and_prepare(op, x, W, stride, padding, dilation, groups, b)
    prepared = _prepared.get(key)
    if prepared is None:
        prepared = _check_and_prepare(op, x, W, stride, padding, dilation, groups, b)
        if len(_prepared) >= 4096:
            _prepared.clear()
        _prepared[key] = prepared
    return prepared


def _check_and_prepare(op, x, W, stride, padding, dilation, groups, b):
    groups = _check_conv_args(op, x, W, b, channels_axis=1, groups=groups)
    stride, padding, dilation, _, _ = conv_geometry(op, x.shape, W.shape[2:], stride, padding,
                                                    dilation)
    group_shape = (x.shape[0], x.shape[1] // groups) + tuple(x.shape[2:])
    return groups, Window(stride, padding, dilation), group_shape


def _check_conv_args(op, x, W, b, channels_axis, groups=1):
    """Check the operands of a convolution (``channels_axis=1``, W : (F, C/groups, kh, kw))
    or a transposed one (``channels_axis=0``, W : (C_in, C_out/groups, kh, kw)); returns groups."""
    check_array(x, op, "input", 4, "(N, C, H, W)")
    check_array(W, op, "weight", 4)
    check_same_dtype(op, input=x, weight=W, bias=b)
    g = groups if isinstance(groups, (int, np.integer)) and groups > 0 else 1
    if channels_axis == 1:
        in_channels, out_channels = W.shape[1] * g, W.shape[0]
    else:
        in_channels, out_channels = W.shape[0], W.shape[1] * g
    groups = check_groups(op, groups, in_channels, out_channels)
    if x.shape[1] != in_channels:
        grouping = f" with groups={groups}" if groups > 1 else ""
        raise ValueError(f"{op}: input has {x.shape[1]} channels but the weight {tuple(W.shape)}"
                         f"{grouping} expects {in_channels} (input shape {tuple(x.shape)})")
    if b is not None:
        check_array(b, op, "bias", 1)
        check_shape(b, (out_channels,), op, "bias")
    return groups


# ---------------------------------------------------------------- the transposed convolution

def conv_transpose2d(x, W, b=None, stride=1, padding=0, dilation=1, groups=1, *,
                     output_padding=0, plan=None, workspace=None):
    """Transposed convolution: multiplication by C^T, the data-gradient of a convolution.

    x : (N, C_in, Hi, Wi)    W : (C_in, C_out/groups, kh, kw)    b : (C_out,) or None
    y : (N, C_out, H, W),  H = (Hi - 1)*sh - 2*ph + dh*(kh - 1) + 1 + output_padding

    ``conv_transpose2d(dy, W) == conv2d_backward(dy, x, W)[0]`` for the convolution
    with the same W (seen as (F=C_in, C=C_out/groups, kh, kw)) and an x of shape
    (N, C_out, H, W), with the same ``groups``; ``plan`` is that convolution's.
    """
    op = "conv_transpose2d"
    groups = _check_conv_args(op, x, W, b, channels_axis=0, groups=groups)
    win, y_shape = _transpose_window(op, x, W, stride, padding, dilation, output_padding, groups)
    y = _transpose_apply(plan, x, W, y_shape, win, groups, workspace)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv_transpose2d_backward(dy, x, W, stride=1, padding=0, dilation=1, groups=1, *,
                              output_padding=0, plan=None, workspace=None,
                              need_input_grad=True, need_weight_grad=True):
    """Gradients of :func:`conv_transpose2d`: ``(dx, dW, db)``.

    The duality runs both ways: the input-gradient of C^T is C, a plain convolution,
    and the weight-gradient is that of the convolution with x and dy swapped.
    """
    op = "conv_transpose2d_backward"
    groups = _check_conv_args(op, x, W, None, channels_axis=0, groups=groups)
    win, y_shape = _transpose_window(op, x, W, stride, padding, dilation, output_padding, groups)
    check_array(dy, op, "dy", 4)
    check_shape(dy, y_shape, op, "dy")
    check_same_dtype(op, dy=dy, input=x)
    db = dy.sum(axis=(0, 2, 3)) if need_weight_grad else None
    if not _fits(x.shape, y_shape, W.shape, win):
        dy = _uncrop(dy, _uncropped_shape(x.shape, W.shape, win, groups), win.padding)
        win = win._replace(padding=(0, 0))
    plan = resolve(plan, dy, _group_input(dy.shape, groups), _group_weight(W.shape, groups, 0),
                   win)
    dx = run_forward(plan, dy, W, None, win, groups, workspace) if need_input_grad else None
    dW = run_weight_grad(plan, x, dy, W.shape, win, groups, workspace)[0] \
        if need_weight_grad else None
    return dx, dW, db


def choose_transpose_plan(x, W, stride=1, padding=0, dilation=1, groups=1, *, output_padding=0,
                          plan=None):
    """The :class:`~.conv_plan.Plan` that ``conv_transpose2d(x, W, ...)`` and its backward
    run: that of the convolution whose data gradient it is."""
    op = "conv_transpose2d"
    groups = _check_conv_args(op, x, W, None, channels_axis=0, groups=groups)
    win, y_shape = _transpose_window(op, x, W, stride, padding, dilation, output_padding, groups)
    if not _fits(x.shape, y_shape, W.shape, win):
        y_shape, win = _uncropped_shape(x.shape, W.shape, win, groups), win._replace(padding=(0, 0))
    return resolve(plan, x, _group_input(y_shape, groups), _group_weight(W.shape, groups, 0), win)


def _group_input(shape, groups):
    return (shape[0], shape[1] // groups) + tuple(shape[2:])


def _transpose_window(op, x, W, stride, padding, dilation, output_padding, groups):
    stride, padding, dilation, _, y_shape = conv_transpose_geometry(
        op, x.shape, W.shape[2:], W.shape[1] * groups, stride, padding, dilation, output_padding)
    return Window(stride, padding, dilation), y_shape


def _transpose_apply(plan, x, W, y_shape, win, groups, workspace):
    """C^T x into y_shape, through the plan's data-gradient path (cropping where
    output_padding reaches past what one symmetric padding describes)."""
    if not _fits(x.shape, y_shape, W.shape, win):
        full_shape = _uncropped_shape(x.shape, W.shape, win, groups)
        full_win = win._replace(padding=(0, 0))
        plan = resolve(plan, x, _group_input(full_shape, groups),
                       _group_weight(W.shape, groups, 0), full_win)
        full = run_data_grad(plan, x, W, full_shape, full_win, groups, workspace)
        return _crop(full, y_shape, win.padding)
    plan = resolve(plan, x, _group_input(y_shape, groups), _group_weight(W.shape, groups, 0),
                   win)
    return run_data_grad(plan, x, W, y_shape, win, groups, workspace)


def _fits(x_shape, y_shape, W_shape, win):
    """True when convolving a ``y_shape`` image gives back exactly x's (Hi, Wi).

    It does not when output_padding >= stride (allowed when dilation > stride): the
    extra rows then lie beyond what one symmetric padding can describe.
    """
    return output_hw(y_shape, W_shape, win) == tuple(x_shape[2:])


def _uncropped_shape(x_shape, W_shape, win, groups=1):
    """(N, C_out, Hf, Wf): the transposed convolution's output before padding crops it."""
    N, _, Hi, Wi = x_shape
    _, C_out, kh, kw = W_shape
    (sh, sw), (dh, dw) = win.stride, win.dilation
    return (N, C_out * groups, conv_transpose_output_size(Hi, kh, sh, 0, dh),
            conv_transpose_output_size(Wi, kw, sw, 0, dw))


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




def workspace_limit():
    """Bytes that the im2col columns of one chunk may take (see :mod:`minconv.runtime`)."""
    return runtime.workspace_limit()


def set_workspace_limit(nbytes):
    """Set the column workspace budget (bytes); returns the previous one
    (``mc.runtime.configure(workspace_mb=...)`` does the same)."""
    return runtime.set_workspace_limit(nbytes)


# ---------------------------------------------------------------- the unfolding itself

def im2col(x, kh, kw, stride=1, padding=0, dilation=1):
    """Unfold the receptive fields of x: (N, C, H, W) -> cols (C*kh*kw, N*Ho*Wo).

    Row ``(c*kh + i)*kw + j`` is tap (i, j) of channel c; column ``(n*Ho + ho)*Wo + wo``.
    """
    check_array(x, "im2col", "input", 4, "(N, C, H, W)")
    stride, padding, dilation, Ho, Wo = conv_geometry("im2col", x.shape, (kh, kw),
                                                  stride, padding, dilation)
    return kernels_for(x).im2col(x, kh, kw, stride, padding, dilation)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0, dilation=1):
    """Fold columns (C*kh*kw, N*Ho*Wo) back onto an image of ``x_shape``, summing overlaps."""
    check_array(cols, "col2im", "cols", 2)
    x_shape = tuple(int(s) for s in x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"col2im: x_shape must be (N, C, H, W), got {x_shape}")
    stride, padding, dilation, Ho, Wo = conv_geometry("col2im", x_shape, (kh, kw),
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
