"""The direct path: a convolution summed tap by tap, channels first, for inputs of
few channels (first layers: 1 or 3).

With C*kh*kw = 25 (zfnet_mini's conv1) the rows of im2col are too short to
multiply well; the compiled ``conv2d_direct`` tiles keep 8 (AVX2) or 16
(AVX-512) outputs of a row in a register and add each tap's contribution,
for width stride 1:

    y[n, f, ho, wo] = b[f] + sum_{i,j} sum_c W[f, c, i, j] * x_pad[n, c, ho*sh + i*dh, wo + j*dw]
    dW[f, c, i, j]  = sum_{n,ho,wo} dy[n, f, ho, wo] * x_pad[n, c, ho*sh + i*dh, wo + j*dw]

There is no direct form of C^T for these layers (their dx is rarely needed: the
input image's gradient), so the data gradient is the per-image path's.
"""
from ... import runtime
from ..._kernels import kernels_for
from ...backend import get_array_module
from . import ConvPath, output_hw, per_image, rectified, sum_in_order


def forward(x, W, b, win, workspace=None, relu=False):
    xp, kernels = get_array_module(x), kernels_for(x)
    Ho, Wo = output_hw(x.shape, W.shape, win)
    y = xp.empty((x.shape[0], W.shape[0], Ho, Wo), dtype=x.dtype)

    def convolve(share):
        kernels.conv2d_direct(x[share], W, b, *win, out=y[share])

    runtime.map_shares(convolve, x.shape[0], xp)
    return rectified(y, relu)


def weight_grad(dy, x, W_shape, win, workspace=None, with_bias=False):
    xp, kernels = get_array_module(x), kernels_for(x)

    def correlate(share):
        dW = kernels.conv2d_direct_weight_grad(dy[share], x[share], W_shape, *win)
        return dW, dy[share].sum(axis=(0, 2, 3)) if with_bias else None

    return sum_in_order(runtime.map_shares(correlate, x.shape[0], xp), with_bias)


PATH = ConvPath("direct", forward, per_image.data_grad, weight_grad)
