"""Parameter-free layers and the fully connected layer.

Every backward pass takes ``rule`` ("grad", "deconv" or "guided", docs/architecture.md);
only ReLU and LRN behave differently under the visualisation rules. Layers
without parameters ignore ``param_grads`` and ``input_grad``: dx is all they make.
"""
import numpy as np

from .. import functional as F
from .._kernels import kernels_for
from ..backend import get_array_module
from ..functional._checks import check_shape
from ..functional.lrn import _check_lrn
from .base import Layer, default_rng, formed, remembers_output
from .conv import normal_init


class ReLU(Layer):
    """max(x, 0). Backward follows ``rule``: grad, deconv (relu*) or guided."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x, train=False):
        y = F.relu(x, out=x if self.inplace else None)
        self._cache = y  # y > 0 exactly where x > 0
        return y

    @remembers_output
    def forward_fused(self, y):
        """The forward pass where the layer below has already applied this ReLU to its
        output ``y`` (a Graph's fusion, see :class:`~minconv.nn.Graph`): y is kept for
        the backward pass and returned as it is."""
        self._cache = y
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        return F.relu_backward(dy, formed(self._saved()), rule)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class MaxPool2D(Layer):
    """Max pooling that keeps its switches in ``self.switches`` for unpooling.

    In training the kernel records the switches as it pools. Otherwise (inference, or
    a pass the deconvnet will go back down) it pools without them, 3-5x faster, and keeps
    a reference to x, from which the switches are found the first time ``switches`` or
    ``backward`` asks: the same switches, since they are a function of x. (Conv2D keeps
    its x as well, so this holds no activation that a net would not hold anyway.)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode

    def _pool(self, x, switches):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            switches=switches)

    def forward(self, x, train=False):
        if train:
            y, switches = self._pool(x, True)
            self._cache = (x.shape, switches, None)
        else:
            y = self._pool(x, False)
            self._cache = (x.shape, None, x)
        return y

    @remembers_output
    def forward_pooled(self, y, x):
        """The forward pass where the layer below pooled its own output ``x`` band by band
        (:meth:`Conv2D.forward_pooled`) and x was never formed (an
        :class:`~minconv.nn.base.Unformed`): y is kept as this layer's output and x is
        formed if the switches are asked for."""
        self._cache = (x.shape, None, x)
        return y

    @property
    def switches(self):
        """Flat index of each maximum from the last forward pass, (N, C, Ho, Wo)."""
        x_shape, switches, x = self._saved()
        if switches is None:
            switches = self._pool(formed(x), True)[1]
            self._cache = (x_shape, switches, None)
        return switches

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        switches = self.switches
        check_shape(dy, switches.shape, self._label(), "dy")
        return F.max_unpool2d(dy, switches, self._saved()[0])

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")


class LRN(Layer):
    """Local response normalisation across channels (see :mod:`minconv.functional.lrn`).

    Under the ``deconv`` and ``guided`` rules the signal passes through unchanged,
    as in the paper's deconvnet; under ``grad`` it takes the true derivative.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x, train=False):
        _check_lrn(self._label(), x, self.size, self.k)
        y, scale = kernels_for(x).lrn_forward(x, int(self.size), self.alpha, self.beta, self.k)
        self._cache = (x, y, scale)
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x, y, scale = self._saved()
        if rule != "grad":
            F.activation.check_rule(rule)
            return dy
        return F.lrn_backward(dy, x, self.size, self.alpha, self.beta, self.k, y=y, scale=scale)

    def extra_repr(self):
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Dropout(Layer):
    """Inverted dropout with probability ``p``; the identity when ``train`` is False."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        seed = (default_rng() if rng is None else rng).integers(2 ** 63)
        self.rng = np.random.default_rng(seed)
        self._device_rng = None

    def _generator_for(self, x):
        xp = get_array_module(x)
        if xp is np:
            return self.rng
        if self._device_rng is None:  # a GPU generator seeded from the host one
            self._device_rng = xp.random.default_rng(int(self.rng.integers(2 ** 63)))
        return self._device_rng

    def forward(self, x, train=False):
        y, mask = F.dropout(x, self.p, self._generator_for(x), train)
        self._cache = (mask, x.shape)
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        mask, x_shape = self._saved()
        check_shape(dy, x_shape, self._label(), "dy")
        return F.dropout_backward(dy, mask)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x, train=False):
        self._cache = x.shape
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # -1 fails on an empty batch

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x_shape = self._saved()
        check_shape(dy, (x_shape[0], int(np.prod(x_shape[1:]))), self._label(), "dy")
        return dy.reshape(x_shape)


class Linear(Layer):
    """Fully connected layer y = x W^T + b; W : (out, in) ~ N(0, init_std^2), b = 0."""

    def __init__(self, in_features, out_features, bias=True, init_std=0.01, rng=None,
                 dtype="float32"):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params["W"] = normal_init((out_features, in_features), init_std, rng, dtype)
        if bias:
            self.params["b"] = normal_init((out_features,), 0.0, rng, dtype)

    def forward(self, x, train=False):
        self._cache = x
        return F.linear(x, self.params["W"], self.params.get("b"))

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        x = self._saved()
        dx, dW, db = F.linear_backward(dy, x, self.params["W"],
                                       need_input_grad=input_grad,
                                       need_weight_grad=self._wants_param_grads(rule, param_grads))
        if dW is not None:
            self.grads["W"] = dW
            if "b" in self.params:
                self.grads["b"] = db
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'b' in self.params}"
