"""DenseNet-121 (Huang et al., 2017) with torchvision's module names.

    features    conv0 7x7/2 - norm0 - relu0 - pool0 3x3/2,
                denseblock1 (6 layers) - transition1 - denseblock2 (12) - transition2 -
                denseblock3 (24) - transition3 - denseblock4 (16) - norm5
    relu - avgpool (global) - flatten - classifier

A dense layer (``denselayer<i>``) is BN-ReLU-conv 1x1 (4 x growth) - BN-ReLU-conv 3x3
(growth): norm1, relu1, conv1, norm2, relu2, conv2. A dense block is a Graph in which
every layer reads the concatenation of the block's input and all earlier layers' outputs:

    denselayer1 <- input;  cat1 = [input, denselayer1];  denselayer2 <- cat1;
    cat2 = [cat1, denselayer2];  ...  the block's output is the last cat

A transition halves the maps: norm - relu - conv 1x1 (channels / 2) - pool (average 2x2/2).
7,978,856 parameters for 1000 classes.
"""
from .. import nn
from ._blocks import conv, fc, named


def dense_layer(c_in, growth, bn_size, rng=None):
    width = bn_size * growth
    return nn.Sequential([("norm1", nn.BatchNorm2D(c_in)), ("relu1", nn.ReLU(inplace=True)),
                          ("conv1", conv(c_in, width, 1, rng=rng, bias=False)),
                          ("norm2", nn.BatchNorm2D(width)), ("relu2", nn.ReLU(inplace=True)),
                          ("conv2", conv(width, growth, 3, 1, 1, rng=rng, bias=False))])


def dense_block(c_in, layers, growth, bn_size, rng=None):
    """A Graph of ``layers`` dense layers; returns (block, output channels)."""
    g, last, c = nn.Graph(), "input", c_in
    for i in range(1, layers + 1):
        g.add(f"denselayer{i}", dense_layer(c, growth, bn_size, rng), inputs=last)
        g.add(f"cat{i}", nn.Concat(), inputs=[last, f"denselayer{i}"])
        last, c = f"cat{i}", c + growth
    return g, c


def transition(c_in, c_out, rng=None):
    return nn.Sequential([("norm", nn.BatchNorm2D(c_in)), ("relu", nn.ReLU(inplace=True)),
                          ("conv", conv(c_in, c_out, 1, rng=rng, bias=False)),
                          ("pool", nn.AvgPool2D(2, 2))])


def _densenet(model, growth, blocks, init_features, bn_size, num_classes, in_channels, rng):
    items = [("conv0", conv(in_channels, init_features, 7, 2, 3, rng=rng, bias=False)),
             ("norm0", nn.BatchNorm2D(init_features)), ("relu0", nn.ReLU(inplace=True)),
             ("pool0", nn.MaxPool2D(3, 2, padding=1))]
    c = init_features
    for i, layers in enumerate(blocks, start=1):
        block, c = dense_block(c, layers, growth, bn_size, rng)
        items.append((f"denseblock{i}", block))
        if i != len(blocks):
            items.append((f"transition{i}", transition(c, c // 2, rng)))
            c //= 2
    items.append(("norm5", nn.BatchNorm2D(c)))
    net = nn.Sequential([("features", nn.Sequential(items)), ("relu", nn.ReLU(inplace=True)),
                         ("avgpool", nn.AdaptiveAvgPool2D((1, 1))), ("flatten", nn.Flatten()),
                         ("classifier", fc(c, num_classes, rng=rng, last=True))])
    return named(net, model, num_classes=num_classes, in_channels=in_channels)


def densenet121(num_classes=1000, in_channels=3, rng=None):
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16), 64 initial features, bottleneck 4."""
    return _densenet("densenet121", 32, (6, 12, 24, 16), 64, 4, num_classes, in_channels, rng)
