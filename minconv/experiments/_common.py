"""What every experiment shares: a balanced Fashion-MNIST subset, a short training run with
the zfnet_mini recipe, the test error, and a markdown table.

Each experiment states its dataset, budget and seed in the first lines it prints, so a
table pasted elsewhere carries how it was made.
"""
import argparse
import time

import numpy as np

from .. import data, nn
from .._cli_args import nonnegative_int, positive_int
from ..train import SGD, Trainer, evaluate, make_schedule


def arguments(description, quick, default):
    """An argument parser with the options every experiment takes.

    default / quick : dicts of train (images per class), test (images), epochs, size;
    ``--quick`` picks the tiny budget the tests use.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=data.FASHION_MNIST, help="Fashion-MNIST IDX folder")
    p.add_argument("--quick", action="store_true", help="a tiny budget (seconds), for tests")
    p.add_argument("--per-class", type=positive_int, help=f"training images per class "
                   f"(default {default['train']})")
    p.add_argument("--test", type=positive_int, help=f"test images (default {default['test']})")
    p.add_argument("--epochs", type=positive_int, help=f"epochs (default {default['epochs']})")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", help="folder for figures (none if not given)")
    p.set_defaults(_quick=quick, _default=default)
    return p


def budget(args):
    """{train, test, epochs, ...}: the defaults (or the quick ones), overridden by options."""
    chosen = dict(args._quick if args.quick else args._default)
    for key, option in (("train", "per_class"), ("test", "test"), ("epochs", "epochs")):
        if getattr(args, option, None) is not None:
            chosen[key] = getattr(args, option)
    return chosen


def load(root, per_class, n_test, seed=0, size=None):
    """A balanced training subset (per_class images of each class, drawn by ``seed``) and the
    first ``n_test`` test images, uint8 (N, 1, H, W), resized to size x size if given."""
    images, labels = data.load_idx(root, "train")
    images, labels = data.select(images, labels, per_class=per_class, rng=seed)
    test_images, test_labels = data.load_idx(root, "test")
    test_images, test_labels = test_images[:n_test], test_labels[:n_test]
    if size is not None and size != images.shape[-1]:
        images, test_images = resize(images, size), resize(test_images, size)
    return images[:, None], labels, test_images[:, None], test_labels


def resize(images, size):
    """uint8 (N, H, W) images resized bilinearly to (N, size, size) (Pillow)."""
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                     for im in images])


def fit(net, images, labels, epochs, seed=0, lr=0.05, batch_size=128, weight_decay=5e-4,
        renorm_radius=None, pad=1, frozen=()):
    """Train ``net`` with the zfnet_mini recipe (SGD momentum 0.9, one warm-up epoch, cosine
    decay, crops padded by ``pad`` and flips); returns (net, seconds)."""
    nn.set_seed(seed)
    loader = data.ArrayLoader(images, labels, batch_size, shuffle=True, augment=pad > 0,
                              pad=pad, seed=seed)
    optimizer = SGD(net, lr=lr, momentum=0.9, weight_decay=weight_decay,
                    renorm_radius=renorm_radius, frozen=list(frozen))
    schedule = make_schedule("cosine", lr, epochs=epochs, warmup=min(1.0, epochs / 2))
    start = time.perf_counter()
    Trainer(net, optimizer, loader, None, schedule, progress=False, verbose=False).fit(epochs)
    return net, time.perf_counter() - start


def test_error(net, images, labels):
    """Top-1 error (fraction) of ``net`` on uint8 images (N, 1, H, W)."""
    return evaluate(net, data.ArrayLoader(images, labels, 250))["top1_error"]


def normalise(images):
    """uint8 images as the float32 inputs the loaders give (Fashion-MNIST's mean and std)."""
    loader = data.ArrayLoader(images, np.zeros(len(images), np.int64), len(images))
    return next(iter(loader))[0]


def table(header, rows):
    """A markdown table: header (list of str), rows (lists of values; floats get 4 digits)."""
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def preamble(name, args, chosen, extra="", test=True):
    """The lines that state the dataset, the budget and the seed."""
    tested = f", the first {chosen['test']} test images" if test else ""
    return (f"# {name}\n\ndataset: Fashion-MNIST ({args.data}), {chosen['train']} training "
            f"images per class{tested}{extra}\n"
            f"budget: {chosen['epochs']} epochs each; seed {args.seed}\n")
