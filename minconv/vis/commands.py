"""``minconv visualize | occlude | project | invariance | demo``.

    minconv demo --out demo/                      # train zfnet_mini a few minutes, then report
    minconv visualize --checkpoint runs/fm/best.npz --out report/
    minconv occlude --checkpoint runs/fm/best.npz --index 3 --size 8 --stride 1
    minconv project --checkpoint runs/fm/best.npz --index 3 --layer conv5
    minconv invariance --checkpoint runs/fm/best.npz --transform rotate

The data default to what the checkpoint was trained on (its recorded folder and
preprocessing); ``--data`` points elsewhere. :mod:`minconv.cli` calls
:func:`register` to add these subcommands.
"""
import os
import time

import numpy as np

from .. import distributed
from .._cli_args import nonnegative_int, positive_float, positive_int
from . import render
from ._common import to_numpy
from ..io.sources import add_source_arguments
from .datasets import FASHION_MNIST_CLASSES, load_data, parse_steps

# ------------------------------------------------------------------ shared arguments


def _common_arguments(p, out_default):
    p.add_argument("--checkpoint", help="a .npz written by minconv train, or an .onnx model "
                   "(or give --model and --weights)")
    add_source_arguments(p)
    p.add_argument("--data", help="data folder (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="which images to look at (image folders: test means val/ or test/)")
    p.add_argument("--limit", type=positive_int, help="use only the first N images of the split")
    p.add_argument("--out", default=out_default, help=f"output (default {out_default})")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))


def _load(args):
    from ..io.sources import is_imported, load_source, source_data
    checkpoint = load_source(args, device=args.device)  # .npz, .onnx, or --model --weights
    checkpoint.net.lock_weights()  # the visualisations never write them: layouts kept
    if is_imported(checkpoint):
        return checkpoint, source_data(checkpoint, args)
    return checkpoint, load_data(checkpoint, args.data, args.split, args.limit)


def _index(data, index):
    if not 0 <= index < len(data.labels):
        raise ValueError(f"--index {index} is out of range: the {data.split} split has "
                         f"{len(data.labels)} images")
    return index


def _ensure_parent(path):
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path


# ------------------------------------------------------------------ visualize

def add_visualize_arguments(p):
    _common_arguments(p, "report")
    p.add_argument("--layers", type=lambda s: s.split(","), help="layers for the top-9 "
                   "sheets, e.g. conv1,conv2 (default: every conv layer)")
    p.add_argument("--images", type=positive_int, default=6, help="test images for the "
                   "per-image experiments")
    p.add_argument("--scan", type=positive_int,
                   help="top-9 over the first N images (default: all)")
    p.add_argument("--maps", type=positive_int, default=16, help="feature maps per top-9 sheet")
    p.add_argument("--snapshots", nargs="*", help="checkpoints for the feature-evolution "
                   "figure, in training order (default: the run's snapshots/, kept by "
                   "train --snapshot-every)")
    p.add_argument("--steps", type=positive_int, default=150, help="gradient steps for synthesis")
    p.add_argument("--occlusion-size", type=positive_int)
    p.add_argument("--occlusion-stride", type=positive_int)
    p.add_argument("--embed", action="store_true", help="inline the PNGs in index.html")
    p.add_argument("--no-progress", action="store_true")


def run_visualize(args):
    from .evolution import run_snapshots
    from .report import write_report
    checkpoint, data = _load(args)
    path = write_report(checkpoint.net, data.images, data.labels, args.out, layers=args.layers,
                        class_names=data.class_names, n_images=args.images,
                        preprocess=data.preprocess, fill=data.fill,
                        snapshots=args.snapshots if args.snapshots is not None
                        else run_snapshots(args.checkpoint),
                        max_scan=args.scan, maps_per_layer=args.maps,
                        occlusion_size=args.occlusion_size,
                        occlusion_stride=args.occlusion_stride, synthesis_steps=args.steps,
                        embed=args.embed, show_progress=not args.no_progress,
                        title=f"minconv report: {os.path.basename(args.checkpoint)}",
                        comm=distributed.data_parallel())  # under mpirun: shared scans
    if path is not None:  # rank 0 (the other ranks of an MPI run write nothing)
        print(f"report: {os.path.abspath(path)}")
    return 0


# ------------------------------------------------------------------ occlude

