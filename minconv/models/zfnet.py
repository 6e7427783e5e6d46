"""The nets of the paper: ZFNet (Figure 3, and Table 2's wider "(b)" via ``widths``),
AlexNet in one tower or two (``groups=2``), and ZFNet-mini for 28x28 images.

ReLUs rectify in place by default (``inplace=True``): the convolution keeps
its input, not its output, so nothing is lost for training, and the full
ZFNet saves one 148 MB map per step at batch 32. A recorded conv output is
copied before the ReLU overwrites it.
"""
from .. import nn
from ..geometry import pool_output_size
from ._blocks import check_init, conv, fc


def _zf_body(in_channels, widths, kernels, strides, pads, lrn, fc_sizes, num_classes,
             dropout, init, inplace, rng, head_kernel=3, groups=(1, 1, 1, 1, 1)):
    """conv1-relu1-pool1-norm1, conv2-relu2-pool2-norm2, conv3..conv5-pool5, fc6-fc7-fc8.

    The shared skeleton of ZFNet, AlexNet and ZFNet-mini; pools are 3x3 stride 2
    with Caffe's ceil rounding. ``fc_sizes`` is (width, flattened input size).
    """
    check_init(init)
    c = (in_channels,) + tuple(widths)
    layers = []
    for i in range(5):
        n = i + 1
        layers.append((f"conv{n}", conv(c[i], c[n], kernels[i], strides[i], pads[i], init, rng,
                                         groups=groups[i])))
        layers.append((f"relu{n}", nn.ReLU(inplace=inplace)))
        if n in (1, 2, 5):
            layers.append((f"pool{n}", nn.MaxPool2D(head_kernel, 2, ceil_mode=True)))
        if n in (1, 2):
            layers.append((f"norm{n}", nn.LRN(**lrn)))
    width, flat = fc_sizes
    layers += [("flatten", nn.Flatten()),
               ("fc6", fc(flat, width, init, rng)), ("relu6", nn.ReLU(inplace=inplace)),
               ("drop6", nn.Dropout(dropout, rng=rng)),
               ("fc7", fc(width, width, init, rng)), ("relu7", nn.ReLU(inplace=inplace)),
               ("drop7", nn.Dropout(dropout, rng=rng)),
               ("fc8", fc(width, num_classes, init, rng, last=True))]
    return nn.Sequential(layers)


_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # AlexNet's, in PyTorch's convention
ZF_WIDTHS = (96, 256, 384, 384, 256)
WIDE_WIDTHS = (96, 256, 512, 1024, 512)  # Table 2 (b): conv3-5 at 512, 1024, 512


def _widths(widths, model):
    widths = tuple(int(w) for w in widths)
    if len(widths) != 5 or min(widths) < 1:
        raise ValueError(f"{model}: widths must give 5 conv widths (positive), got {widths}")
    return widths


def zfnet(num_classes=1000, in_channels=3, init="paper", dropout=0.5, inplace=True, rng=None,
          widths=ZF_WIDTHS):
    """ZFNet as in the paper's Figure 3, for (N, 3, 224, 224) inputs.

    conv1 96 7x7/2 pad 1 -> 110x110x96 -> pool 3/2 (ceil) -> 55x55x96 -> LRN
    conv2 256 5x5/2      -> 26x26x256  -> pool 3/2 (ceil) -> 13x13x256 -> LRN
    conv3 384, conv4 384, conv5 256, 3x3/1 pad 1 -> 13x13 -> pool 3/2 -> 6x6x256 = 9216
    fc6 4096 + dropout, fc7 4096 + dropout, fc8 ``num_classes``: 62,357,608 parameters
    for 1000 classes. Weights ~ N(0, 0.01^2) and zero biases, as in the paper.
    ``widths`` sets conv1..conv5 (``WIDE_WIDTHS`` is Table 2's "(b)").
    """
    widths = _widths(widths, "zfnet")
    net = _zf_body(in_channels, widths, (7, 5, 3, 3, 3), (2, 2, 1, 1, 1), (1, 0, 1, 1, 1), _LRN,
                   (4096, 6 * 6 * widths[-1]), num_classes, dropout, init, inplace, rng)
    kwargs = dict(num_classes=num_classes, in_channels=in_channels, init=init, dropout=dropout,
                  inplace=inplace)
    if widths != ZF_WIDTHS:
        kwargs["widths"] = list(widths)
    net.config = {"model": "zfnet", "kwargs": kwargs}
    return net


