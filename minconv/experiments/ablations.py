"""Architecture ablations in the style of the paper's Table 3, on zfnet_mini.

The paper removes ZFNet's fully connected layers 6 and 7, its middle convolutions 3 and 4,
or both, and widens the middle convolutions (and the fc layers), training each variant with
the same recipe; the test error of each says how much the depth and width matter. Here the
same variants of zfnet_mini are trained on the same Fashion-MNIST subset for the same
number of epochs from the same seed:

    python -m minconv.experiments ablations            # default budget, a few minutes
    python -m minconv.experiments ablations --quick    # seconds (tests)
"""
import math

from .. import models, nn
from . import _common

VARIANTS = {
    "zfnet_mini": {},
    "without fc6, fc7": {"drop_fc": True},
    "without conv3, conv4": {"drop_conv": True},
    "without conv3, conv4, fc6, fc7": {"drop_fc": True, "drop_conv": True},
    "wider conv3-5": {"wide_conv": True},
    "wider conv3-5 and fc6, fc7": {"wide_conv": True, "wide_fc": True},
}

DEFAULT = dict(train=600, test=2000, epochs=3)
QUICK = dict(train=12, test=60, epochs=1)


def variant(num_classes=10, size=28, widths=models.MINI_WIDTHS, fc_width=512, drop_fc=False,
            drop_conv=False, wide_conv=False, wide_fc=False, rng=None):
    """zfnet_mini with layers removed or widened, as a Sequential with the same layer names.

    drop_fc   : no fc6/fc7: pool5 -> flatten -> fc8
    drop_conv : no conv3/conv4: norm2 -> conv5
    wide_conv : conv3, conv4, conv5 twice as wide;  wide_fc: fc6, fc7 twice as wide
    """
    widths = list(widths)
    if wide_conv:
        widths[2:] = [2 * w for w in widths[2:]]
    fc_width = 2 * fc_width if wide_fc else fc_width
    full = models.zfnet_mini(num_classes, widths=widths, fc_width=fc_width, size=size,
                             dropout=0.0, rng=rng)
    drop = set()
    if drop_fc:
        drop |= {"fc6", "relu6", "drop6", "fc7", "relu7", "drop7"}
    if drop_conv:
        drop |= {"conv3", "relu3", "conv4", "relu4"}
    layers = [(name, layer) for name, layer in full.items() if name not in drop]
    replaced = {}
    if drop_conv:   # conv5 now reads conv2's maps
        replaced["conv5"] = nn.Conv2D(widths[1], widths[4], 3, padding=1,
                                      init_std=math.sqrt(2.0 / (9 * widths[1])), rng=rng)
    if drop_fc:     # fc8 now reads pool5's maps
        flat = full["fc6"].in_features
        replaced["fc8"] = nn.Linear(flat, num_classes, init_std=math.sqrt(1.0 / flat), rng=rng)
    return nn.Sequential([(name, replaced.get(name, layer)) for name, layer in layers])


def run(args):
    chosen = _common.budget(args)
    images, labels, test_images, test_labels = _common.load(
        args.data, chosen["train"], chosen["test"], args.seed)
    print(_common.preamble("Architecture ablations (Table 3 style), zfnet_mini", args, chosen))
    rows = []
    for name, kwargs in VARIANTS.items():
        nn.set_seed(args.seed)
        net = variant(**kwargs)
        net, seconds = _common.fit(net, images, labels, chosen["epochs"], seed=args.seed)
        train_error = _common.test_error(net, images, labels)
        error = _common.test_error(net, test_images, test_labels)
        rows.append([name, f"{net.num_params():,}", train_error, error, f"{seconds:.0f}"])
        print(f"  {name}: test error {error:.4f} ({seconds:.0f} s)", flush=True)
    print()
    print(_common.table(["variant", "parameters", "train error", "test error", "seconds"],
                        rows))
    return rows


def parser():
    return _common.arguments(__doc__.splitlines()[0], QUICK, DEFAULT)
