"""Attribution methods on ZFNet-mini and Fashion-MNIST, step by step.

    python examples/attributions.py --checkpoint runs/fm/best.npz --out attributions.png

(a checkpoint comes from ``minconv train --model zfnet-mini`` or ``minconv demo``). For four
test images it computes, for the predicted class,

- saliency |dS/dx| and guided backpropagation (one backward pass each, two rules);
- Grad-CAM at relu5: alpha_k = mean over space of dS/dA_k, relu(sum_k alpha_k A_k);
- Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM;
- Integrated Gradients from the black image with 32 Gauss-Legendre points, and how far the
  sum of the attributions is from S(x) - S(black) (completeness);
- SmoothGrad: the saliency averaged over 16 noisy copies,

and draws each over its image, one row per image.
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
    p.add_argument("--out", default="attributions.png")
    args = p.parse_args()

    net = mc.train.load_checkpoint(args.checkpoint).net
    images, labels = data.load_idx(args.data, "test")
    x = Standardize(*data.FASHION_MNIST_STATS)(images[:4, None])       # (4, 1, 28, 28)
    target = mc.vis.predict(net, x).argmax(axis=1)
    black = np.full_like(x[:1], x.min())                                # the black image

    maps = {
        "saliency": mc.vis.saliency(net, x, target),
        "guided backprop": mc.vis.guided_backprop(net, x, target),
        "Grad-CAM relu5": mc.vis.grad_cam(net, x, "relu5", target, upsample_to=(28, 28),
                                          mode="bilinear"),
        "Guided Grad-CAM": mc.vis.guided_grad_cam(net, x, "relu5", target),
        "SmoothGrad": mc.vis.smoothgrad(mc.vis.saliency, net, x, n_samples=16, stdev=0.3,
                                        target=target),
    }
    ig, gap = mc.vis.integrated_gradients(net, x, target, baseline=black[0], n_steps=32,
                                          return_delta=True)
    maps["Integrated Gradients"] = ig
    total = ig.reshape(len(x), -1).sum(axis=1)
    for i, t in enumerate(target):
        print(f"image {i}: predicted {FASHION_MNIST_CLASSES[t]}; sum of IG {total[i]:.3f}, "
              f"S(x) - S(black) {total[i] - gap[i]:.3f}")

    rows = []
    for i in range(len(x)):
        tiles = [render.to_pil(render.stretch(x[i]), 4)]
        tiles += [render.to_pil(mc.vis.overlay(x[i], a[i]), 4) for a in maps.values()]
        rows.append(render.stack(tiles, vertical=False, pad=3))
    render.save(render.stack(rows), args.out)
    print(f"columns: image, {', '.join(maps)}: {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
