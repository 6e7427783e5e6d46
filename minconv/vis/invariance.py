"""Invariance to translation, scale and rotation (the paper's Fig. 5).

For an image x and a transform T_s of a family (vertical translation by s pixels,
scaling by s, rotation by s degrees, all about the image centre) we measure, for
every step s,

    d_L(s) = || phi_L(x) - phi_L(T_s x) ||_2       for each chosen layer L
    p(s)   = softmax(net(T_s x))[label]

where phi_L is the flattened output of layer L (by default the rectified first
convolution and the penultimate fully connected layer: the paper's layers 1 and 7).

Transforms resample bilinearly with the same array module as the images (so they
run on the GPU too); pixels whose source falls outside the image take ``fill``.
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ..functional import softmax
from ._common import (check_images, check_layer, check_net, chunks, default_invariance_layers,
                      like_net, progress, to_numpy)
from .topk import walk

TRANSFORMS = ("translate", "scale", "rotate")
UNITS = {"translate": "vertical shift (pixels)", "scale": "scale factor",
         "rotate": "rotation (degrees)"}


def default_steps(transform, size):
    """The paper's ranges, scaled to an image of ``size`` pixels."""
    if transform == "translate":
        reach = max(1, int(round(size * 0.27)))  # the paper shifts 224-pixel images by +-60
        return np.arange(-reach, reach + 1, max(1, reach // 6))
    if transform == "scale":
        return np.round(np.linspace(0.6, 1.8, 13), 3)
    if transform == "rotate":
        return np.arange(0, 361, 30)
    raise ValueError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")


def _inverse_maps(transform, s, H, W):
    """Source coordinates (y, x) for every output pixel under T_s, as NumPy (H, W) arrays."""
    cy, cx = (H - 1) / 2, (W - 1) / 2
    yy, xx = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64),
                         indexing="ij")
    if transform == "translate":  # content moves down by s pixels
        return yy - s, xx
    if transform == "scale":
        if s <= 0:
            raise ValueError(f"invariance: scale factors must be positive, got {s}")
        return cy + (yy - cy) / s, cx + (xx - cx) / s
    if transform == "rotate":  # counter-clockwise on screen: 90 degrees is np.rot90
        t = np.deg2rad(s)
        dy, dx = yy - cy, xx - cx
        return cy + np.cos(t) * dy + np.sin(t) * dx, cx - np.sin(t) * dy + np.cos(t) * dx
    raise ValueError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")


