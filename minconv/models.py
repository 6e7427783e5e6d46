"""The nets of the paper and two small ones, and ``summary`` to check them.

``zfnet`` is Zeiler & Fergus's Figure 3; ``alexnet`` is the single-tower
baseline it improves on; ``zfnet_mini`` keeps ZFNet's structure and layer
names for 28x28 images; ``lenet5`` is the classic small net.

Every builder returns a :class:`minconv.nn.Sequential` with named layers and
sets ``net.config = {"model": name, "kwargs": {...}}``, from which
:func:`build` (and so a checkpoint) makes the same net again.

ReLUs rectify in place by default (``inplace=True``): the convolution keeps
its input, not its output, so nothing is lost for training, and the full
ZFNet saves one 148 MB map per step at batch 32. A recorded conv output then
holds rectified values; build with ``inplace=False`` to keep them raw.
"""
import math
import sys

import numpy as np

from . import nn
from ._kernels.reference import conv_output_size, pool_output_size


def _conv(c_in, c_out, k, stride, padding, init, rng):
    fan_in = c_in * k * k
    std = 0.01 if init == "paper" else math.sqrt(2.0 / fan_in)  # He: keeps ReLU variances
    return nn.Conv2D(c_in, c_out, k, stride=stride, padding=padding, init_std=std, rng=rng)


def _fc(n_in, n_out, init, rng, last=False):
    if init == "paper":
        std = 0.01
    else:  # He for layers feeding a ReLU, variance 1/fan_in for the logits
        std = math.sqrt((1.0 if last else 2.0) / n_in)
    return nn.Linear(n_in, n_out, init_std=std, rng=rng)


def _check_init(init):
    if init not in ("paper", "he"):
        raise ValueError(f"init must be 'paper' (N(0, 0.01^2)) or 'he', got {init!r}")


def _zf_body(in_channels, widths, kernels, strides, pads, lrn, fc, num_classes,
             dropout, init, inplace, rng, head_kernel=3):
    """conv1-relu1-pool1-norm1, conv2-relu2-pool2-norm2, conv3..conv5-pool5, fc6-fc7-fc8.

    The shared skeleton of ZFNet, AlexNet and ZFNet-mini; pools are 3x3 stride 2
    with Caffe's ceil rounding. ``fc`` is (width, flattened input size).
    """
    _check_init(init)
    c = (in_channels,) + tuple(widths)
    layers = []
    for i in range(5):
        n = i + 1
        layers.append((f"conv{n}", _conv(c[i], c[n], kernels[i], strides[i], pads[i], init, rng)))
        layers.append((f"relu{n}", nn.ReLU(inplace=inplace)))
        if n in (1, 2, 5):
            layers.append((f"pool{n}", nn.MaxPool2D(head_kernel, 2, ceil_mode=True)))
        if n in (1, 2):
            layers.append((f"norm{n}", nn.LRN(**lrn)))
    width, flat = fc
    layers += [("flatten", nn.Flatten()),
               ("fc6", _fc(flat, width, init, rng)), ("relu6", nn.ReLU(inplace=inplace)),
               ("drop6", nn.Dropout(dropout, rng=rng)),
               ("fc7", _fc(width, width, init, rng)), ("relu7", nn.ReLU(inplace=inplace)),
               ("drop7", nn.Dropout(dropout, rng=rng)),
               ("fc8", _fc(width, num_classes, init, rng, last=True))]
    return nn.Sequential(layers)


_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # AlexNet's, in PyTorch's convention


def zfnet(num_classes=1000, in_channels=3, init="paper", dropout=0.5, inplace=True, rng=None):
    """ZFNet as in the paper's Figure 3, for (N, 3, 224, 224) inputs.

    conv1 96 7x7/2 pad 1 -> 110x110x96 -> pool 3/2 (ceil) -> 55x55x96 -> LRN
    conv2 256 5x5/2      -> 26x26x256  -> pool 3/2 (ceil) -> 13x13x256 -> LRN
    conv3 384, conv4 384, conv5 256, 3x3/1 pad 1 -> 13x13 -> pool 3/2 -> 6x6x256 = 9216
    fc6 4096 + dropout, fc7 4096 + dropout, fc8 ``num_classes``: 62,357,608 parameters
    for 1000 classes. Weights ~ N(0, 0.01^2) and zero biases, as in the paper.
    """
    net = _zf_body(in_channels, (96, 256, 384, 384, 256), (7, 5, 3, 3, 3),
                   (2, 2, 1, 1, 1), (1, 0, 1, 1, 1), _LRN, (4096, 6 * 6 * 256), num_classes,
                   dropout, init, inplace, rng)
    net.config = {"model": "zfnet", "kwargs": dict(num_classes=num_classes,
                  in_channels=in_channels, init=init, dropout=dropout, inplace=inplace)}
    return net


