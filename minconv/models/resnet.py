"""ResNet (He et al., 2015) with torchvision's module names, and a small ResNet for 28x28.

    conv1 7x7/2 (64) - bn1 - relu - maxpool 3x3/2 - layer1 .. layer4 - avgpool - flatten - fc

Each ``layer<i>`` is a Sequential of residual blocks named "0", "1", ...; each block is a
:class:`~minconv.nn.Graph` whose output is ``relu(main path + shortcut)``:

    BasicBlock   conv1 3x3/s - bn1 - relu1 - conv2 3x3 - bn2 ─┐
                 input ─ [downsample: 0 conv 1x1/s, 1 bn] ─────┴ add - relu2
    Bottleneck   conv1 1x1 - bn1 - relu1 - conv2 3x3/s - bn2 - relu2 - conv3 1x1 (x4) - bn3 ─┐
                 input ─ [downsample] ───────────────────────────────────────────────────────┴
                 add - relu3

The stride sits on the 3x3 convolution (torchvision's "ResNet v1.5"). Parameter counts
for 1000 classes: resnet18 11,689,512; resnet34 21,797,672; resnet50 25,557,032.
"""
from .. import nn
from ._blocks import conv, fc, named


def _conv_bn(graph, index, c_in, c_out, k, stride, rng, relu=True, input_name=None):
    graph.add(f"conv{index}", conv(c_in, c_out, k, stride, k // 2, rng=rng, bias=False),
              inputs=input_name)
    graph.add(f"bn{index}", nn.BatchNorm2D(c_out))
    if relu:
        graph.add(f"relu{index}", nn.ReLU(inplace=True))


def _shortcut(graph, c_in, c_out, stride, rng):
    """The shortcut's node: the input itself, or a 1x1 projection where shapes change."""
    if stride == 1 and c_in == c_out:
        return "input"
    graph.add("downsample", nn.Sequential([
        ("0", conv(c_in, c_out, 1, stride, rng=rng, bias=False)),
        ("1", nn.BatchNorm2D(c_out))]), inputs="input")
    return "downsample"


def basic_block(c_in, width, stride=1, rng=None):
    """Two 3x3 conv-BN pairs and the shortcut (expansion 1)."""
    g = nn.Graph()
    _conv_bn(g, 1, c_in, width, 3, stride, rng)
    _conv_bn(g, 2, width, width, 3, 1, rng, relu=False)
    skip = _shortcut(g, c_in, width, stride, rng)
    g.add("add", nn.Add(), inputs=["bn2", skip])
    g.add("relu2", nn.ReLU(inplace=True))
    return g


basic_block.expansion = 1


def bottleneck(c_in, width, stride=1, rng=None):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand to 4 x width, and the shortcut."""
    g = nn.Graph()
    _conv_bn(g, 1, c_in, width, 1, 1, rng)
    _conv_bn(g, 2, width, width, 3, stride, rng)
    _conv_bn(g, 3, width, width * 4, 1, 1, rng, relu=False)
    skip = _shortcut(g, c_in, width * 4, stride, rng)
    g.add("add", nn.Add(), inputs=["bn3", skip])
    g.add("relu3", nn.ReLU(inplace=True))
    return g


bottleneck.expansion = 4


def make_layer(block, c_in, width, blocks, stride, rng=None):
    """A stage: ``blocks`` residual blocks named "0", "1", ...; the first may stride."""
    items, c = [], c_in
    for i in range(blocks):
        items.append((str(i), block(c, width, stride if i == 0 else 1, rng)))
        c = width * block.expansion
    return nn.Sequential(items), c


def _resnet(model, block, layers, num_classes, in_channels, rng):
    items = [("conv1", conv(in_channels, 64, 7, 2, 3, rng=rng, bias=False)),
             ("bn1", nn.BatchNorm2D(64)), ("relu", nn.ReLU(inplace=True)),
             ("maxpool", nn.MaxPool2D(3, 2, padding=1))]
    c = 64
    for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        stage, c = make_layer(block, c, width, blocks, 1 if i == 0 else 2, rng)
        items.append((f"layer{i + 1}", stage))
    items += [("avgpool", nn.AdaptiveAvgPool2D((1, 1))), ("flatten", nn.Flatten()),
              ("fc", fc(c, num_classes, rng=rng, last=True))]
    return named(nn.Sequential(items), model, num_classes=num_classes, in_channels=in_channels)


def resnet18(num_classes=1000, in_channels=3, rng=None):
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    return _resnet("resnet18", basic_block, (2, 2, 2, 2), num_classes, in_channels, rng)


def resnet34(num_classes=1000, in_channels=3, rng=None):
    """ResNet-34: basic blocks (3, 4, 6, 3)."""
    return _resnet("resnet34", basic_block, (3, 4, 6, 3), num_classes, in_channels, rng)


def resnet50(num_classes=1000, in_channels=3, rng=None):
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return _resnet("resnet50", bottleneck, (3, 4, 6, 3), num_classes, in_channels, rng)


def resnet_mini(num_classes=10, in_channels=1, widths=(48, 96, 192), blocks=(1, 1, 1),
                stem_width=32, size=28, rng=None):
    """A small ResNet for 28x28 images: a 3x3 stem at full resolution, then stages that
    each halve the maps (28 -> 14 -> 7 -> 4 by default).

    conv1 3x3 (``stem_width``) - bn1 - relu at 28x28; layer<i> of ``blocks[i]`` basic
    blocks of width ``widths[i]``, the first with stride 2; avgpool - flatten - fc.
    Full-resolution stages cost the most and gain the least on 28x28 clothes, so only
    the stem sees them. 685,514 parameters and 22 M multiply-adds per image (defaults): the
    cost of ZFNet-mini.
    """
    widths, blocks = [int(w) for w in widths], [int(b) for b in blocks]
    if len(widths) != len(blocks) or not widths:
        raise ValueError(f"resnet_mini: widths {widths} and blocks {blocks} must pair up")
    items = [("conv1", conv(in_channels, stem_width, 3, 1, 1, rng=rng, bias=False)),
             ("bn1", nn.BatchNorm2D(stem_width)), ("relu", nn.ReLU(inplace=True))]
    c = stem_width
    for i, (width, n) in enumerate(zip(widths, blocks)):
        stage, c = make_layer(basic_block, c, width, n, 2, rng)
        items.append((f"layer{i + 1}", stage))
    items += [("avgpool", nn.AdaptiveAvgPool2D((1, 1))), ("flatten", nn.Flatten()),
              ("fc", fc(c, num_classes, rng=rng, last=True))]
    return named(nn.Sequential(items), "resnet_mini", num_classes=num_classes,
                 in_channels=in_channels, widths=widths, blocks=blocks, stem_width=stem_width,
                 size=size)
