"""Correspondence analysis (the paper's Table 1): does occluding the same part of several
images of one class change a layer's features in the same way?

For images x_1..x_n of one class and the same part occluded in each (x~_i), the paper
takes the feature difference at layer l, e_i = f_l(x_i) - f_l(x~_i), and compares the sign
vectors of these differences between every pair of images:

    Delta_l = mean over pairs i != j of  H(sign(e_i), sign(e_j)) / D

with H the Hamming distance (the number of positions whose signs differ) and D the number
of features. A lower Delta for a part than for random occluder positions means the layer
encodes that part consistently across the images. Here: the first n Fashion-MNIST test
images of one class (aligned, so each part has the same box in every image; the API takes
a box per image) and a short-trained zfnet_mini, or any checkpoint:

    python -m minconv.experiments correspondence [--checkpoint c.npz] [--quick]
"""
import itertools

import numpy as np

from ..backend import get_array_module
from ..vis._common import check_images, chunks, like_net, to_numpy
from . import _common

# T-shirt/top (class 0): boxes (top, left, height, width) in the 28x28 image
PARTS = {"left sleeve": (3, 0, 8, 7), "right sleeve": (3, 21, 8, 7),
         "collar": (0, 10, 6, 8), "hem": (21, 9, 7, 10)}
LAYERS = ("relu3", "relu5", "relu7")

DEFAULT = dict(train=600, test=2000, epochs=3, images=10, draws=5)
QUICK = dict(train=10, test=50, epochs=1, images=4, draws=2)


def occlude(images, boxes, fill=0.0):
    """Copies of ``images`` (N, C, H, W) with box i = (top, left, height, width) set to
    ``fill`` in image i; ``boxes`` is one box for all images or an (N, 4) array."""
    check_images(images, "occlude")
    N, _, H, W = images.shape
    b = np.asarray(boxes, dtype=np.int64)
    if b.shape == (4,):
        b = np.broadcast_to(b, (N, 4))
    if b.shape != (N, 4):
        raise ValueError(f"occlude: boxes must be (top, left, height, width) or an ({N}, 4) "
                         f"array, got shape {b.shape}")
    out = images.copy()
    for i, (top, left, h, w) in enumerate(b):
        if h < 1 or w < 1 or top < 0 or left < 0 or top + h > H or left + w > W:
            raise ValueError(f"occlude: box (top {top}, left {left}, height {h}, width {w}) "
                             f"of image {i} lies outside the {H}x{W} image")
        out[i, :, top:top + h, left:left + w] = fill
    return out


def random_boxes(n, size, shape, rng):
    """n boxes of ``size`` (height, width) at uniformly random positions inside shape (H, W)."""
    (h, w), (H, W) = size, shape
    rng = np.random.default_rng(rng)
    return np.stack([rng.integers(0, H - h + 1, n), rng.integers(0, W - w + 1, n),
                     np.full(n, h), np.full(n, w)], axis=1)


def sign_differences(net, images, occluded, layer, batch_size=256):
    """sign(f_l(x_i) - f_l(x~_i)) as an int8 (N, D) array."""
    x, xo = like_net(images, net), like_net(occluded, net)
    rows = []
    for part in chunks(len(x), batch_size):
        a = net.forward(x[part], train=False, until=layer)
        a = a.reshape(len(a), -1).copy()
        b = net.forward(xo[part], train=False, until=layer).reshape(len(a), -1)
        xp = get_array_module(a)
        rows.append(to_numpy(xp.sign(a - b)).astype(np.int8))
    net.clear_cache()
    return np.concatenate(rows)


def mean_hamming(signs):
    """Mean over pairs i < j of the fraction of positions where signs[i] != signs[j]."""
    signs = np.asarray(signs)
    if signs.ndim != 2 or len(signs) < 2:
        raise ValueError(f"mean_hamming: need (N >= 2, D) sign vectors, got shape {signs.shape}")
    return float(np.mean([np.mean(signs[i] != signs[j])
                          for i, j in itertools.combinations(range(len(signs)), 2)]))


def correspondence(net, images, boxes, layers=LAYERS):
    """{layer: Delta_l} for ``images`` occluded by ``boxes`` (see the module's docstring)."""
    occluded = occlude(images, boxes)
    return {layer: mean_hamming(sign_differences(net, images, occluded, layer))
            for layer in layers}


def _net(args, chosen):
    if args.checkpoint:
        from ..io.sources import load_net_file  # a .npz checkpoint or an .onnx model
        return load_net_file(args.checkpoint).net, f"checkpoint {args.checkpoint}"
    from .. import models
    images, labels, _, _ = _common.load(args.data, chosen["train"], 0, args.seed)
    net = models.zfnet_mini(dropout=0.0)
    _common.fit(net, images, labels, chosen["epochs"], seed=args.seed)
    return net, (f"zfnet_mini trained for {chosen['epochs']} epochs on {chosen['train']} "
                 "images per class")


def run(args):
    chosen = _common.budget(args)
    chosen["images"] = args.images or chosen["images"]
    net, source = _net(args, chosen)
    from .. import data
    test_images, test_labels = data.load_idx(args.data, "test")
    pick = np.flatnonzero(test_labels == args.cls)[:chosen["images"]]
    x = _common.normalise(test_images[pick][:, None])
    print(_common.preamble("Correspondence analysis (Table 1 style)", args, chosen,
                           f"; the net: {source}; occluded: the first {len(pick)} test images "
                           f"of class {args.cls}, random boxes drawn {chosen['draws']} times",
                           test=False))
    rows = []
    for part, box in PARTS.items():
        same = correspondence(net, x, box)
        draws = [correspondence(net, x, random_boxes(len(x), box[2:], x.shape[2:],
                                                     [args.seed, d, list(PARTS).index(part)]))
                 for d in range(chosen["draws"])]
        row = [part, "x".join(map(str, box[2:]))]
        for layer in LAYERS:
            rand = [d[layer] for d in draws]
            row += [same[layer], f"{np.mean(rand):.4f} ± {np.std(rand):.4f}"]
        rows.append(row)
    header = ["part", "box"]
    for layer in LAYERS:
        header += [f"{layer} same part", f"{layer} random"]
    print(_common.table(header, rows))
    return rows


def parser():
    p = _common.arguments(__doc__.splitlines()[0], QUICK, DEFAULT)
    p.add_argument("--checkpoint", help="a trained zfnet_mini, .npz or .onnx (default: train "
                   "one briefly)")
    p.add_argument("--cls", type=_common.nonnegative_int, default=0, help="the class (default 0, T-shirt/top)")
    p.add_argument("--images", type=_common.positive_int, help="images of that class")
    return p
