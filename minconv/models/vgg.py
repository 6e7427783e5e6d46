"""VGG (Simonyan & Zisserman, 2014) with torchvision's module names, and a small VGG
for 28x28 images.

    features    3x3 convolutions (padding 1) [+ BatchNorm] + ReLU, 2x2 max pooling
    avgpool     adaptive average pooling to 7x7 (224x224 inputs give 7x7 already;
                smaller ones are spread to 7x7, so the classifier fits any input size)
    flatten
    classifier  0 Linear(512*7*7, 4096), 1 ReLU, 2 Dropout, 3 Linear(4096, 4096), 4 ReLU,
                5 Dropout, 6 Linear(4096, num_classes)

``features.<i>`` and ``classifier.<i>`` number the layers as torchvision does, so its
state dicts load one to one (:func:`minconv.io.from_torch_state_dict`).
"""
from .. import nn
from ._blocks import conv, fc, named

CONFIGS = {  # widths of the 3x3 convolutions, "M" a 2x2 max pooling
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def make_features(config, in_channels, batch_norm, rng=None):
    """The ``features`` Sequential: numbered like torchvision's."""
    layers, c = [], in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2D(2, 2))
            continue
        layers.append(conv(c, item, 3, padding=1, rng=rng))
        if batch_norm:
            layers.append(nn.BatchNorm2D(item))
        layers.append(nn.ReLU(inplace=True))
        c = item
    return nn.Sequential([(str(i), layer) for i, layer in enumerate(layers)])


def _vgg(model, num_classes, batch_norm, dropout, in_channels, rng):
    classifier = nn.Sequential([
        ("0", fc(512 * 7 * 7, 4096, rng=rng)), ("1", nn.ReLU(inplace=True)),
        ("2", nn.Dropout(dropout, rng=rng)),
        ("3", fc(4096, 4096, rng=rng)), ("4", nn.ReLU(inplace=True)),
        ("5", nn.Dropout(dropout, rng=rng)),
        ("6", fc(4096, num_classes, rng=rng, last=True))])
    net = nn.Sequential([("features", make_features(CONFIGS[model], in_channels, batch_norm, rng)),
                         ("avgpool", nn.AdaptiveAvgPool2D((7, 7))), ("flatten", nn.Flatten()),
                         ("classifier", classifier)])
    return named(net, model, num_classes=num_classes, batch_norm=batch_norm, dropout=dropout,
                 in_channels=in_channels)


def vgg11(num_classes=1000, batch_norm=False, dropout=0.5, in_channels=3, rng=None):
    """VGG-11 (configuration "A"): 132,863,336 parameters (with BatchNorm 132,868,840)."""
    return _vgg("vgg11", num_classes, batch_norm, dropout, in_channels, rng)


def vgg16(num_classes=1000, batch_norm=False, dropout=0.5, in_channels=3, rng=None):
    """VGG-16 (configuration "D"): 138,357,544 parameters (with BatchNorm 138,365,992)."""
    return _vgg("vgg16", num_classes, batch_norm, dropout, in_channels, rng)


def vgg19(num_classes=1000, batch_norm=False, dropout=0.5, in_channels=3, rng=None):
    """VGG-19 (configuration "E"): 143,667,240 parameters (with BatchNorm 143,678,248)."""
    return _vgg("vgg19", num_classes, batch_norm, dropout, in_channels, rng)


VGG_MINI = [32, 32, "M", 64, 64, "M", 128, 128, "M"]


def vgg_mini(num_classes=10, in_channels=1, widths=(32, 64, 128), fc_width=256, dropout=0.3,
             batch_norm=True, size=28, rng=None):
    """A VGG for 28x28 images: three stages of two 3x3 conv-BN-ReLU and a 2x2 max pooling
    (28 -> 14 -> 7 -> 3), then ``classifier`` 0 Linear(w3*3*3, fc_width), 1 ReLU,
    2 Dropout, 3 Linear(fc_width, num_classes)."""
    widths = [int(w) for w in widths]
    config = [w for width in widths for w in (width, width, "M")]
    side = size
    for _ in widths:
        side //= 2
    if side < 1:
        raise ValueError(f"vgg_mini: input size {size} is too small for {len(widths)} poolings")
    classifier = nn.Sequential([
        ("0", fc(widths[-1] * side * side, fc_width, rng=rng)), ("1", nn.ReLU(inplace=True)),
        ("2", nn.Dropout(dropout, rng=rng)),
        ("3", fc(fc_width, num_classes, rng=rng, last=True))])
    net = nn.Sequential([("features", make_features(config, in_channels, batch_norm, rng)),
                         ("flatten", nn.Flatten()), ("classifier", classifier)])
    return named(net, "vgg_mini", num_classes=num_classes, in_channels=in_channels,
                 widths=widths, fc_width=fc_width, dropout=dropout, batch_norm=batch_norm,
                 size=size)