def alexnet(num_classes=1000, in_channels=3, init="paper", dropout=0.5, inplace=True, rng=None,
            groups=1):
    """Krizhevsky et al.'s net for 224x224 inputs, in one tower or, with ``groups=2``, in
    the paper's two (conv2, conv4 and conv5 see only their own tower's half of the maps).

    conv1 96 11x11/4 pad 2 -> 55x55 -> pool 27 -> LRN; conv2 256 5x5 pad 2 -> 27 -> pool 13
    -> LRN; conv3 384, conv4 384, conv5 256 (3x3 pad 1) -> pool 6x6x256; fc6, fc7 4096; fc8.
    62,378,344 parameters for 1000 classes in one tower (60,965,224 in two). The layer
    names are those of :func:`zfnet`.
    """
    if groups not in (1, 2):
        raise ValueError(f"alexnet: groups must be 1 (one tower) or 2 (two), got {groups!r}")
    net = _zf_body(in_channels, ZF_WIDTHS, (11, 5, 3, 3, 3), (4, 1, 1, 1, 1), (2, 2, 1, 1, 1),
                   _LRN, (4096, 6 * 6 * 256), num_classes, dropout, init, inplace, rng,
                   groups=(1, groups, 1, groups, groups))
    kwargs = dict(num_classes=num_classes, in_channels=in_channels, init=init, dropout=dropout,
                  inplace=inplace)
    if groups != 1:
        kwargs["groups"] = groups
    net.config = {"model": "alexnet", "kwargs": kwargs}
    return net


MINI_WIDTHS = (32, 64, 96, 96, 64)


def zfnet_mini(num_classes=10, in_channels=1, widths=MINI_WIDTHS, fc_width=512, size=28,
               init="he", dropout=0.5, inplace=True, rng=None):
    """ZFNet's structure and layer names for small images (28x28 Fashion-MNIST by default).

    conv1 w1 5x5 pad 2 -> 28x28 -> pool 3/2 (ceil) -> 14x14 -> LRN
    conv2 w2 5x5 pad 2 -> 14x14 -> pool 3/2 (ceil) ->  7x7  -> LRN
    conv3 w3, conv4 w4, conv5 w5, 3x3 pad 1 -> 7x7 -> pool 3/2 -> 3x3 x w5
    fc6 ``fc_width`` + dropout, fc7 ``fc_width`` + dropout, fc8 ``num_classes``.

    He-normal initialisation (std sqrt(2 / fan_in)) by default: with the paper's
    N(0, 0.01^2) a net this thin starts with vanishing signals.
    """
    widths = _widths(widths, "zfnet_mini")
    side = size
    for _ in range(3):
        side = pool_output_size(side, 3, 2, 0, ceil_mode=True)
    if side < 1:
        raise ValueError(f"zfnet_mini: input size {size} is too small (needs at least 11)")
    net = _zf_body(in_channels, widths, (5, 5, 3, 3, 3), (1, 1, 1, 1, 1),
                   (2, 2, 1, 1, 1), _LRN, (int(fc_width), side * side * widths[-1]),
                   num_classes, dropout, init, inplace, rng)
    net.config = {"model": "zfnet_mini", "kwargs": dict(
        num_classes=num_classes, in_channels=in_channels, widths=list(widths),
        fc_width=int(fc_width), size=size, init=init, dropout=dropout, inplace=inplace)}
    return net