def alexnet(num_classes=1000, in_channels=3, init="paper", dropout=0.5, inplace=True, rng=None):
    """Krizhevsky et al.'s net in one tower (no grouped convolutions), for 224x224 inputs.

    conv1 96 11x11/4 pad 2 -> 55x55 -> pool 27 -> LRN; conv2 256 5x5 pad 2 -> 27 -> pool 13
    -> LRN; conv3 384, conv4 384, conv5 256 (3x3 pad 1) -> pool 6x6x256; fc6, fc7 4096; fc8.
    62,378,344 parameters for 1000 classes. The layer names are those of :func:`zfnet`.
    """
    net = _zf_body(in_channels, (96, 256, 384, 384, 256), (11, 5, 3, 3, 3),
                   (4, 1, 1, 1, 1), (2, 2, 1, 1, 1), _LRN, (4096, 6 * 6 * 256), num_classes,
                   dropout, init, inplace, rng)
    net.config = {"model": "alexnet", "kwargs": dict(num_classes=num_classes,
                  in_channels=in_channels, init=init, dropout=dropout, inplace=inplace)}
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
    widths = tuple(int(w) for w in widths)
    if len(widths) != 5:
        raise ValueError(f"zfnet_mini: widths must give 5 conv widths, got {widths}")
    side = size
    for _ in range(2):
        side = pool_output_size(side, 3, 2, 0, ceil_mode=True)
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


def lenet5(num_classes=10, in_channels=1, inplace=True, rng=None):
    """LeNet-5 for 28x28 inputs (padded to 32x32 by conv1), with ReLU and max pooling.

    conv1 6 5x5 pad 2 -> 28 -> pool 2 -> 14; conv2 16 5x5 -> 10 -> pool 2 -> 5x5x16;
    fc3 120, fc4 84, fc5 ``num_classes``: 61,706 parameters for 10 classes.
    """
    layers = [("conv1", _conv(in_channels, 6, 5, 1, 2, "he", rng)),
              ("relu1", nn.ReLU(inplace=inplace)), ("pool1", nn.MaxPool2D(2, 2)),
              ("conv2", _conv(6, 16, 5, 1, 0, "he", rng)),
              ("relu2", nn.ReLU(inplace=inplace)), ("pool2", nn.MaxPool2D(2, 2)),
              ("flatten", nn.Flatten()),
              ("fc3", _fc(400, 120, "he", rng)), ("relu3", nn.ReLU(inplace=inplace)),
              ("fc4", _fc(120, 84, "he", rng)), ("relu4", nn.ReLU(inplace=inplace)),
              ("fc5", _fc(84, num_classes, "he", rng, last=True))]
    net = nn.Sequential(layers)
    net.config = {"model": "lenet5", "kwargs": dict(num_classes=num_classes,
                                                    in_channels=in_channels, inplace=inplace)}
    return net


MODELS = {"zfnet": zfnet, "alexnet": alexnet, "zfnet_mini": zfnet_mini, "lenet5": lenet5}

# the input each model is built for: (C, H, W)
INPUT_SHAPES = {"zfnet": (3, 224, 224), "alexnet": (3, 224, 224),
                "zfnet_mini": (1, 28, 28), "lenet5": (1, 28, 28)}


def canonical_name(name):
    """'zfnet-mini' -> 'zfnet_mini'; ValueError for an unknown model."""
    key = str(name).replace("-", "_").lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return key


def build(name, **kwargs):
    """The model called ``name`` ('zfnet', 'zfnet-mini', ...) built with ``kwargs``."""
    key = canonical_name(name)
    try:
        return MODELS[key](**kwargs)
    except TypeError as error:
        raise ValueError(f"model {key!r}: bad arguments {kwargs}: {error}") from None


def transfer_parameters(source, target, skip=()):
    """Copy into ``target`` the parameters of ``source`` under the same names and shapes,
    except those of the layers in ``skip``; returns the names of the layers copied.

    The transfer setting of the paper's Section 5: take conv1..fc7 of a trained net and
    give the new task its own freshly drawn classifier (``skip=("fc8",)``).
    """
    own, theirs = target.params, source.params
    state = {k: v for k, v in theirs.items() if k in own and k.rsplit(".", 1)[0] not in skip
             and tuple(v.shape) == tuple(own[k].shape)}
    target.load_state_dict(state, strict=False)
    return sorted({k.rsplit(".", 1)[0] for k in state})


def input_shape_of(net):
    """(C, H, W) that ``net`` expects, from its config."""
    config = getattr(net, "config", None) or {}
    shape = INPUT_SHAPES.get(config.get("model"))
    if shape is None:
        raise ValueError("input_shape_of: the net has no known model config")
    kwargs = config.get("kwargs", {})
    c = kwargs.get("in_channels", shape[0])
    side = kwargs.get("size", shape[1])
    return (c, side, side)


# ------------------------------------------------------------------ summary

def _layer_geometry(layer):
    """(kernel, stride, padding, dilation) pairs of a conv/pool layer, else None."""
    if isinstance(layer, nn.Conv2D):
        return layer.kernel_size, layer.stride, layer.padding, layer.dilation
    if isinstance(layer, nn.MaxPool2D):
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        return pair(layer.kernel_size), pair(layer.stride), pair(layer.padding), (1, 1)
    return None


