"""AlexNet's first layer against ZFNet's (the paper's Fig. 6 and Section 4.1).

The paper saw that AlexNet's 11x11 stride-4 first layer left some filters dead (no
response) and produced aliasing in the second layer's features, and that 7x7 filters with
stride 2 fixed both; and that without renormalising each filter's RMS (Fig. 6(a)) a few
first-layer filters come to dominate. Here two nets that differ only in their first two
layers learn the same Fashion-MNIST images resized to 112x112:

    alexnet-like: conv1 32 11x11/4 pad 2 -> 27 -> pool -> 13 -> LRN -> conv2 64 5x5/1 pad 2
    zfnet-like  : conv1 32  7x7/2 pad 1 -> 54 -> pool -> 27 -> LRN -> conv2 64 5x5/2
    both        : -> 12/13 -> pool -> 6 -> conv3 96, conv4 96, conv5 64 (3x3) -> pool -> 3x3x64
                  -> fc6 256 -> fc7 256 -> fc8 10

each with the filters renormalised to RMS 0.1 after every update (the paper's recipe), and
the zfnet-like one once more without. What is measured:

- dead filters: conv1 filters whose RMS is below 10% of the layer's median RMS, and
  silent ones, whose rectified response is zero on all test images;
- aliasing: the deconvnet projections to pixel space of layer 2's strongest activations
  (Fig. 6(b)-(e)), their power spectrum summed over conv2's channels, and the mean power on
  the DFT lines at the stride's frequencies (f_x or f_y = 1/4 or 1/2 cycle per pixel)
  relative to the mean power of all non-zero frequencies. A grid of period s in the
  projections (stride s's aliasing) puts excess power at multiples of 1/s: a ratio above 1;
- the filter sheets of conv1, side by side, as a PNG (with ``--out``).

    python -m minconv.experiments first_layers [--size 112] [--quick] [--out figs/]
"""
import math
import os

import numpy as np

from .. import nn
from ..vis._common import chunks, like_net, to_numpy
from . import _common

DEFAULT = dict(train=300, test=500, epochs=3, size=112)
QUICK = dict(train=4, test=20, epochs=1, size=64)
DEAD_FRACTION = 0.1
FIRST = {"alexnet": dict(kernel=11, stride=4, pad=2, conv2_stride=1, conv2_pad=2),
         "zfnet": dict(kernel=7, stride=2, pad=1, conv2_stride=2, conv2_pad=0)}


