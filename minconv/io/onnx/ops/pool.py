"""MaxPool (with the optional Indices output), AveragePool, GlobalAveragePool, GlobalMaxPool.

A max pooling whose pads are symmetric, at most half the window, and without dilation
is minconv's own :class:`~minconv.nn.MaxPool2D` (the layer of the paper, switches and
all); anything else is :class:`~minconv.nn.window_pool.PaddedMaxPool2D`. Average pooling
on such windows is :class:`~minconv.nn.AvgPool2D` (the compiled kernels; DenseNet's
transitions took 0.5 ms each at batch 1 as tap-by-tap NumPy sums), and otherwise
:class:`~minconv.nn.window_pool.PaddedAvgPool2D`, which handles ONNX's
``count_include_pad`` with asymmetric pads.
"""
from ....backend import get_array_module
from ....nn import AvgPool2D, MaxPool2D
from ....nn.base import Layer
from ....nn.window_pool import GlobalAvgPool, GlobalMaxPool, PaddedAvgPool2D, PaddedMaxPool2D
from ..node import ints
from ..registry import converter
from .conv import window_pads


def _plain(kernel, dilations, pads):
    """True for symmetric pads of at most half the window, without dilation: the
    windows of minconv's own pooling layers."""
    top, left, bottom, right = pads
    return (top, left) == (bottom, right) and dilations == (1, 1) and \
        top <= kernel[0] // 2 and left <= kernel[1] // 2


def _geometry(node):
    node.check_rank(0, 4)
    kernel = node.attr("kernel_shape")
    if kernel is None or len(kernel) != 2:
        raise node.unsupported("kernel_shape", f"{kernel}: minconv supports 2-D pooling only")
    kernel = ints(kernel)
    strides = ints(node.attr("strides", (1, 1)))
    dilations = ints(node.attr("dilations", (1, 1)))
    pads = window_pads(node, kernel, strides, dilations)
    return kernel, strides, dilations, pads, bool(node.attr("ceil_mode", 0))


class PoolIndices(Layer):
    """ONNX MaxPool's second output: the flat index of each maximum in the whole input,
    ``(n*C + c)*H*W + h*W + w`` (``+ h + w*H`` with ``column_major``), read from the
    pooling layer's switches. Indices are integers and carry no gradient: the backward
    pass sends zeros to the pooling."""

    def __init__(self, pool, column_major=False):
        super().__init__()
        self.pool, self.column_major = pool, bool(column_major)

    def forward(self, x, train=False):
        self._cache = x
        if isinstance(self.pool, PaddedMaxPool2D):
            h, w, (N, C, H, W) = self.pool.argmax_positions()
        else:
            (N, C, H, W), switches = self.pool._saved()[0], self.pool.switches
            h, w = switches // W, switches % W
        xp = get_array_module(h)
        planes = (xp.arange(N)[:, None] * C + xp.arange(C)[None, :])[:, :, None, None]
        within = h + w * H if self.column_major else h * W + w
        return planes * (H * W) + within

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x = self._saved()
        return get_array_module(x).zeros_like(x)


@converter("MaxPool")
def max_pool(node):
    kernel, strides, dilations, pads, ceil_mode = _geometry(node)
    column_major = bool(node.attr("storage_order", 0))
    pool = MaxPool2D(kernel, strides, tuple(pads[:2]), ceil_mode) \
        if _plain(kernel, dilations, pads) else \
        PaddedMaxPool2D(kernel, strides, pads, dilations, ceil_mode)
    name = node.layer(pool)
    if node.output_needed(1):
        node.layer(PoolIndices(pool, column_major), inputs=[node.outputs[0]], output=1,
                   suffix="indices")
    return name


@converter("AveragePool")
def average_pool(node):
    kernel, strides, dilations, pads, ceil_mode = _geometry(node)
    include = bool(node.attr("count_include_pad", 0))
    if _plain(kernel, dilations, pads):
        return node.layer(AvgPool2D(kernel, strides, tuple(pads[:2]), ceil_mode, include))
    return node.layer(PaddedAvgPool2D(kernel, strides, pads, dilations, ceil_mode, include))


@converter("GlobalAveragePool")
def global_average_pool(node):
    return node.layer(GlobalAvgPool())


@converter("GlobalMaxPool")
def global_max_pool(node):
    return node.layer(GlobalMaxPool())
