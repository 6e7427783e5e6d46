"""Running a :class:`~.conv_plan.Plan`: each of a convolution's three products on the path
the plan names, group by group for a grouped convolution (each group's channel slices),
and the forward product prepared as one kernel call for inputs of one shape.

    y = run_forward(plan, x, W, b, win, groups)          # (N, C, H, W) -> (N, F, Ho, Wo)
    dx = run_data_grad(plan, dy, W, x.shape, win, groups)
    dW, db = run_weight_grad(plan, dy, x, W.shape, win, groups, with_bias=True)
"""
from ..backend import get_array_module
from .conv_paths import output_hw, with_residual
from .conv_plan import path


def _groups(groups, channels):
    size = channels // groups
    return [slice(g * size, (g + 1) * size) for g in range(groups)]


def _slice(xp, a, s):
    return xp.ascontiguousarray(a[:, s])


def run_forward(plan, x, W, b, win, groups=1, workspace=None, relu=False, out=None,
                residual=None):
    """y = C x + b with ``plan.forward``: (N, C, H, W) -> (N, F, Ho, Wo); plus ``residual``
    (y's shape) when given; max(y, 0) with ``relu``; written into ``out`` when given
    (both checked by the caller)."""
    chosen = path(plan.forward)
    if residual is not None:
        if groups == 1 and out is None and chosen.adds_residual:
            return chosen.forward(x, W, b, win, workspace, relu, residual=residual)
        return with_residual(run_forward(plan, x, W, b, win, groups, workspace, False, out),
                             residual, relu)
    if groups == 1:
        if out is None:
            return chosen.forward(x, W, b, win, workspace, relu)
        if chosen.writes_into:
            return chosen.forward(x, W, b, win, workspace, relu, out=out)
        out[...] = chosen.forward(x, W, b, win, workspace, relu)
        return out
    forward = chosen.forward
    xp = get_array_module(x)
    Ho, Wo = output_hw(x.shape, W.shape, win)
    y = xp.empty((x.shape[0], W.shape[0], Ho, Wo), dtype=x.dtype) if out is None else out
    for cs, fs in zip(_groups(groups, x.shape[1]), _groups(groups, W.shape[0])):
        y[:, fs] = forward(_slice(xp, x, cs), W[fs], None if b is None else b[fs], win,
                           workspace, relu)
    return y


def prepared_forward(x, W, b, stride, padding, dilation, groups, plan, relu):
    """``conv2d_planned(x, W, b, ..., plan=plan, relu=relu)``'s forward product for inputs
    like ``x`` as one kernel call (the path's ``prepare``): run(x, out) -> y, or None where
    that input or ``out`` does not fit; None where the path makes no such call (or groups)."""
    from .conv import _prepare
    groups, win, _ = _prepare("conv2d", x, W, stride, padding, dilation, groups, b)
    prepare = path(plan.forward).prepare
    return prepare(x.shape, W, b, win, relu) if groups == 1 and prepare is not None else None


def run_data_grad(plan, dy, W, x_shape, win, groups=1, workspace=None):
    """dx = C^T dy with ``plan.data_grad``: (N, F, Ho, Wo) -> x_shape."""
    data_grad = path(plan.data_grad).data_grad
    if groups == 1:
        return data_grad(dy, W, x_shape, win, workspace)
    xp = get_array_module(dy)
    dx = xp.empty(x_shape, dtype=dy.dtype)
    group_shape = (x_shape[0], x_shape[1] // groups) + tuple(x_shape[2:])
    for cs, fs in zip(_groups(groups, x_shape[1]), _groups(groups, W.shape[0])):
        dx[:, cs] = data_grad(_slice(xp, dy, fs), W[fs], group_shape, win, workspace)
    return dx


def run_weight_grad(plan, dy, x, W_shape, win, groups=1, workspace=None, with_bias=False):
    """(dW, db) with ``plan.weight_grad``: dW (F, C/groups, kh, kw), db (F,) or None."""
    weight_grad = path(plan.weight_grad).weight_grad
    if groups == 1:
        return weight_grad(dy, x, W_shape, win, workspace, with_bias)
    xp = get_array_module(x)
    dW = xp.empty(W_shape, dtype=x.dtype)
    group_W = (W_shape[0] // groups,) + tuple(W_shape[1:])
    for cs, fs in zip(_groups(groups, x.shape[1]), _groups(groups, W_shape[0])):
        dW[fs], _ = weight_grad(_slice(xp, dy, fs), _slice(xp, x, cs), group_W, win, workspace)
    return dW, (dy.sum(axis=(0, 2, 3)) if with_bias else None)


__all__ = ["run_forward", "prepared_forward", "run_data_grad", "run_weight_grad"]
