"""Relu, LeakyRelu, Sigmoid, Tanh, Softmax, Identity."""
from ....nn import ReLU
from ....nn.arith import LeakyReLU, Softmax
from ....nn.merge import Identity
from ....nn.saturating import Sigmoid, Tanh
from ..registry import converter


@converter("Relu")
def relu(node):
    return node.layer(ReLU())


@converter("LeakyRelu")
def leaky_relu(node):
    return node.layer(LeakyReLU(node.attr("alpha", 0.01)))


@converter("Sigmoid")
def sigmoid(node):
    return node.layer(Sigmoid())


@converter("Tanh")
def tanh(node):
    return node.layer(Tanh())


@converter("Softmax")
def softmax_coerced(node):
    """Before opset 13 the input is viewed as 2-D at ``axis`` (default 1)."""
    return node.layer(Softmax(node.attr("axis", 1), flatten=True))


@converter("Softmax", since=13)
def softmax(node):
    return node.layer(Softmax(node.attr("axis", -1)))


@converter("Identity")
def identity(node):
    return node.layer(Identity())
