"""Average pooling with fixed windows and PyTorch's adaptive average pooling.

Both are linear, so their backward pass spreads each gradient evenly back over
the window it came from; under every backward rule (grad, deconv, guided) the
signal goes down the same way.
"""
from .._kernels import kernels_for
from ..backend import get_array_module
from ._checks import check_array, check_shape, pair
from .pool import pool_geometry


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean of each kh x kw window, as PyTorch's ``avg_pool2d``.

    x : (N, C, H, W) -> y : (N, C, Ho, Wo), Ho = floor or ceil((H + 2*ph - kh) / sh) + 1.
    ``count_include_pad`` counts padded zeros in the divisor; windows that ``ceil_mode``
    lets run past the padding are always divided by their part inside it.
    """
    check_array(x, "avg_pool2d", "input", 4, "(N, C, H, W)")
    kernel, stride, padding, out = pool_geometry("avg_pool2d", x.shape, kernel_size, stride,
                                                 padding, ceil_mode)
    if kernel == tuple(x.shape[2:]) and padding == (0, 0):
        # one window over each whole map (ResNet's 7x7 pool as exported to ONNX): the
        # plane means, 2048 planes of 7x7 in a fifth of the windows' kernel's time
        return plane_means(x)
    return kernels_for(x).avgpool_forward(x, kernel, stride, padding, out,
                                          bool(count_include_pad))


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """dx : x_shape, each dy[n, c, i, j] shared out over its window (by the forward divisor)."""
    check_array(dy, "avg_pool2d_backward", "dy", 4, "(N, C, Ho, Wo)")
    kernel, stride, padding, out = pool_geometry("avg_pool2d_backward", x_shape, kernel_size,
                                                 stride, padding, ceil_mode)
    check_shape(dy, tuple(x_shape[:2]) + out, "avg_pool2d_backward", "dy")
    return kernels_for(dy).avgpool_backward(dy, tuple(x_shape), kernel, stride, padding,
                                            bool(count_include_pad))


def plane_means(x):
    """The mean of each plane (global average pooling): x (N, C, *spatial) -> (N, C, 1, ..., 1),
    y[n, c] = sum over p of x[n, c, p] / P, P the plane's size; the kernel of ``x``'s
    device and dtype (``plane_means`` of :mod:`minconv._kernels`)."""
    return kernels_for(x).plane_means(x)


def adaptive_output_size(output_size, x_shape):
    """(Ho, Wo) from an int, a pair, or a pair holding None (keep that input size)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        size = tuple(x_shape[2 + i] if s is None else s for i, s in enumerate(output_size))
    else:
        size = output_size
    size = pair(size, "adaptive_avg_pool2d: output_size")
    if min(size) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be >= 1, got {size}")
    return size


def adaptive_avg_pool2d(x, output_size):
    """PyTorch's adaptive average pooling: x (N, C, H, W) -> (N, C, Ho, Wo).

    Output row i averages input rows floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1 (columns
    alike), so Ho may exceed H (pixels then repeat). The bins of rows and columns are
    independent: y = A_h x A_w^T with A (Ho, H) averaging matrices. (1, 1) is global
    average pooling.
    """
    check_array(x, "adaptive_avg_pool2d", "input", 4, "(N, C, H, W)")
    Ho, Wo = adaptive_output_size(output_size, x.shape)
    H, W = x.shape[2:]
    if (Ho, Wo) == (1, 1):
        return plane_means(x)
    return kernels_for(x).adaptive_avgpool_forward(x, (Ho, Wo))


def adaptive_avg_pool2d_backward(dy, x_shape):
    """dx = A_h^T dy A_w (see :func:`adaptive_avg_pool2d`)."""
    check_array(dy, "adaptive_avg_pool2d_backward", "dy", 4, "(N, C, Ho, Wo)")
    N, C, H, W = x_shape
    if tuple(dy.shape[:2]) != (N, C):
        raise ValueError(f"adaptive_avg_pool2d_backward: dy {tuple(dy.shape)} does not match "
                         f"the input {tuple(x_shape)} (N and C must agree)")
    Ho, Wo = dy.shape[2:]
    xp = get_array_module(dy)
    if (Ho, Wo) == (1, 1):
        return xp.broadcast_to(dy / dy.dtype.type(H * W), tuple(x_shape)).copy()
    return kernels_for(dy).adaptive_avgpool_backward(dy, tuple(x_shape))
