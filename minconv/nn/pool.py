"""Average pooling layers: fixed windows (AvgPool2D) and PyTorch's adaptive bins."""
from .. import functional as F
from ..functional.activation import check_rule
from .base import Layer


class AvgPool2D(Layer):
    """Mean over kh x kw windows; see :func:`minconv.functional.avg_pool2d`."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad = count_include_pad

    @property
    def _geometry(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def forward(self, x, train=False):
        y = F.avg_pool2d(x, **self._geometry)
        self._cache = x.shape
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        return F.avg_pool2d_backward(dy, self._saved(), **self._geometry)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}")


class AdaptiveAvgPool2D(Layer):
    """Average pooling to a fixed output size with PyTorch's bins; (1, 1) is global
    average pooling. See :func:`minconv.functional.adaptive_avg_pool2d`."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x, train=False):
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._cache = x.shape
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        return F.adaptive_avg_pool2d_backward(dy, self._saved())

    def extra_repr(self):
        return f"output_size={self.output_size}"