def first_layer_net(kind, num_classes=10, in_channels=1, widths=(32, 64, 96, 96, 64),
                    fc_width=256, size=112, rng=None):
    """The alexnet-like or zfnet-like net of the module's docstring.

    conv1 starts from the paper's N(0, 0.01^2), so that what its filters learn soon
    outweighs their initial noise and the RMS renormalisation (radius 0.1) acts as they
    grow; the other layers are He-initialised.
    """
    if kind not in FIRST:
        raise ValueError(f"first_layer_net: kind must be 'alexnet' or 'zfnet', got {kind!r}")
    f = FIRST[kind]
    c = (in_channels,) + tuple(widths)
    kernels, strides = (f["kernel"], 5, 3, 3, 3), (f["stride"], f["conv2_stride"], 1, 1, 1)
    pads = (f["pad"], f["conv2_pad"], 1, 1, 1)
    layers, side = [], size
    for i in range(5):
        n = i + 1
        std = 0.01 if n == 1 else math.sqrt(2 / (c[i] * kernels[i] ** 2))
        layers.append((f"conv{n}", nn.Conv2D(c[i], c[n], kernels[i], strides[i], pads[i],
                                             init_std=std, rng=rng)))
        layers.append((f"relu{n}", nn.ReLU(inplace=True)))
        side = (side + 2 * pads[i] - kernels[i]) // strides[i] + 1
        if n in (1, 2, 5):
            layers.append((f"pool{n}", nn.MaxPool2D(3, 2, ceil_mode=True)))
            side = -(-(side - 3) // 2) + 1
        if n in (1, 2):
            layers.append((f"norm{n}", nn.LRN(5, 1e-4, 0.75, 2.0)))
    if side < 1:
        raise ValueError(f"first_layer_net: input size {size} is too small for {kind}")
    flat = side * side * widths[-1]
    layers += [("flatten", nn.Flatten()),
               ("fc6", nn.Linear(flat, fc_width, init_std=math.sqrt(2 / flat), rng=rng)),
               ("relu6", nn.ReLU(inplace=True)),
               ("fc7", nn.Linear(fc_width, fc_width, init_std=math.sqrt(2 / fc_width), rng=rng)),
               ("relu7", nn.ReLU(inplace=True)),
               ("fc8", nn.Linear(fc_width, num_classes, init_std=math.sqrt(1 / fc_width),
                                 rng=rng))]
    return nn.Sequential(layers)


def dead_filters(W, fraction=DEAD_FRACTION):
    """Indices of filters W (F, C, kh, kw) whose RMS is below ``fraction`` of the median."""
    rms = np.sqrt((np.asarray(to_numpy(W), np.float64) ** 2).reshape(len(W), -1).mean(axis=1))
    return np.flatnonzero(rms < fraction * np.median(rms))


def silent_filters(net, x, layer="relu1", batch_size=100):
    """Channels of ``layer`` that are zero at every position of every image in x."""
    x = like_net(x, net)
    peak = None
    for part in chunks(len(x), batch_size):
        a = to_numpy(net.forward(x[part], train=False, until=layer)).max(axis=(0, 2, 3))
        peak = a if peak is None else np.maximum(peak, a)
    net.clear_cache()
    return np.flatnonzero(peak <= 0)


def stride_power(images, periods=(4, 2)):
    """{s: mean power on the DFT lines f_x = m/s or f_y = m/s (m = 1..s-1) / mean power of
    all non-zero frequencies} of images (M, H, W), their spectra summed (H, W multiples of s)."""
    a = np.asarray(images, np.float64)
    a = a - a.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(a)) ** 2).sum(axis=0)                      # (H, W)
    H, W = power.shape
    nonzero = np.ones_like(power, bool)
    nonzero[0, 0] = False
    base = power[nonzero].mean()
    out = {}
    for s in periods:
        if H % s or W % s:
            raise ValueError(f"stride_power: image size {H}x{W} is not a multiple of {s}")
        lines = np.zeros_like(power, bool)
        for m in range(1, s):
            lines[m * H // s, :] = lines[:, m * W // s] = True
        out[s] = float(power[lines & nonzero].mean() / base)
    return out


def layer2_projections(net, x):
    """The deconvnet projection (M, H, W) of each conv2 channel's strongest activation over
    the images x (summed over colour channels)."""
    from ..vis import DeconvNet
    dn = DeconvNet(net)
    a = to_numpy(dn.activations(x, "relu2"))
    F = a.shape[1]
    best = a.reshape(len(a), F, -1).max(axis=2).argmax(axis=0)                # (F,)
    proj = dn.project(x[best], "relu2", np.arange(F))                       # (F, C, H, W)
    return to_numpy(proj).sum(axis=1), a.reshape(len(a), F, -1).max(axis=(0, 2)) > 0


def run(args):
    chosen = _common.budget(args)
    if args.size:
        chosen["size"] = args.size
    size = chosen["size"]
    images, labels, test_images, test_labels = _common.load(
        args.data, chosen["train"], chosen["test"], args.seed, size=size)
    xt = _common.normalise(test_images)
    print(_common.preamble("AlexNet's vs ZFNet's first layers (Fig. 6)", args, chosen,
                           f", resized to {size}x{size}; dead: RMS < {DEAD_FRACTION} x the "
                           "median RMS of conv1's filters; silent: no positive response on "
                           "the test images"))
    runs = [("alexnet", 0.1), ("zfnet", 0.1), ("zfnet", None)]
    rows, sheets = [], []
    for kind, radius in runs:
        nn.set_seed(args.seed)
        net = first_layer_net(kind, size=size)
        net, seconds = _common.fit(net, images, labels, chosen["epochs"], seed=args.seed,
                                   renorm_radius=radius, pad=0)
        error = _common.test_error(net, test_images, test_labels)
        W = net["conv1"].params["W"]
        rms = np.sqrt((to_numpy(W).astype(np.float64) ** 2).reshape(len(W), -1).mean(axis=1))
        proj, _ = layer2_projections(net, xt[:64])
        ratio = stride_power(proj) if size % 4 == 0 else {4: math.nan, 2: math.nan}
        name = f"{kind}-like conv1 {FIRST[kind]['kernel']}x{FIRST[kind]['kernel']}/" \
               f"{FIRST[kind]['stride']}, renorm {'RMS ' + str(radius) if radius else 'off'}"
        rows.append([name, error, f"{len(dead_filters(W))}/{len(W)}",
                     f"{len(silent_filters(net, xt))}/{len(W)}",
                     f"{rms.max() / np.median(rms):.2f}", ratio[4], ratio[2], f"{seconds:.0f}"])
        print(f"  {name}: test error {error:.4f} ({seconds:.0f} s)", flush=True)
        from ..vis.render import filters_image
        sheets.append(filters_image(W, zoom=6 if FIRST[kind]["kernel"] == 7 else 4))
    print()
    print(_common.table(["net", "test error", "dead conv1 filters", "silent conv1 filters",
                         "max/median filter RMS", "layer-2 power at 1/4 cycle/px",
                         "at 1/2 cycle/px", "seconds"], rows))
    if args.out:
        from ..vis.render import save, stack
        os.makedirs(args.out, exist_ok=True)
        path = save(stack(sheets, vertical=False), os.path.join(args.out, "first_layers.png"))
        print(f"\nconv1 filters (alexnet-like, zfnet-like, zfnet-like without renormalisation): "
              f"{path}")
    return rows


def parser():
    p = _common.arguments(__doc__.splitlines()[0], QUICK, DEFAULT)
    p.add_argument("--size", type=_common.positive_int, help="image side after resizing (default 112)")
    return p
