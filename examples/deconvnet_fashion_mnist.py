"""The deconvnet on ZFNet-mini and Fashion-MNIST, step by step.

    python examples/deconvnet_fashion_mnist.py --checkpoint demo/run/epoch4.npz --out deconv/

(a checkpoint comes from ``minconv demo`` or ``minconv train --model zfnet-mini``).
Writes four PNGs into ``--out``:

- ``projections.png``: one test image and, for its 8 strongest conv5 feature maps, the
  strongest unit projected down to pixels with the three backward rules (deconvnet,
  guided backpropagation, plain gradient);
- ``top9_conv2.png``: the paper's Fig. 2 for conv2 over 2,000 test images;
- ``occlusion.png``: the paper's Fig. 7 for the same image;
- ``filters.png``: the conv1 filters.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import minconv as mc  # noqa: E402
from minconv import data  # noqa: E402
from minconv.vis import render  # noqa: E402
from minconv.vis.datasets import FASHION_MNIST_CLASSES, Standardize  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=data.FASHION_MNIST)
    p.add_argument("--index", type=int, default=0, help="test image to look at")
    p.add_argument("--out", default="deconv")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    net = mc.train.load_checkpoint(args.checkpoint).net
    images, labels = data.load_idx(args.data, "test")
    images = images[:, None]                                   # (10000, 1, 28, 28) uint8
    prep = Standardize(*data.FASHION_MNIST_STATS)              # what the net was trained on
    x = prep(images[args.index:args.index + 1])                # (1, 1, 28, 28) float32
    names = FASHION_MNIST_CLASSES

    # 1. the 8 strongest conv5 maps of this image, projected with each backward rule
    dn = mc.vis.DeconvNet(net)
    a = dn.activations(x, "conv5")[0]                          # (64, 7, 7)
    maps = np.argsort(-a.reshape(len(a), -1).max(axis=1))[:8]
    rows = {rule: dn.project(x, "conv5", maps, rule=rule)      # one pass for all 8 maps
            for rule in ("deconv", "guided", "grad")}
    fig, axes = render.figure(3, 9, (1.3, 1.4))
    for r, (rule, proj) in enumerate(rows.items()):
        render.show_image(axes[r, 0], x[0], names[labels[args.index]] if r == 0 else None)
        axes[r, 0].set_ylabel(rule)
        for j, m in enumerate(maps):
            render.show_signed(axes[r, j + 1], proj[j], f"map {m}" if r == 0 else None)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "projections.png"), dpi=100)

    # 2. top-9 for conv2 over 2,000 test images: scan, project, crop, lay out
    subset = images[:2000]
    best = mc.vis.top9(net, subset, ["conv2"], preprocess=prep)["conv2"]
    shown = np.argsort(-best.values[:, 0])[:12]                # the 12 liveliest maps
    proj = mc.vis.project_top_k(net, subset, best, preprocess=prep, maps=shown)
    patches, crops = mc.vis.top_k_patches(net, subset, best, maps=shown, projections=proj)
    sheet = mc.vis.top_k_sheet(crops, patches, [f"conv2 #{m}" for m in shown], columns=4)
    sheet.save(os.path.join(args.out, "top9_conv2.png"))
    field = mc.vis.receptive_field(net, "conv2", (1, 28, 28))
    print(f"conv2 units see {field.size[0]}x{field.size[1]} pixels, {field.jump[0]} apart")

    # 3. occlusion: which part of the image does the net need?
    occ = mc.vis.occlusion(net, x, int(labels[args.index]), size=7, stride=1, fill=0.0)
    render.occlusion_figure(x[0], occ, names, path=os.path.join(args.out, "occlusion.png"))
    print(f"P({names[occ.label]}) {occ.baseline['prob']:.3f} unoccluded, "
          f"{occ.prob.min():.3f} at worst")

    # 4. the first-layer filters
    mc.vis.filters_image(mc.vis.first_filters(net), zoom=8).save(
        os.path.join(args.out, "filters.png"))
    print(f"figures in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