def add_occlude_arguments(p):
    _common_arguments(p, "occlusion.png")
    p.add_argument("--index", type=nonnegative_int, default=0, help="image index in the split")
    p.add_argument("--size", type=positive_int, default=8, help="side of the grey square (pixels)")
    p.add_argument("--stride", type=positive_int, default=1)
    p.add_argument("--layer", help="layer whose strongest map is tracked (default: last conv)")
    p.add_argument("--channel", type=nonnegative_int, help="track this feature map instead")
    p.add_argument("--batch-size", type=positive_int, default=256)


def run_occlude(args):
    from .occlusion import occlusion
    checkpoint, data = _load(args)
    i = _index(data, args.index)
    x = data.preprocess(np.asarray(data.images[i:i + 1]))
    y = int(data.labels[i])
    start = time.perf_counter()
    occ = occlusion(checkpoint.net, x, y, size=args.size, stride=args.stride, fill=data.fill,
                    layer=args.layer, channel=args.channel, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    names = data.class_names
    render.occlusion_figure(x[0], occ, names, path=_ensure_parent(args.out))
    r, c = np.unravel_index(occ.prob.argmin(), occ.prob.shape)
    print(f"image {i} ({names[y]}): {occ.prob.size} occluder positions in {seconds:.2f} s; "
          f"P({names[y]}) unoccluded {occ.baseline['prob']:.3f}, lowest {occ.prob.min():.3f} "
          f"with the square at (top {occ.tops[r]}, left {occ.lefts[c]}); tracked "
          f"{occ.layer} map {occ.channel}")
    classes, counts = np.unique(occ.top_class, return_counts=True)
    print("most probable class over positions: " + ", ".join(
        f"{names[k]} {n / occ.top_class.size:.0%}" for k, n in zip(classes, counts)))
    print(f"figure: {os.path.abspath(args.out)}")
    return 0


# ------------------------------------------------------------------ project

def add_project_arguments(p):
    _common_arguments(p, "projection.png")
    p.add_argument("--index", type=nonnegative_int, default=0, help="image index in the split")
    p.add_argument("--layer", required=True, help="e.g. conv5, pool2, fc6")
    p.add_argument("--channel", type=nonnegative_int,
                   help="feature map (default: the --top strongest)")
    p.add_argument("--position", help="h,w of the unit (default: the strongest)")
    p.add_argument("--rule", default="deconv", choices=("deconv", "guided", "grad"))
    p.add_argument("--top", type=positive_int, default=8, help="maps shown without --channel")


def run_project(args):
    from .deconvnet import DeconvNet
    from .receptive import receptive_field
    checkpoint, data = _load(args)
    net = checkpoint.net
    i = _index(data, args.index)
    x = data.preprocess(np.asarray(data.images[i:i + 1]))
    dn = DeconvNet(net)
    a = to_numpy(dn.activations(x, args.layer))[0]
    if args.channel is not None:
        channels = np.array([args.channel])
    else:
        strength = a.reshape(a.shape[0], -1).max(axis=1)
        channels = np.argsort(-strength, kind="stable")[:args.top]
    position = None
    if args.position:
        try:
            position = tuple(int(v) for v in args.position.split(","))
            assert len(position) == 2
        except (ValueError, AssertionError):
            raise ValueError(f"--position expects h,w, got {args.position!r}") from None
    proj, values, positions = dn.project(x, args.layer, channels, position, rule=args.rule,
                                         return_units=True)
    proj = to_numpy(proj)
    field = receptive_field(net, args.layer, x.shape[1:])
    fig, axes = render.figure(2, len(channels) + 1, (1.9, 2.0))
    render.show_image(axes[0, 0], x[0], f"{data.class_names[int(data.labels[i])]}")
    axes[1, 0].set_axis_off()
    for j, (ch, v, pos) in enumerate(zip(channels, values, positions)):
        where = "" if pos[0] < 0 else f" at {pos[0]},{pos[1]}"
        render.show_signed(axes[0, j + 1], proj[j], f"{args.layer} #{ch}{where}\n{v:.3g}")
        if field.size is not None and pos[0] >= 0:
            render.show_image(axes[1, j + 1], field.crop(x[0], tuple(pos)), "patch")
        else:
            axes[1, j + 1].set_axis_off()
        print(f"{args.layer} map {int(ch)}: activation {v:.4g}{where}")
    fig.tight_layout()
    fig.savefig(_ensure_parent(args.out), dpi=110)
    if field.size is not None:
        print(f"receptive field of {args.layer}: {field.size[0]}x{field.size[1]} pixels, jump "
              f"{field.jump[0]}, start {field.start[0]}")
    print(f"figure ({args.rule}): {os.path.abspath(args.out)}")
    return 0


# ------------------------------------------------------------------ invariance

def add_invariance_arguments(p):
    _common_arguments(p, "invariance.png")
    p.add_argument("--indices", type=lambda s: [int(v) for v in s.split(",")],
                   help="image indices (default: one image of each of the first 5 classes)")
    p.add_argument("--transform", default="all",
                   choices=("translate", "scale", "rotate", "all"))
    p.add_argument("--steps", help="start:stop:step or a comma list (one transform only)")
    p.add_argument("--layers", type=lambda s: s.split(","),
                   help="layers compared (default: first conv and penultimate fc)")


def run_invariance(args):
    from .invariance import TRANSFORMS, invariance, plot_invariance
    from ._common import pick_examples
    checkpoint, data = _load(args)
    pick = np.array(args.indices) if args.indices else pick_examples(data.labels, 5)
    for i in pick:
        _index(data, int(i))
    transforms = TRANSFORMS if args.transform == "all" else (args.transform,)
    if args.steps and len(transforms) > 1:
        raise ValueError("--steps needs a single --transform")
    x = data.preprocess(np.asarray(data.images[pick]))
    y = data.labels[pick]
    results = [invariance(checkpoint.net, x, y, t, parse_steps(args.steps), args.layers,
                          fill=data.fill) for t in transforms]
    names = [f"{int(i)}: {data.class_names[int(k)]}" for i, k in zip(pick, y)]
    plot_invariance(results, _ensure_parent(args.out), names=names)
    for r in results:
        print(f"{r.transform}: steps {', '.join(f'{s:g}' for s in r.steps)}")
        for j, name in enumerate(names):
            dists = "; ".join(f"{layer} max distance {r.distances[layer][j].max():.3g}"
                              for layer in r.layers)
            print(f"  {name}: {dists}; P(true) from {r.prob[j].min():.3f} to "
                  f"{r.prob[j].max():.3f}")
    print(f"figure: {os.path.abspath(args.out)}")
    return 0


# ------------------------------------------------------------------ demo

def add_demo_arguments(p):
    from ..data import FASHION_MNIST
    p.add_argument("--out", default="demo", help="folder for the run and the report")
    p.add_argument("--data", default=FASHION_MNIST, help="Fashion-MNIST IDX folder")
    p.add_argument("--minutes", type=positive_float, default=3.0,
                   help="training time to aim for: the epochs are sized to fill it")
    p.add_argument("--epochs", type=positive_int, default=4, help="short epochs to train")
    p.add_argument("--epoch-images", type=positive_int,
                   help="training images per epoch, a random draw of the 60,000 "
                        "(default: as many as fit in --minutes)")
    p.add_argument("--scan", type=positive_int, default=10000,
                   help="test images scanned for top-9")
    p.add_argument("--steps", type=positive_int, default=150, help="gradient steps for synthesis")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true")


def run_demo(args):
    from .demo import demo
    path = demo(args.out, data_root=args.data, minutes=args.minutes, epochs=args.epochs,
                epoch_images=args.epoch_images, scan=args.scan, steps=args.steps,
                seed=args.seed, device=args.device, progress=not args.no_progress)
    print(f"\nopen the report: {os.path.abspath(path)}")
    return 0


def register(add):
    """Called by :mod:`minconv.cli` to add the visualisation subcommands."""
    add("visualize", "write the HTML report of every visualisation for a checkpoint",
        add_visualize_arguments, run_visualize)
    add("occlude", "occlusion sensitivity maps of one image (Fig. 7)", add_occlude_arguments,
        run_occlude)
    add("project", "deconvnet projections of a layer's strongest units in one image",
        add_project_arguments, run_project)
    add("invariance", "feature distance and class probability under translation, scale and "
        "rotation (Fig. 5)", add_invariance_arguments, run_invariance)
    add("demo", "train zfnet_mini on Fashion-MNIST for a few minutes, then write its report",
        add_demo_arguments, run_demo)


__all__ = ["FASHION_MNIST_CLASSES", "register"]
