"""GoogLeNet (Inception v1, Szegedy et al., 2014) as torchvision builds it, with its names.

Every convolution is a ``BasicConv2d``: ``conv`` (no bias) - ``bn`` (eps 1e-3) - ``relu``.
An Inception module is a Graph of four branches over the same input, concatenated:

    branch1  1x1
    branch2  0: 1x1 reduce, 1: 3x3
    branch3  0: 1x1 reduce, 1: 3x3        (torchvision's; the paper's is 5x5)
    branch4  0: max pool 3x3/1 pad 1, 1: 1x1 projection
    cat      Concat of branch1..branch4

The net is a Graph too: the auxiliary classifiers ``aux1`` (on inception4a) and ``aux2``
(on inception4d) are nodes off the main path, present with ``aux_logits=True`` so that
their weights load; the forward pass computes only the main output, and
``forward(x, until="aux1")`` gives an auxiliary classifier's logits.
With ``transform_input=True`` the first node maps ImageNet-normalised inputs to the
(x - 0.5) / 0.5 scaling the original weights expect, as torchvision does.
6,624,904 parameters for 1000 classes without the auxiliary classifiers.
"""
import numpy as np

from .. import nn
from ..backend import get_array_module
from ..functional.activation import check_rule
from ._blocks import conv_bn_relu, fc, named


def basic_conv(c_in, c_out, k, stride=1, padding=0, rng=None):
    return conv_bn_relu(c_in, c_out, k, stride, padding, eps=1e-3, rng=rng)


def inception(c_in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, rng=None):
    """One Inception module: output channels ch1x1 + ch3x3 + ch5x5 + pool_proj."""
    g = nn.Graph()
    g.add("branch1", basic_conv(c_in, ch1x1, 1, rng=rng), inputs="input")
    g.add("branch2", nn.Sequential([("0", basic_conv(c_in, ch3x3red, 1, rng=rng)),
                                    ("1", basic_conv(ch3x3red, ch3x3, 3, padding=1, rng=rng))]),
          inputs="input")
    g.add("branch3", nn.Sequential([("0", basic_conv(c_in, ch5x5red, 1, rng=rng)),
                                    ("1", basic_conv(ch5x5red, ch5x5, 3, padding=1, rng=rng))]),
          inputs="input")
    g.add("branch4", nn.Sequential([("0", nn.MaxPool2D(3, 1, padding=1, ceil_mode=True)),
                                    ("1", basic_conv(c_in, pool_proj, 1, rng=rng))]),
          inputs="input")
    g.add("cat", nn.Concat(), inputs=["branch1", "branch2", "branch3", "branch4"])
    return g


def inception_aux(c_in, num_classes, dropout=0.7, rng=None):
    """The auxiliary classifier: pool to 4x4, 1x1 conv (128), fc1 1024, relu, dropout, fc2."""
    return nn.Sequential([("pool", nn.AdaptiveAvgPool2D((4, 4))),
                          ("conv", basic_conv(c_in, 128, 1, rng=rng)),
                          ("flatten", nn.Flatten()), ("fc1", fc(2048, 1024, rng=rng)),
                          ("relu", nn.ReLU(inplace=True)),
                          ("dropout", nn.Dropout(dropout, rng=rng)),
                          ("fc2", fc(1024, num_classes, rng=rng, last=True))])


class ChannelAffine(nn.Layer):
    """y[:, c] = x[:, c] * scale[c] + shift[c] with fixed constants (no parameters).

    Linear, so every backward rule multiplies by the scale; the shift is not added on
    the way down."""

    def __init__(self, scale, shift):
        super().__init__()
        self.scale = np.asarray(scale, dtype=np.float64)
        self.shift = np.asarray(shift, dtype=np.float64)

    def _consts(self, x):
        xp = get_array_module(x)
        shape = (1, -1, 1, 1)
        return (xp.asarray(self.scale, dtype=x.dtype).reshape(shape),
                xp.asarray(self.shift, dtype=x.dtype).reshape(shape))

    def forward(self, x, train=False):
        if x.ndim != 4 or x.shape[1] != self.scale.size:
            raise ValueError(f"{self._label()}: expected (N, {self.scale.size}, H, W), got "
                             f"{tuple(x.shape)}")
        scale, shift = self._consts(x)
        self._cache = True
        return x * scale + shift

    def backward(self, dy, rule="grad", param_grads=None, input_grad=True):
        check_rule(rule)
        self._saved()
        return dy * self._consts(dy)[0]


# torchvision's _transform_input: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def googlenet(num_classes=1000, aux_logits=False, transform_input=False, dropout=0.2,
              dropout_aux=0.7, in_channels=3, rng=None):
    """GoogLeNet with torchvision's module names (see the module docstring)."""
    g = nn.Graph()
    if transform_input:
        g.add("transform_input", ChannelAffine([s / 0.5 for s in _IMAGENET_STD],
                                               [(m - 0.5) / 0.5 for m in _IMAGENET_MEAN]))
    g.add("conv1", basic_conv(in_channels, 64, 7, 2, 3, rng=rng))
    g.add("maxpool1", nn.MaxPool2D(3, 2, ceil_mode=True))
    g.add("conv2", basic_conv(64, 64, 1, rng=rng))
    g.add("conv3", basic_conv(64, 192, 3, padding=1, rng=rng))
    g.add("maxpool2", nn.MaxPool2D(3, 2, ceil_mode=True))
    g.add("inception3a", inception(192, 64, 96, 128, 16, 32, 32, rng))
    g.add("inception3b", inception(256, 128, 128, 192, 32, 96, 64, rng))
    g.add("maxpool3", nn.MaxPool2D(3, 2, ceil_mode=True))
    g.add("inception4a", inception(480, 192, 96, 208, 16, 48, 64, rng))
    if aux_logits:  # off the main path: the forward pass never runs it
        g.add("aux1", inception_aux(512, num_classes, dropout_aux, rng), inputs="inception4a")
    g.add("inception4b", inception(512, 160, 112, 224, 24, 64, 64, rng), inputs="inception4a")
    g.add("inception4c", inception(512, 128, 128, 256, 24, 64, 64, rng))
    g.add("inception4d", inception(512, 112, 144, 288, 32, 64, 64, rng))
    if aux_logits:
        g.add("aux2", inception_aux(528, num_classes, dropout_aux, rng), inputs="inception4d")
    g.add("inception4e", inception(528, 256, 160, 320, 32, 128, 128, rng), inputs="inception4d")
    g.add("maxpool4", nn.MaxPool2D(2, 2, ceil_mode=True))
    g.add("inception5a", inception(832, 256, 160, 320, 32, 128, 128, rng))
    g.add("inception5b", inception(832, 384, 192, 384, 48, 128, 128, rng))
    g.add("avgpool", nn.AdaptiveAvgPool2D((1, 1)))
    g.add("flatten", nn.Flatten())
    g.add("dropout", nn.Dropout(dropout, rng=rng))
    g.add("fc", fc(1024, num_classes, rng=rng, last=True))
    return named(g, "googlenet", num_classes=num_classes, aux_logits=aux_logits,
                 transform_input=transform_input, dropout=dropout, dropout_aux=dropout_aux,
                 in_channels=in_channels)
