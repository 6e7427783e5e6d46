"""Report sections for the attribution methods, the random-subset top-9, the run's
snapshots and the nearest neighbours; :func:`minconv.vis.write_report` calls them.

Each takes the report's page object, whose ``section``, ``table`` and ``image`` escape
every text they are given.
"""
import os

import numpy as np

from . import render
from ._common import take, to_numpy
from .heatmap import heatmap, overlay


def random_top9(page, net, scan, best, layers, prep, lo, hi, maps, seed=0):
    """Fig. 2 as the paper shows it: the top-9 of a seeded random subset of each layer's
    maps (the strongest ones are shown above)."""
    from .topk import choose_maps, project_top_k, top_k_patches
    page.section("Top-9 of a random subset of feature maps (Fig. 2)",
                 f"As the paper shows them: {maps} maps per layer drawn at random (seed {seed}) "
                 "among those that fired, in index order; projections left, patches right.")
    for layer in layers:
        result = best[layer]
        chosen = choose_maps(result, maps, "random", seed)
        proj = project_top_k(net, scan, result, preprocess=prep, maps=chosen)
        patches, crops = top_k_patches(net, scan, result, maps=chosen, projections=proj,
                                       fill=lo)
        sheet = render.top_k_sheet(crops, patches, [f"{layer} #{m}" for m in chosen],
                                   columns=4, lo=lo, hi=hi)
        page.image(f"top9_random_{layer}", sheet,
                   caption=f"{layer}: maps {', '.join(map(str, chosen))} of {len(result)}")


def snapshots_table(page, snapshots):
    """The snapshots behind the feature-evolution figure: file, epoch, validation error."""
    from ..train import load_checkpoint
    rows = []
    for snap in snapshots:
        if not isinstance(snap, (str, os.PathLike)):
            continue
        checkpoint = load_checkpoint(snap)
        history = checkpoint.history
        error = history[-1].get("val_top1_error") if history else None
        rows.append((os.path.basename(str(snap)), checkpoint.epoch,
                     "-" if error is None else f"{error:.4f}"))
    if rows:
        page.table(["snapshot", "epoch", "validation top-1 error"], rows)


def attributions(page, net, x, y, names, layer, ig_steps=32, smooth_samples=16, seed=0):
    """Per image: Grad-CAM, Guided Grad-CAM, Integrated Gradients and SmoothGrad of the true
    class, each over the image."""
    from .gradcam import grad_cam, guided_grad_cam
    from .integrated import integrated_gradients
    from .saliency import saliency
    from .smoothgrad import smoothgrad
    page.section("Attributions: Grad-CAM, Guided Grad-CAM, Integrated Gradients, SmoothGrad",
                 f"Per image, for the true class: Grad-CAM at {layer} (upsampled, bilinear); "
                 "Guided Grad-CAM (guided backpropagation times Grad-CAM); Integrated "
                 f"Gradients from the mean image (zero input), {ig_steps} Gauss-Legendre "
                 f"points; SmoothGrad of the saliency, {smooth_samples} copies with noise of "
                 "standard deviation 0.15 of the input range. Each map over the image in "
                 "colour: red positive, blue negative (signed maps), bright = strong.")
    t = np.asarray(y, dtype=np.int64)
    span = float(to_numpy(x).max() - to_numpy(x).min())
    maps = [("Grad-CAM", grad_cam(net, x, layer, t, upsample_to=x.shape[2:], mode="bilinear")),
            ("Guided Grad-CAM", guided_grad_cam(net, x, layer, t)),
            ("Integrated Gradients", integrated_gradients(net, x, t, n_steps=ig_steps)),
            ("SmoothGrad", smoothgrad(saliency, net, x, n_samples=smooth_samples,
                                      stdev=0.15 * span, seed=seed, target=t))]
    zoom = max(1, 84 // x.shape[-1])
    tiles = []
    for j in range(len(x)):
        tiles.append(render.to_pil(render.stretch(to_numpy(x[j])), zoom))
        tiles += [render.to_pil(overlay(x[j], to_numpy(a[j])), zoom) for _, a in maps]
        tiles.append(render.to_pil(heatmap(to_numpy(maps[0][1][j])), zoom))
    page.image("attributions", render.grid(tiles, len(maps) + 2, pad=2),
               caption="columns: image, " + ", ".join(n for n, _ in maps) +
               ", Grad-CAM alone; rows: " + ", ".join(names[int(k)] for k in t))


def neighbours(page, net, images, pick, prep, names, labels, k=8, pool=2000):
    """The k nearest images in fc7 space to each picked test image (seed 003 12.9.2)."""
    from ._common import default_invariance_layers
    from .neighbours import nearest_neighbours, neighbours_sheet
    layer = default_invariance_layers(net)[-1]
    n = min(len(images), pool)
    if n <= k:
        return
    database = images[:n] if hasattr(images, "shape") else take(images, np.arange(n))
    queries = take(images, pick)
    inside = np.asarray(pick) < n
    idx, dist = nearest_neighbours(net, queries, database, k=k, layer=layer, preprocess=prep,
                                   exclude=np.where(inside, pick, 0) if inside.all() else None)
    page.section(f"Nearest neighbours in {layer} space",
                 f"For each test image (left), the {k} closest of the first {n} test images by "
                 f"Euclidean distance between {layer} features (the image itself left out).")
    head = to_numpy(take(images, np.arange(min(n, 256))))
    sheet = neighbours_sheet(queries, database, idx, lo=float(head.min()),
                             hi=float(head.max()))
    agree = np.mean(np.asarray(labels)[idx] == np.asarray(labels)[pick][:, None])
    page.image("neighbours", sheet, caption=f"{agree:.0%} of the neighbours share the "
               "query's class; rows: " + ", ".join(names[int(labels[i])] for i in pick))


def unit_models(page, net, shape, layer, steps, lo, hi, n=8):
    """Activation maximisation of the centre unit of the first n maps of ``layer``."""
    from .maximise import maximise
    page.section(f"Activation maximisation ({layer})",
                 f"For maps 0..{n - 1} of {layer}: the input that most excites the map's centre "
                 f"unit, argmax_x a(x) - lambda ||x||^2 - mu TV(x), by {steps} Adam steps with "
                 "jitter and a Gaussian blur (sigma 0.5) every 4 steps.")
    F = int(net.forward(np.zeros((1,) + tuple(shape), np.float32).astype(
        _dtype(net)), train=False, until=layer).shape[1])
    net.clear_cache()
    channels = list(range(min(n, F)))
    x = to_numpy(maximise(net, layer, channels, shape, steps=steps, lr=0.01 * (hi - lo),
                          l2=1e-3, tv=0.01, clip=(lo, hi)))
    zoom = max(1, 56 // shape[-1])
    tiles = [render.to_pil(render.stretch(img), zoom) for img in x]
    page.image(f"maximise_{layer}", render.grid(tiles, len(tiles), pad=2),
               caption=f"{layer}, maps {', '.join(map(str, channels))}")


def _dtype(net):
    from ._common import net_dtype
    return net_dtype(net)
