"""Top-9 sheets of a small ResNet's residual stages, from a trained checkpoint.

    python examples/resnet_stage_top9.py --checkpoint runs/resnet_mini/last.npz [--out docs]

For the outputs of ``layer1`` (14x14) and ``layer2`` (7x7), the rectified sums of their
residual blocks: the nine strongest activations of six feature maps over 5,000 test
images, each projected to pixels and shown beside the image patch its receptive field
covers (the paper's Figure 2). The projections use guided backpropagation: resnet_mini
has no max pooling, so the deconvnet's projections would be the same for every image.
Writes docs/resnet_top9.png.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import minconv as mc  # noqa: E402
from minconv import data  # noqa: E402
from minconv.vis import render  # noqa: E402
from minconv.vis.datasets import Standardize  # noqa: E402

LAYERS = ("layer1", "layer2")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=data.FASHION_MNIST)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    net = mc.train.load_checkpoint(args.checkpoint).net
    images, _ = data.load_idx(args.data, "test")
    images = images[:args.images, None]
    prep = Standardize(*data.FASHION_MNIST_STATS)
    best = mc.vis.top9(net, images, list(LAYERS), preprocess=prep, show_progress=False)
    sheets = []
    for layer in LAYERS:
        maps = np.argsort(-best[layer].values[:, 0])[:6]
        proj = mc.vis.project_top_k(net, images, best[layer], rule="guided", preprocess=prep,
                                    maps=maps)
        patches, crops = mc.vis.top_k_patches(net, images, best[layer], maps=maps,
                                              projections=proj)
        sheets.append(mc.vis.top_k_sheet(crops, patches, [f"{layer} #{m}" for m in maps],
                                         columns=3, min_tile=30))
    path = os.path.join(args.out, "resnet_top9.png")
    render.stack(sheets).save(path)
    print(path)


if __name__ == "__main__":
    main()
