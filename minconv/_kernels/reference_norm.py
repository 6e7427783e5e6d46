"""The readable specification of batch normalisation's kernels (NCHW, per channel).

Statistics are taken over N, H and W for each channel c (M = N*H*W values):

    mean_c = sum(x) / M        var_c = sum((x - mean_c)^2) / M     (biased, as used to normalise)
    y = x * scale_c + shift_c  with scale = gamma / sqrt(var + eps), shift = beta - mean * scale

Backward, with xhat = (x - mean) * invstd:

    dbeta  = sum(dy)                dgamma = sum(dy * xhat)
    train: dx = gamma * invstd * (dy - dbeta / M - xhat * dgamma / M)   (the batch's own statistics)
    eval:  dx = gamma * invstd * dy                                     (fixed running statistics)

The Cython twins (``cpu_norm``) and CUDA twins (``cuda_norm``) have the same names and signatures.
"""
from .reference import relu_forward


def _per_channel(v):
    return v.reshape(1, -1, 1, 1)  # (C,) -> (1, C, 1, 1)


def batchnorm_stats(x):
    """(mean, var) over (N, H, W) per channel: x (N, C, H, W) -> two (C,) arrays (var biased)."""
    mean = x.mean(axis=(0, 2, 3))
    var = ((x - _per_channel(mean)) ** 2).mean(axis=(0, 2, 3))
    return mean, var


def batchnorm_apply(x, scale, shift, relu=False):
    """y = x * scale_c + shift_c: x (N, C, H, W), scale and shift (C,); with ``relu``,
    max(y, 0) (NaN stays NaN)."""
    y = x * _per_channel(scale) + _per_channel(shift)
    return relu_forward(y, out=y) if relu else y


def batchnorm_backward(dy, x, mean, invstd, gamma, train):
    """(dx, dgamma, dbeta) of y = gamma * (x - mean) * invstd + beta (see the module docstring)."""
    xhat = (x - _per_channel(mean)) * _per_channel(invstd)
    dbeta = dy.sum(axis=(0, 2, 3))
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    scale = _per_channel(gamma * invstd)
    if not train:
        return dy * scale, dgamma, dbeta
    M = x.shape[0] * x.shape[2] * x.shape[3]
    dx = scale * (dy - _per_channel(dbeta / M) - xhat * _per_channel(dgamma / M))
    return dx.astype(x.dtype, copy=False), dgamma, dbeta


__all__ = ["batchnorm_apply", "batchnorm_backward", "batchnorm_stats"]
