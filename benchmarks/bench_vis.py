"""Speed of the visualisations against their targets, printed as a markdown table.

    python benchmarks/bench_vis.py [--checkpoint runs/fm/best.npz] [--images 10000]

1. Top-9 over the Fashion-MNIST test images for every conv layer of zfnet_mini: the
   streamed scan, then the deconvnet projections of all 9 entries of every feature map
   (target: under 2 minutes for the 10,000 images on 2 cores).
2. An occlusion map at stride 1 (7x7 square, 22x22 positions) on a 28x28 image
   (target: under 2 s).
3. One deconvnet projection from conv5 of the full ZFNet on a 224x224 image, forward
   pass included (target: under 1 s).

The net is the checkpoint's when one is given, else freshly initialised (the work
does not depend on the weights).
"""
import argparse
import os
import sys
import time

import _timing  # noqa: E402,F401  before NumPy: it sets OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import machine, markdown_table, median_ms  # noqa: E402

import minconv as mc  # noqa: E402
from minconv import data  # noqa: E402
from minconv.vis.datasets import Standardize  # noqa: E402


def bench_top9(net, images, batch_size):
    prep = Standardize(*data.FASHION_MNIST_STATS)
    start = time.perf_counter()
    found = mc.vis.top9(net, images, batch_size=batch_size, preprocess=prep, show_progress=False)
    scan = time.perf_counter() - start
    start = time.perf_counter()
    count = 0
    for result in found.values():
        proj = mc.vis.project_top_k(net, images, result, preprocess=prep, batch_size=256)
        count += proj.shape[0] * proj.shape[1]
    return scan, time.perf_counter() - start, count, len(found)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="zfnet_mini checkpoint (default: a fresh net)")
    p.add_argument("--data", default=data.FASHION_MNIST)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"machine: {machine()}; Cython kernels built: {mc._kernels.CPU_BUILT}\n")

    mc.nn.set_seed(0)
    if args.checkpoint:
        net = mc.train.load_checkpoint(args.checkpoint).net
    else:
        net = mc.models.zfnet_mini()
    images, labels = data.load_idx(args.data, "test")
    images = images[:args.images, None]                                  # (N, 1, 28, 28)
    rows = []

    scan, project, count, layers = bench_top9(net, images, args.batch_size)
    total = scan + project
    rows.append((f"top-9, {layers} conv layers of zfnet_mini, {len(images):,} images",
                 f"{total:.1f} s (scan {scan:.1f} s + {count:,} projections {project:.1f} s)",
                 "< 120 s", "yes" if total < 120 else "NO"))

    x = Standardize(*data.FASHION_MNIST_STATS)(images[:1])[0]
    ms = median_ms(lambda: mc.vis.occlusion(net, x, int(labels[0]), size=7, stride=1,
                                            fill=0.0), args.repeats)
    rows.append(("occlusion map, 28x28 image, 7x7 square, stride 1 (484 positions)",
                 f"{ms / 1e3:.2f} s", "< 2 s", "yes" if ms < 2000 else "NO"))

    del net
    zf = mc.models.zfnet(num_classes=1000)
    dn = mc.vis.DeconvNet(zf)
    img = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ms = median_ms(lambda: dn.project(img, "conv5", 17), args.repeats)
    rows.append(("deconvnet projection from conv5 of ZFNet, 224x224 image (with forward)",
                 f"{ms / 1e3:.2f} s", "< 1 s", "yes" if ms < 1000 else "NO"))

    print(markdown_table(["task", "time", "target", "met"], rows))


if __name__ == "__main__":
    main()
