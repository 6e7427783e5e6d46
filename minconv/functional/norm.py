"""Batch normalisation (Ioffe & Szegedy, 2015), forward and backward, NCHW.

For each channel c, over the M = N*H*W values of a batch:

    xhat = (x - mean_c) / sqrt(var_c + eps)        y = gamma_c * xhat + beta_c

In training the batch's own (biased) statistics normalise, and the running
estimates move towards them as in PyTorch:

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)

In evaluation the running estimates normalise, and the layer is a fixed
per-channel affine map: its backward pass is ``dy * gamma / sqrt(running_var + eps)``.
"""
from .._kernels import kernels_for
from ..backend import get_array_module
from ._checks import check_array, check_same_dtype, check_shape


def _check(op, x, gamma, beta, running_mean, running_var):
    check_array(x, op, "input", 4, "(N, C, H, W)")
    C = x.shape[1]
    for what, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if v is not None:
            check_shape(v, (C,), op, f"{what} (one value per channel of input {tuple(x.shape)})")
    check_same_dtype(op, input=x, gamma=gamma, beta=beta, running_mean=running_mean,
                     running_var=running_var)


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, train=False, momentum=0.1,
               eps=1e-5, relu=False):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel; max(y, 0) in the same
    pass with ``relu`` (a ReLU that follows).

    x : (N, C, H, W); gamma, beta, running_mean, running_var : (C,)

    Returns ``(y, (mean, invstd))``, the statistics that normalised (for the backward
    pass). With ``train`` the batch's statistics are used and ``running_mean`` /
    ``running_var`` (when given) are updated in place; without it the running
    statistics are used and must be given.
    """
    op = "batch_norm"
    _check(op, x, gamma, beta, running_mean, running_var)
    xp = get_array_module(x)
    kernels = kernels_for(x)
    if train:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        if M < 2:
            raise ValueError(f"{op}: training needs more than one value per channel, got input "
                             f"{tuple(x.shape)}")
        mean, var = kernels.batchnorm_stats(x)
        if running_mean is not None:
            m = x.dtype.type(momentum)
            running_mean *= 1 - m
            running_mean += m * mean
            running_var *= 1 - m
            running_var += (m * M / (M - 1)) * var
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: evaluation needs running_mean and running_var")
        mean, var = running_mean, running_var
    invstd = 1 / xp.sqrt(var + x.dtype.type(eps))
    scale = invstd if gamma is None else gamma * invstd
    shift = -mean * scale if beta is None else beta - mean * scale
    if x.size == 0:  # an empty batch: an empty result
        return xp.empty_like(x), (mean, invstd)
    return kernels.batchnorm_apply(x, scale, shift, relu), (mean, invstd)


def batch_norm_backward(dy, x, gamma, mean, invstd, train=False):
    """(dx, dgamma, dbeta) for ``batch_norm``; ``mean, invstd`` as it returned them.

    train : whether the forward pass normalised by the batch's own statistics (then dx
    carries the terms that flow through mean and var).
    """
    op = "batch_norm_backward"
    check_array(dy, op, "dy", 4, "(N, C, H, W)")
    check_shape(dy, x.shape, op, "dy")
    check_same_dtype(op, dy=dy, x=x)
    xp = get_array_module(x)
    if gamma is None:
        gamma = xp.ones(x.shape[1], dtype=x.dtype)
    if x.size == 0:  # an empty batch: nothing flows back, nothing to learn
        zeros = xp.zeros(x.shape[1], dtype=x.dtype)
        return xp.empty_like(x), zeros, zeros.copy()
    return kernels_for(x).batchnorm_backward(dy, x, mean, invstd, gamma, bool(train))
