"""A convolution and the max pooling that follows it, in one pass (inference).

    y, plan = conv2d_maxpool_planned(x, W, b, stride=2, relu=True,
                                     pool_kernel=3, pool_stride=2, ceil_mode=True)

A first layer's output is a net's largest map (SqueezeNet's 64x111x111: 3 MB at batch
1), and the max pooling after it reads it straight back. Where the convolution's forward
product runs on the ``direct`` tiles (few input channels), the two run band by band:
each band of pooled rows is pooled from the convolution rows its windows cover as soon
as the tiles have made them (:mod:`.conv_paths.direct`), so the full map is never
written to memory. A Graph does this outside training when the pooling alone reads the
convolution (see :class:`~minconv.nn.Graph`). On the same plan the result is the two
layers', bit for bit; where the pooled pass takes the direct tiles and the planner alone
would not (a batch that fills the cores), the sums run in another order. Whole
passes timed in pairs (AMD EPYC, AVX2), against the two layers on the planner's paths:
SqueezeNet 0.93-0.95 of the time at batch 1 and 0.94-0.96 at batch 8, GoogLeNet 1.00 and
0.96, ResNet-50 0.98 and 1.00.
"""
from .._kernels import kernels_for
from .conv import _group_weight, _prepare
from .conv_paths import direct, output_hw
from .conv_plan import DIRECT_MAX_CHANNELS, Plan, derives_once, forced_plan, resolve
from .pool import pool_geometry


def conv2d_maxpool_planned(x, W, b=None, stride=1, padding=0, dilation=1, groups=1, *,
                           plan=None, relu=False, pool_kernel, pool_stride=None, pool_padding=0,
                           ceil_mode=False):
    """``max_pool2d(conv2d(x, W, b), pool_kernel, ...)`` (of max(., 0) with ``relu``) in one
    pass, and the plan: where the forward product runs on the ``direct`` tiles (few input
    channels, float32), each band of pooled rows is pooled from the convolution rows it
    covers as they are made, and the convolution's output is never formed. Unless a plan
    is given or forced, a few-channel convolution takes the direct tiles here at any batch
    (the planner alone gives them strided layers only below one image per core).

    Returns ``(y, plan)``; y is None where this does not apply (another plan, groups, a
    pool that does not fit the output): the caller then convolves and pools.
    """
    groups, win, group_shape = _prepare("conv2d", x, W, stride, padding, dilation, groups, b)
    chosen = resolve(plan, x, group_shape, _group_weight(W.shape, groups, 0), win,
                     derives_once(W, groups))
    if (plan is None and forced_plan() is None and chosen.forward != "direct"
            and W.shape[1] <= DIRECT_MAX_CHANNELS):
        chosen = Plan("direct", chosen.data_grad, chosen.weight_grad,
                      chosen.reason + "; a max pooling follows: direct tiles, pooled by bands")
    if groups != 1 or chosen.forward != "direct" or not direct.pools(kernels_for(x), x, W, b):
        return None, chosen
    Ho, Wo = output_hw(x.shape, W.shape, win)
    try:
        kernel, stride, padding, pooled = pool_geometry(
            "max_pool2d", (x.shape[0], W.shape[0], Ho, Wo), pool_kernel, pool_stride,
            pool_padding, ceil_mode)
    except ValueError:  # the pooling layer names its own error
        return None, chosen
    return direct.forward_maxpool(x, W, b, win, relu, kernel, stride, padding, pooled), chosen


__all__ = ["conv2d_maxpool_planned"]
