"""Nearest neighbours in feature space: the images whose fc7 features lie closest to a
query's (Krizhevsky et al., 2012, Fig. 4): images near in pixels may be far in features
and vice versa, so the neighbours show what the layer treats as alike.

    d(q, i) = || phi(q) - phi(x_i) ||_2          ("euclidean")
    d(q, i) = 1 - cos(phi(q), phi(x_i))          ("cosine")

with phi the flattened output of ``layer`` (default: the penultimate fully connected
layer's rectified output, "layer 7").
"""
import numpy as np

from ._common import (check_net, chunks, default_invariance_layers, like_net, take,
                      to_numpy)


def feature_vectors(net, images, layer, preprocess=None, batch_size=256):
    """phi(x) for every image: (N, D) float64 NumPy."""
    out = []
    for part in chunks(len(images), batch_size):
        xb = take(images, np.arange(part.start, part.stop))
        xb = like_net(preprocess(xb) if preprocess else xb, net)
        a = net.forward(xb, train=False, until=layer)
        out.append(to_numpy(a).reshape(len(a), -1).astype(np.float64))
    net.clear_cache()
    return np.concatenate(out)


def nearest_neighbours(net, queries, images, k=8, layer=None, preprocess=None,
                       metric="euclidean", exclude=None, batch_size=256):
    """For each query image, the k nearest of ``images`` in the features of ``layer``.

    queries : (Q, C, H, W), images: (N, C, H, W) (both as stored; ``preprocess`` maps them)
    exclude : (Q,) indices into ``images`` to leave out per query (the query itself)
    Returns (indices (Q, k) int64, distances (Q, k) float64), nearest first.
    """
    check_net(net, "nearest_neighbours")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"nearest_neighbours: metric must be 'euclidean' or 'cosine', "
                         f"got {metric!r}")
    layer = layer or default_invariance_layers(net)[-1]
    if not 1 <= int(k) <= len(images) - (exclude is not None):
        raise ValueError(f"nearest_neighbours: k = {k} for {len(images)} images")
    q = feature_vectors(net, queries, layer, preprocess, batch_size)
    f = feature_vectors(net, images, layer, preprocess, batch_size)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        d = 1.0 - q @ f.T
    else:  # ||q||^2 - 2 q.f + ||f||^2, clipped at 0 against round-off
        d = np.sqrt(np.maximum((q * q).sum(1)[:, None] - 2 * q @ f.T + (f * f).sum(1)[None],
                               0.0))
    if exclude is not None:
        d[np.arange(len(q)), np.asarray(exclude, dtype=np.int64)] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :int(k)]
    return order, np.take_along_axis(d, order, axis=1)


def neighbours_sheet(queries, images, indices, zoom=3, lo=None, hi=None):
    """One row per query: the query, a gap, then its neighbours (as stored, stretched to
    [lo, hi]); a PIL image."""
    from . import render
    tiles = []
    for q, row in zip(queries, indices):
        tiles.append(render.to_pil(render.stretch(to_numpy(q), lo, hi), zoom))
        tiles.append(None)
        tiles += [render.to_pil(render.stretch(to_numpy(take(images, [i])[0]), lo, hi), zoom)
                  for i in row]
    return render.grid(tiles, indices.shape[1] + 2, pad=2)