def transform_images(x, transform, steps, fill=0.0):
    """Every image of x (N, C, H, W) under every step: (N, S, C, H, W).

    Raises ValueError when a step leaves no pixel of the image in view.
    """
    check_images(x, "transform_images")
    xp = get_array_module(x)
    N, C, H, W = x.shape
    steps = np.atleast_1d(np.asarray(steps, dtype=np.float64))
    if steps.size == 0:
        raise ValueError("invariance: no steps given")
    out = xp.empty((N, len(steps), C, H, W), dtype=x.dtype)
    for i, s in enumerate(steps):
        sy, sx = _inverse_maps(transform, float(s), H, W)
        if transform == "scale" and s * min(H, W) < 1:
            raise ValueError(f"invariance: scale by {s:g} shrinks the {H}x{W} image below one "
                             "pixel; choose a smaller range")
        inside = (sy > -0.5) & (sy < H - 0.5) & (sx > -0.5) & (sx < W - 0.5)
        if not inside.any():
            raise ValueError(f"invariance: {transform} by {s:g} leaves nothing of the {H}x{W} "
                             "image in view; choose a smaller range")
        y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
        wy, wx = sy - y0, sx - x0
        acc = xp.zeros((N, C, H, W), dtype=x.dtype)
        for dy, dx, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                          (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
            yi, xi = y0 + dy, x0 + dx
            ok = (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W)
            # neighbours outside the image contribute the fill value
            src = x[:, :, xp.asarray(np.clip(yi, 0, H - 1)), xp.asarray(np.clip(xi, 0, W - 1))]
            val = xp.where(xp.asarray(ok), src, x.dtype.type(fill))
            acc += val * xp.asarray(w, dtype=x.dtype)
        out[:, i] = acc
    return out


@dataclass
class InvarianceResult:
    """distances[layer] : (N, S); prob, predicted : (N, S); steps : (S,)."""
    transform: str
    steps: np.ndarray
    layers: list
    distances: dict
    prob: np.ndarray
    predicted: np.ndarray
    labels: np.ndarray


def _features(net, x, layers):
    """({layer: (n, D) flattened output}, softmax probs (n, K))."""
    feats = {}
    for name, out in walk(net, x, net.names[-1], layers):
        if name in layers:
            feats[name] = out.reshape(len(x), -1).copy()
    return feats, softmax(out)


def invariance(net, images, labels, transform="translate", steps=None, layers=None, fill=0.0,
               batch_size=128, show_progress=False, comm=None):
    """Feature distances and class probability under a family of transforms.

    images : (N, C, H, W) (normalised as the net takes them), labels : (N,) classes.
    Returns an :class:`InvarianceResult`. With ``comm`` (a :mod:`minconv.distributed`
    communicator) each rank runs a contiguous run of the batches; every rank gets all of it.
    """
    check_net(net, "invariance")
    x = like_net(check_images(images, "invariance"), net)
    labels = np.asarray(to_numpy(labels) if hasattr(labels, "shape") else labels, np.int64)
    labels = labels.reshape(-1)
    if labels.shape != (len(x),):
        raise ValueError(f"invariance: {len(x)} images but {labels.shape[0]} labels")
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")
    layers = default_invariance_layers(net) if layers is None else list(layers)
    for name in layers:
        check_layer(net, name)
    steps = default_steps(transform, x.shape[-2]) if steps is None else np.asarray(steps)
    moved = transform_images(x, transform, steps, fill)                # (N, S, C, H, W)
    N, S = moved.shape[:2]
    base, probs0 = _features(net, x, layers)
    K = probs0.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"invariance: labels must lie in [0, {K})")
    flat = moved.reshape((N * S,) + tuple(x.shape[1:]))
    dist = {name: np.zeros(N * S) for name in layers}
    prob, pred = np.zeros(N * S), np.zeros(N * S, dtype=np.int64)
    owner = np.repeat(np.arange(N), S)                                  # image of each row
    parts = chunks(N * S, batch_size)
    if comm is not None and comm.size > 1:  # this rank's batches; the others' stay zero
        parts = parts[comm.share(len(parts))]
        show_progress = show_progress and comm.is_root
    for part in progress(parts, len(parts), f"invariance ({transform})", show_progress):
        feats, p = _features(net, flat[part], layers)
        rows = owner[part]
        for name in layers:
            diff = feats[name] - base[name][get_array_module(feats[name]).asarray(rows)]
            dist[name][part] = to_numpy(get_array_module(diff).sqrt((diff * diff).sum(axis=1)))
        p = to_numpy(p)
        prob[part] = p[np.arange(len(rows)), labels[rows]]
        pred[part] = p.argmax(axis=1)
    net.clear_cache()
    if comm is not None and comm.size > 1:  # every row was computed by one rank
        for a in list(dist.values()) + [prob, pred]:
            comm.allreduce(a, "the invariance curves")
    return InvarianceResult(transform, np.asarray(steps), layers,
                            {k: v.reshape(N, S) for k, v in dist.items()},
                            prob.reshape(N, S), pred.reshape(N, S), labels)


def plot_invariance(results, path=None, names=None, class_names=None):
    """One row per transform, columns: each layer's distance and P(true class); one
    line per image. Saves a PNG at ``path`` when given; returns the figure."""
    from .render import figure, plain
    results = [results] if isinstance(results, InvarianceResult) else list(results)
    cols = max(len(r.layers) for r in results) + 1
    fig, axes = figure(len(results), cols, (3.4, 2.7))
    for row, r in enumerate(results):
        for i in range(len(r.labels)):
            label = names[i] if names is not None else (
                class_names[r.labels[i]] if class_names is not None else f"image {i}")
            label = plain(label)
            for c, layer in enumerate(r.layers):
                axes[row, c].plot(r.steps, r.distances[layer][i], marker=".", label=label)
            axes[row, cols - 1].plot(r.steps, r.prob[i], marker=".", label=label)
        for c, layer in enumerate(r.layers):
            axes[row, c].set_title(f"{layer}: distance", fontsize=9)
            axes[row, c].set_xlabel(UNITS[r.transform], fontsize=8)
        axes[row, cols - 1].set_title("P(true class)", fontsize=9)
        axes[row, cols - 1].set_xlabel(UNITS[r.transform], fontsize=8)
        axes[row, cols - 1].set_ylim(-0.02, 1.02)
        for ax in axes[row]:
            ax.tick_params(labelsize=7)
    axes[0, cols - 1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
