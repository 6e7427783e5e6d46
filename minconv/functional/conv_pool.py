"""A convolution and the max pooling that follows it, in one pass (inference).

    y, plan = conv2d_maxpool_planned(x, W, b, stride=2, relu=True,
                                     pool_kernel=3, pool_stride=2, ceil_mode=True)

A first layer's output is a net's largest map (SqueezeNet's 64x111x111: 3 MB at batch
1), and the max pooling after it reads it straight back. Where the planner gives the
convolution's forward product to the ``direct`` tiles (few input channels), the two run
band by band: each band of pooled rows is pooled from the convolution rows its windows
cover as soon as the tiles have made them (:mod:`.conv_paths.direct`), so the full map is
never written to memory. A Graph does this outside training when the pooling alone reads
the convolution (see :class:`~minconv.nn.Graph`); the result is the same, bit for bit.
"""
from .._kernels import kernels_for
from .conv import _group_weight, _prepare
from .conv_paths import direct, output_hw
from .conv_plan import resolve
from .pool import pool_geometry


def conv2d_maxpool_planned(x, W, b=None, stride=1, padding=0, dilation=1, groups=1, *,
                           plan=None, relu=False, pool_kernel, pool_stride=None, pool_padding=0,
                           ceil_mode=False):
    """``max_pool2d(conv2d(x, W, b), pool_kernel, ...)`` (of max(., 0) with ``relu``) in one
    pass, and the plan: where the plan sends the forward product to the ``direct`` tiles
    (few input channels, float32), each band of pooled rows is pooled from the convolution
    rows it covers as they are made, and the convolution's output is never formed.

    Returns ``(y, plan)``; y is None where this does not apply (another plan, groups, a
    pool that does not fit the output): the caller then convolves and pools.
    """
    groups, win, group_shape = _prepare("conv2d", x, W, stride, padding, dilation, groups, b)
    plan = resolve(plan, x, group_shape, _group_weight(W.shape, groups, 0), win)
    if groups != 1 or plan.forward != "direct" or not direct.pools(kernels_for(x), x, W, b):
        return None, plan
    Ho, Wo = output_hw(x.shape, W.shape, win)
    try:
        kernel, stride, padding, pooled = pool_geometry(
            "max_pool2d", (x.shape[0], W.shape[0], Ho, Wo), pool_kernel, pool_stride,
            pool_padding, ceil_mode)
    except ValueError:  # the pooling layer names its own error
        return None, plan
    return direct.forward_maxpool(x, W, b, win, relu, kernel, stride, padding, pooled), plan


__all__ = ["conv2d_maxpool_planned"]
