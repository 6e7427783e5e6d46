"""Tanh and Sigmoid layers (LeNet-5's activations); every rule takes the true derivative."""
from .. import functional as F
from ..functional.activation import check_rule
from .base import Layer


class Tanh(Layer):
    """y = tanh(x); dx = dy * (1 - y^2)."""

    def forward(self, x, train=False):
        y = F.tanh(x)
        self._cache = y
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        return F.tanh_backward(dy, self._saved())


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)); dx = dy * y * (1 - y)."""

    def forward(self, x, train=False):
        y = F.sigmoid(x)
        self._cache = y
        return y

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        return F.sigmoid_backward(dy, self._saved())
