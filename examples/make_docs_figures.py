"""Regenerate the README's figures in docs/ from a trained ZFNet-mini checkpoint.

    python examples/make_docs_figures.py --checkpoint demo/run/epoch4.npz [--out docs]

Writes small PNGs: docs/top9.png (conv1 and conv3 sheets, 6 maps each, over 5,000
test images), docs/occlusion.png, docs/projections.png (deconvnet, guided, gradient),
docs/invariance.png and docs/filters.png.
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
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)  # noqa: E731

    net = mc.train.load_checkpoint(args.checkpoint).net
    images, labels = data.load_idx(args.data, "test")
    images = images[:5000, None]
    labels = labels[:5000]
    prep = Standardize(*data.FASHION_MNIST_STATS)
    names = FASHION_MNIST_CLASSES

    best = mc.vis.top9(net, images, ["conv1", "conv3"], preprocess=prep)
    sheets = []
    for layer in ("conv1", "conv3"):
        maps = np.argsort(-best[layer].values[:, 0])[:6]
        proj = mc.vis.project_top_k(net, images, best[layer], preprocess=prep, maps=maps)
        patches, crops = mc.vis.top_k_patches(net, images, best[layer], maps=maps,
                                              projections=proj)
        sheets.append(mc.vis.top_k_sheet(crops, patches, [f"{layer} #{m}" for m in maps],
                                         columns=3, min_tile=30))
    render.stack(sheets).save(out("top9.png"))

    pick = [int(np.flatnonzero(labels == k)[0]) for k in (9, 0, 8)]   # boot, T-shirt, bag
    x = prep(images[pick])
    occ = mc.vis.occlusion(net, x[0], int(labels[pick[0]]), size=7, stride=1, fill=0.0)
    render.occlusion_figure(x[0], occ, names, path=out("occlusion.png"))

    dn = mc.vis.DeconvNet(net)
    fig, axes = render.figure(len(pick), 4, (1.5, 1.6))
    for r in range(len(pick)):
        a = dn.activations(x[r:r + 1], "conv5")[0]
        m = int(a.reshape(len(a), -1).max(axis=1).argmax())
        render.show_image(axes[r, 0], x[r], names[labels[pick[r]]])
        for c, rule in enumerate(("deconv", "guided", "grad")):
            render.show_signed(axes[r, c + 1], dn.project(x[r:r + 1], "conv5", m, rule=rule)[0],
                               f"conv5 #{m}, {rule}")
    fig.tight_layout()
    fig.savefig(out("projections.png"), dpi=90)

    results = [mc.vis.invariance(net, x, labels[pick], t, fill=0.0)
               for t in ("translate", "rotate")]
    mc.vis.plot_invariance(results, class_names=names).savefig(out("invariance.png"), dpi=80)
    mc.vis.filters_image(mc.vis.first_filters(net), zoom=5).save(out("filters.png"))
    print(f"docs figures in {os.path.abspath(args.out)}: "
          f"{', '.join(sorted(f for f in os.listdir(args.out) if f.endswith('.png')))}")


if __name__ == "__main__":
    main()
