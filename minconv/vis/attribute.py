"""``minconv attribute``: one attribution method for a few images of a checkpoint's data.

    minconv attribute --method gradcam --checkpoint runs/fm/best.npz --layer relu5 \
        --index 0 1 2 --out gradcam.png
    minconv attribute --method ig --steps 32 --integration riemann_trapezoid ...
    minconv attribute --method saliency --smooth 25 --stdev 0.15 ...      # SmoothGrad

The figure has one row per image: the image, the map, and the map over the image. Methods:
saliency (|gradient|, reduced over channels by --reduce), gradient, guided (guided
backprop), deconv (the deconvnet's relu* rule), gradcam, guided-gradcam, ig (Integrated
Gradients), input-x-gradient. ``--smooth N`` wraps any of them in SmoothGrad.
"""
import os

import numpy as np

from .._cli_args import nonnegative_int, positive_float, positive_int

METHODS = ("saliency", "gradient", "guided", "deconv", "gradcam", "guided-gradcam", "ig",
           "input-x-gradient")
NEEDS_LAYER = ("gradcam", "guided-gradcam")


def attribution_function(method, layer=None, reduce="max", steps=50, integration="gausslegendre",
                         baseline=0.0):
    """``f(net, x, target=...)`` for a method name of the command (see the module)."""
    from .gradcam import grad_cam, guided_grad_cam
    from .integrated import input_x_gradient, integrated_gradients
    from .saliency import guided_backprop, input_gradient, saliency
    if method not in METHODS:
        raise ValueError(f"attribute: --method must be one of {', '.join(METHODS)}, "
                         f"got {method!r}")
    if method in NEEDS_LAYER and not layer:
        raise ValueError(f"attribute: --method {method} needs --layer (a spatial layer such as "
                         "the last conv's relu)")
    table = {
        "saliency": lambda net, x, target=None: saliency(net, x, target, reduce=reduce),
        "gradient": lambda net, x, target=None: input_gradient(net, x, target),
        "guided": lambda net, x, target=None: guided_backprop(net, x, target),
        "deconv": lambda net, x, target=None: input_gradient(net, x, target, rule="deconv"),
        "gradcam": lambda net, x, target=None: grad_cam(
            net, x, layer, target, upsample_to=x.shape[2:], mode="bilinear"),
        "guided-gradcam": lambda net, x, target=None: guided_grad_cam(net, x, layer, target),
        "ig": lambda net, x, target=None: integrated_gradients(
            net, x, target, baseline, n_steps=steps, method=integration),
        "input-x-gradient": lambda net, x, target=None: input_x_gradient(net, x, target),
    }
    return table[method]


def add_attribute_arguments(p):
    from .commands import _common_arguments
    _common_arguments(p, "attribution.png")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--index", type=nonnegative_int, nargs="+", default=[0],
                   help="image indices in the split")
    p.add_argument("--layer", help="Grad-CAM's layer, e.g. relu5 or conv5")
    p.add_argument("--target", type=nonnegative_int,
                   help="class to explain (default: each prediction)")
    p.add_argument("--reduce", default="max", choices=("max", "mean"),
                   help="saliency: over colour channels")
    p.add_argument("--steps", type=positive_int, default=50, help="ig: points on the path")
    p.add_argument("--integration", default="gausslegendre",
                   choices=("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                            "riemann_trapezoid"), help="ig: the quadrature rule")
    p.add_argument("--smooth", type=positive_int, help="SmoothGrad: average over N noisy copies")
    p.add_argument("--stdev", type=positive_float, default=0.15,
                   help="SmoothGrad: noise standard deviation, in input units")
    p.add_argument("--nt-type", default="smoothgrad",
                   choices=("smoothgrad", "smoothgrad_sq", "vargrad"))
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="SmoothGrad: the noise's seed")
    p.add_argument("--save-array", help="also write the attributions as .npy")


def run_attribute(args):
    from . import render
    from .commands import _ensure_parent, _index, _load
    from .heatmap import heatmap, overlay
    from .saliency import predict
    from .smoothgrad import smoothgrad
    checkpoint, data = _load(args)
    net = checkpoint.net
    index = [_index(data, i) for i in args.index]
    x = data.preprocess(np.stack([np.asarray(data.images[i]) for i in index]))
    f = attribution_function(args.method, args.layer, args.reduce, args.steps,
                             args.integration)
    probs = predict(net, x)
    target = probs.argmax(axis=1) if args.target is None else np.full(len(x), args.target)
    if args.smooth:
        a = smoothgrad(f, net, x, n_samples=args.smooth, stdev=args.stdev, kind=args.nt_type,
                       seed=args.seed, target=target)
    else:
        a = f(net, x, target=target)
    from ._common import to_numpy
    a = to_numpy(a)
    if args.save_array:
        np.save(_ensure_parent(args.save_array), a, allow_pickle=False)
    names = data.class_names
    rows = []
    for n, i in enumerate(index):
        zoom = max(1, 112 // x.shape[-1])
        tiles = [render.to_pil(render.stretch(x[n]), zoom), render.to_pil(heatmap(a[n]), zoom),
                 render.to_pil(overlay(x[n], a[n]), zoom)]
        rows.append(render.stack(tiles, vertical=False, pad=4))
        print(f"image {i} ({names[int(data.labels[i])]}): explained class "
              f"{names[int(target[n])]} (p = {probs[n, target[n]]:.3f}); attribution range "
              f"[{a[n].min():.3g}, {a[n].max():.3g}]")
    render.save(render.stack(rows), _ensure_parent(args.out))
    label = args.method + (f" + {args.nt_type} ({args.smooth} samples)" if args.smooth else "")
    print(f"{label}: {os.path.abspath(args.out)}")
    return 0


def register(add):
    """Called by :mod:`minconv.cli` to add ``attribute``."""
    add("attribute", "attribution maps: saliency, guided backprop, deconvnet, Grad-CAM, "
        "Guided Grad-CAM, Integrated Gradients, Input x Gradient, SmoothGrad",
        add_attribute_arguments, run_attribute)
