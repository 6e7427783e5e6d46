"""Local response normalisation across channels (Caffe/PyTorch convention).

    scale[n, c] = k + alpha/size * sum_{c' = c - size//2}^{c + (size-1)//2} x[n, c']^2
    y[n, c]     = x[n, c] * scale[n, c]^(-beta)

Channels outside [0, C) count as zero. Caffe and PyTorch divide alpha by the
window size; Chainer and the AlexNet paper do not (their alpha is ours/size).
"""
from .._kernels import kernels_for
from ._checks import check_array, check_same_dtype, check_shape


def _check_lrn(op, x, size, k):
    check_array(x, op, "input", 4, "(N, C, H, W)")
    if int(size) != size or size < 1:
        raise ValueError(f"{op}: size must be a positive integer, got {size!r}")
    if k <= 0:
        raise ValueError(f"{op}: k must be positive (it keeps the scale away from 0), got {k}")


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """Local response normalisation: (N, C, H, W) -> (N, C, H, W)."""
    _check_lrn("lrn", x, size, k)
    y, _ = kernels_for(x).lrn_forward(x, int(size), alpha, beta, k)
    return y


def lrn_backward(dy, x, size=5, alpha=1e-4, beta=0.75, k=2.0, *, y=None, scale=None):
    """Gradient of :func:`lrn` with respect to x.

        dx_i = dy_i * scale_i^(-beta)
               - (2 alpha beta / size) * x_i * sum_{j: i in window(j)} dy_j * y_j / scale_j

    ``y`` and ``scale`` from the forward pass may be given to skip recomputing them.
    """
    _check_lrn("lrn_backward", x, size, k)
    check_array(dy, "lrn_backward", "dy", 4)
    check_shape(dy, x.shape, "lrn_backward", "dy")
    check_same_dtype("lrn_backward", dy=dy, input=x)
    kernels = kernels_for(x)
    if y is None or scale is None:
        y, scale = kernels.lrn_forward(x, int(size), alpha, beta, k)
    return kernels.lrn_backward(dy, x, y, scale, int(size), alpha, beta)