def _next_shape(layer, shape):
    """Output shape (C, H, W) or (D,) of ``layer`` for an input of ``shape``, without running it."""
    if isinstance(layer, nn.Conv2D):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _layer_geometry(layer)
        return (layer.out_channels, conv_output_size(shape[1], kh, sh, ph, dh),
                conv_output_size(shape[2], kw, sw, pw, dw))
    if isinstance(layer, nn.MaxPool2D):
        (kh, kw), (sh, sw), (ph, pw), _ = _layer_geometry(layer)
        return (shape[0], pool_output_size(shape[1], kh, sh, ph, layer.ceil_mode),
                pool_output_size(shape[2], kw, sw, pw, layer.ceil_mode))
    if isinstance(layer, nn.Flatten):
        return (int(np.prod(shape)),)
    if isinstance(layer, nn.Linear):
        return (layer.out_features,)
    if isinstance(layer, (nn.ReLU, nn.LRN, nn.Dropout)):
        return shape
    # anything else: run it once on zeros
    dtype = next(iter(layer.params.values())).dtype if layer.params else np.float32
    return tuple(layer.forward(np.zeros((1,) + tuple(shape), dtype=dtype)).shape[1:])


def _macs(layer, shape_out):
    """Multiply-adds per image: Ho*Wo*F * C*kh*kw for a conv, in*out for a linear layer."""
    if isinstance(layer, nn.Conv2D):
        kh, kw = layer.kernel_size
        return int(np.prod(shape_out)) * layer.in_channels * kh * kw
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    return 0


_STDOUT = object()  # sys.stdout as it is at call time (tests and notebooks replace it)


def summary(net, input_shape, file=_STDOUT):
    """Per-layer table: output shape, parameters, multiply-adds and receptive field.

    ``input_shape`` is (C, H, W) (or (N, C, H, W); N is ignored: figures are per image).
    The receptive field of a unit follows, for a layer of kernel k (dilated span
    k' = d(k-1)+1), stride s and padding p:

        size_out  = size_in + (k' - 1) * jump_in
        jump_out  = jump_in * s                  (input pixels between neighbouring units)
        start_out = start_in + ((k' - 1)/2 - p) * jump_in   (centre of the first unit's field)

    starting from size 1, jump 1, start 0 (the centre of pixel 0). Units after
    Flatten see the whole input (size/jump/start None). Prints the table to
    ``file`` (None: no printing) and returns one dict per layer plus a ``total`` row.
    """
    shape = tuple(int(s) for s in input_shape)[-3:]
    if len(shape) != 3:
        raise ValueError(f"summary: input_shape must be (C, H, W), got {tuple(input_shape)}")
    rf = [(1, 1, 0.0), (1, 1, 0.0)]  # (size, jump, start) along H and W
    rows = []
    for name, layer in net.items():
        try:
            out = _next_shape(layer, shape)
        except (ValueError, IndexError) as error:
            raise ValueError(f"summary: layer {name!r} cannot take input {shape}: {error}") \
                from None
        geometry = _layer_geometry(layer)
        if rf is not None and geometry is not None:
            rf = [(size + (d * (k - 1)) * jump, jump * s, start + ((d * (k - 1)) / 2 - p) * jump)
                  for (size, jump, start), k, s, p, d in zip(rf, *geometry)]
        if len(out) != 3:
            rf = None
        params = int(sum(v.size for v in layer.params.values()))
        rows.append(dict(name=name, type=type(layer).__name__, output_shape=out, params=params,
                         macs=_macs(layer, out),
                         rf_size=None if rf is None else rf[0][0],
                         rf_jump=None if rf is None else rf[0][1],
                         rf_start=None if rf is None else rf[0][2]))
        shape = out
    rows.append(dict(name="total", type="", output_shape=shape,
                     params=sum(r["params"] for r in rows), macs=sum(r["macs"] for r in rows),
                     rf_size=None, rf_jump=None, rf_start=None))
    if file is not None:
        print(format_summary(rows), file=sys.stdout if file is _STDOUT else file)
    return rows


def format_summary(rows):
    """The rows of :func:`summary` as a fixed-width text table."""
    head = f"{'layer':<9}{'type':<11}{'output':>16}{'params':>13}{'MACs':>16}{'RF size':>9}" \
           f"{'jump':>6}{'start':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["name"] == "total":
            lines.append("-" * len(head))
        shape = "x".join(str(s) for s in r["output_shape"])
        if r["rf_size"] is None:
            rf = f"{'-':>9}{'-':>6}{'-':>7}"
        else:
            rf = f"{r['rf_size']:>9}{r['rf_jump']:>6}{r['rf_start']:>7.1f}"
        lines.append(f"{r['name']:<9}{r['type']:<11}{shape:>16}{r['params']:>13,}"
                     f"{r['macs']:>16,}{rf}")
    return "\n".join(lines)
