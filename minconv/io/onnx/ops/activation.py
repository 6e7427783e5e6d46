"""Relu, LeakyRelu, Clip (ReLU6), Sigmoid, Tanh, Softmax, Identity."""
import numpy as np

from ....nn import ReLU
from ....nn.arith import Clip, LeakyReLU, Softmax
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


@converter("Clip")
def clip_attributes(node):  # before opset 11: min and max are attributes
    return node.layer(Clip(node.attr("min"), node.attr("max")))


@converter("Clip", since=11)
def clip(node):
    bounds = [float(np.asarray(node.required_constant(i, what)).reshape(-1)[0])
              if node.has_input(i) else None for i, what in ((1, "min"), (2, "max"))]
    return node.layer(Clip(*bounds))
