"""The shifted path: a convolution as 1x1 products of the shifted input, channels first.

With x_pad zero-padded and the taps k = (c, i, j) of W (F, C*kh*kw),

    y[n, f, ho, wo] = b[f] + sum_k W[f, k] * x_pad[n, c, ho*sh + i*dh, wo*sw + j*dw]

is a 1x1 convolution whose input channel k is the padded input shifted by (i*dh, j*dw).
At width stride 1 a tap's neighbouring outputs read neighbouring columns; at a stride
sw > 1 the padded input is first split into its sw column phases (column u*sw + q goes to
phase q, column u), in which they again do: column wo*sw + j*dw is column wo + (j*dw)//sw
of phase (j*dw) % sw. The compiled ``conv2d_shifted`` packs each strip of 16 (AVX2) or
64 (AVX-512) neighbouring output positions, crossing rows where it must, tap by tap into
a panel and sweeps it with the tiles of the 1x1 product (``_pointwise.h``), writing y
where it lies with the bias and a fused ReLU. Nothing moves to channels last and back
(``fused_rows`` does both on every call: at batch 1 on SqueezeNet's 16 -> 64 3x3 on
55x55, 0.06 ms of the layer's 0.5). The cores share the batch's positions.

Float32 where the tiles run (the planner's conditions); the data and weight gradients
are the ``fused_rows`` path's.
"""
from ..._kernels import kernels_for
from . import ConvPath, fused_rows


def serves_shape(kernels, dtype, W_shape, win):
    """Whether the compiled shifted products take a convolution of ``dtype`` with these
    weights and window: float32 where the tiles run, not 1x1."""
    fused = getattr(kernels, "fused_kernels", None)
    return fused is not None and fused(dtype) and tuple(W_shape[2:]) != (1, 1)


def forward(x, W, b, win, workspace=None, relu=False, out=None):
    if (not serves_shape(kernels_for(x), x.dtype, W.shape, win) or W.dtype != x.dtype
            or (b is not None and b.dtype != x.dtype)):
        return fused_rows.forward(x, W, b, win, workspace, relu, out)
    return kernels_for(x).conv2d_shifted(x, W, b, *win, relu=relu, out=out)


PATH = ConvPath("shifted", forward, fused_rows.data_grad, fused_rows.weight_grad,
                writes_into=True)
