"""Max pooling that records its switches, and unpooling by those switches.

The switches are what make the deconvnet possible: unpooling puts each value
back where the maximum came from. The same operation is max pooling's
backward pass, so :func:`max_unpool2d` serves both.
"""
from .._kernels import kernels_for
from ..geometry import pool_output_size
from ..backend import get_array_module
from ._checks import check_array, check_nonnegative, check_positive, check_shape, pair


def pool_geometry(op, x_shape, kernel_size, stride, padding, ceil_mode):
    """Normalised (kernel, stride, padding) pairs and the output size (Ho, Wo)."""
    kernel = pair(kernel_size, f"{op}: kernel_size")
    stride = kernel if stride is None else pair(stride, f"{op}: stride")
    padding = pair(padding, f"{op}: padding")
    check_positive(kernel, op, "kernel_size")
    check_positive(stride, op, "stride")
    check_nonnegative(padding, op, "padding")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel {kernel}")
    H, W = x_shape[2:]
    if kernel[0] > H + 2 * padding[0] or kernel[1] > W + 2 * padding[1]:
        raise ValueError(f"{op}: kernel {kernel} is larger than the padded input "
                         f"{H + 2 * padding[0]}x{W + 2 * padding[1]} (input {tuple(x_shape)})")
    Ho = pool_output_size(H, kernel[0], stride[0], padding[0], ceil_mode)
    Wo = pool_output_size(W, kernel[1], stride[1], padding[1], ceil_mode)
    return kernel, stride, padding, (Ho, Wo)


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, switches=True):
    """Max pooling with switches (with ``switches=False``, y alone: inference).

    x        : (N, C, H, W)
    y        : (N, C, Ho, Wo),  Ho = floor or ceil((H + 2*ph - kh) / sh) + 1
    switches : (N, C, Ho, Wo) int32, flat index ``h*W + w`` of each maximum in its
               (H, W) plane (PyTorch's ``return_indices``, which are int64: a net keeps
               every pooling layer's switches until its backward pass, and int32 halves
               them); ties go to the first element in row-major window order.

    ``stride`` defaults to ``kernel_size``; overlapping windows (3x3 stride 2, as in
    ZFNet) and ``ceil_mode`` (ZFNet's 110 -> 55 and 26 -> 13) are supported.
    """
    check_array(x, "max_pool2d", "input", 4, "(N, C, H, W)")
    kernel, stride, padding, _ = pool_geometry("max_pool2d", x.shape, kernel_size, stride,
                                               padding, ceil_mode)
    kernels = kernels_for(x)
    pool = kernels.maxpool_forward if switches else kernels.maxpool_values
    return pool(x, kernel[0], kernel[1], stride, padding, bool(ceil_mode))


def max_unpool2d(y, switches, input_shape):
    """Put every value of y back at its switch, zeros elsewhere.

    y, switches : (N, C, Ho, Wo)  ->  x : input_shape = (N, C, H, W)

    This is also max pooling's backward pass: ``dx = max_unpool2d(dy, switches, x.shape)``.
    Where overlapping windows chose the same element, their values add up.
    """
    check_array(y, "max_unpool2d", "input", 4, "(N, C, Ho, Wo)")
    xp = get_array_module(y)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4 or input_shape[:2] != tuple(y.shape[:2]):
        raise ValueError(f"max_unpool2d: input_shape {input_shape} does not match the pooled "
                         f"shape {tuple(y.shape)} (N and C must agree)")
    check_shape(switches, y.shape, "max_unpool2d", "switches")
    if switches.dtype.kind not in "iu":
        raise ValueError(f"max_unpool2d: switches must be integers, got {switches.dtype}")
    if switches.dtype != xp.int32:  # the kernels take int32 (ours) or int64 (PyTorch's)
        switches = switches.astype(xp.int64, copy=False)
    return kernels_for(y).maxpool_backward(y, switches, input_shape)  # checks their range
