"""The saturating activations of the early nets (LeNet-5): tanh and the logistic sigmoid.

Each backward pass needs only the output y:

    tanh:     dy/dx = 1 - y^2
    sigmoid:  dy/dx = y (1 - y)

They are smooth, so every backward rule (grad, deconv, guided) uses the true derivative.
"""
from ..backend import get_array_module
from ._checks import check_array, check_shape


def tanh(x):
    """y = tanh(x), elementwise."""
    check_array(x, "tanh", "input")
    return get_array_module(x).tanh(x)


def tanh_backward(dy, y):
    """dx = dy * (1 - y^2), with y the forward output."""
    check_shape(dy, y.shape, "tanh_backward", "dy")
    return dy * (1 - y * y)


def sigmoid(x):
    """y = 1 / (1 + exp(-x)), elementwise, without overflow for large |x|."""
    check_array(x, "sigmoid", "input")
    xp = get_array_module(x)
    z = xp.exp(-xp.abs(x))             # in (0, 1]: never overflows
    return xp.where(x >= 0, 1 / (1 + z), z / (1 + z)).astype(x.dtype, copy=False)


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), with y the forward output."""
    check_shape(dy, y.shape, "sigmoid_backward", "dy")
    return dy * y * (1 - y)
