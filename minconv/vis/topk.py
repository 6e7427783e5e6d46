"""Top-k activations per feature map over a dataset (the paper's Fig. 2), streamed.

One pass over the data, batch by batch: for every feature map f of every chosen
layer keep the k strongest activations seen so far as (value, image index,
position). With ``distinct_images`` (the paper's figure: nine different images)
each image offers its strongest position per map; otherwise every (image,
position) pair competes. Ties go to the lower image index, then the lower
position, so the result equals a brute-force sort of all candidates.

Memory is bounded by one batch of activations plus F*k numbers per layer, and the
running top-k stays on the device of the net.
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ..nn import Sequential
from ._common import (check_layer, check_net, chunks, conv_layer_names, is_plain, like_net,
                      progress, take, to_numpy)
from .deconvnet import DeconvNet
from .receptive import receptive_field


@dataclass
class TopK:
    """The k strongest activations of each feature map of one layer, best first.

    values    : (F, k) float64, -inf where fewer than k candidates were seen
    images    : (F, k) int64 dataset indices, -1 where empty
    positions : (F, k, 2) int64 (h, w) in the layer's map; -1 for fc layers
    """
    layer: str
    values: np.ndarray
    images: np.ndarray
    positions: np.ndarray

    @property
    def k(self):
        return self.values.shape[1]

    def __len__(self):
        return self.values.shape[0]


class _Running:
    """The running top-k of one layer, kept as device arrays."""

    def __init__(self, xp, F, k, fc):
        self.xp, self.k, self.fc = xp, k, fc
        self.values = xp.full((F, k), -xp.inf, dtype=xp.float64)
        self.images = xp.full((F, k), -1, dtype=xp.int64)
        self.flat = xp.full((F, k), -1, dtype=xp.int64)  # h*W + w

    def update(self, a, first, distinct):
        """Merge the candidates of activations ``a`` (B, F, H, W) or (B, F) whose first
        image has dataset index ``first``."""
        xp = self.xp
        B, F = a.shape[:2]
        maps = a.reshape(B, F, -1).astype(xp.float64, copy=False)     # (B, F, L)
        L = maps.shape[2]
        if distinct or L == 1:
            flat = maps.argmax(axis=2)                                 # (B, F) first max
            vals = xp.take_along_axis(maps, flat[:, :, None], axis=2)[:, :, 0]
            vals, flat = vals.T, flat.T                                # (F, B), image order
            imgs = xp.broadcast_to(xp.arange(first, first + B)[None, :], (F, B))
        else:
            vals, imgs, flat = self._best_pairs(maps, first)
        cat_v = xp.concatenate([self.values, vals], axis=1)
        cat_i = xp.concatenate([self.images, xp.asarray(imgs, dtype=xp.int64)], axis=1)
        cat_f = xp.concatenate([self.flat, xp.asarray(flat, dtype=xp.int64)], axis=1)
        order = _stable_argsort(xp, -cat_v)[:, :self.k]
        self.values = xp.take_along_axis(cat_v, order, axis=1)
        self.images = xp.take_along_axis(cat_i, order, axis=1)
        self.flat = xp.take_along_axis(cat_f, order, axis=1)

    def _best_pairs(self, maps, first):
        """The m = min(k, B*L) best (image, position) candidates of each map, in index
        order; ties at the m-th value are broken towards the lower index."""
        xp = self.xp
        B, F, L = maps.shape
        vals = maps.transpose(1, 0, 2).reshape(F, B * L)               # (F, B*L), (image, pos)
        m = min(self.k, B * L)
        kth = -xp.partition(-vals, m - 1, axis=1)[:, m - 1:m]           # (F, 1) m-th largest
        greater = vals > kth
        ties = vals == kth
        room = m - greater.sum(axis=1, keepdims=True)                   # ties still admitted
        keep = greater | (ties & (xp.cumsum(ties, axis=1) <= room))     # exactly m per map
        order = _stable_argsort(xp, ~keep)[:, :m]                       # kept first, in order
        return xp.take_along_axis(vals, order, axis=1), order // L + first, order % L

    def result(self, layer, W):
        flat = to_numpy(self.flat)
        pos = np.full(flat.shape + (2,), -1, dtype=np.int64)
        if not self.fc:
            valid = flat >= 0
            pos[..., 0] = np.where(valid, flat // W, -1)
            pos[..., 1] = np.where(valid, flat % W, -1)
        return TopK(layer, to_numpy(self.values), to_numpy(self.images), pos)


def _stable_argsort(xp, a):
    # CuPy's sort is always stable; NumPy needs to be asked
    return xp.argsort(a, axis=1, kind="stable") if xp is np else xp.argsort(a, axis=1)


def walk(net, x, until, names=None):
    """Run ``net`` forward on x and yield (name, output) after each layer up to ``until``.

    The consumer sees each output before the next layer runs, so an in-place ReLU
    cannot change it under its feet. A net with nested containers (or a Graph) yields
    the outputs of ``names`` (dotted paths, recorded in one forward pass, copied where
    a later in-place layer would overwrite them) and then the output of ``until``.
    """
    if not is_plain(net):
        names = [n for n in (names or []) if n != until]
        last = net.names[-1] if isinstance(net, Sequential) else net.output
        y = net.forward(x, train=False, until=None if until == last or names else until,
                        record=names + [until])
        for name in names:
            yield name, net.outputs[name]
        yield until, net.outputs.get(until, y)
        return
    stop = net.index(until)
    for position, (name, layer) in enumerate(net.items()):
        if position > stop:
            return
        try:
            x = layer.forward(x, train=False)
        except ValueError as error:
            raise ValueError(f"layer {name!r} ({type(layer).__name__}): {error}") from None
        yield name, x


def top_k(net, images, layers=None, k=9, batch_size=256, preprocess=None, distinct_images=True,
          show_progress=True, comm=None):
    """Stream ``images`` through ``net`` once; the k strongest activations per feature map.

    Parameters
    ----------
    images : array-like of shape (N, C, H, W), sliceable (a NumPy array or memmap)
    layers : layer names (default: every Conv2D)
    preprocess : callable applied to each batch before the net (e.g. normalisation)
    comm : a :mod:`minconv.distributed` communicator: each rank scans a contiguous run of
        the batches and every rank gets the merged result, equal to one process's

    Returns
    -------
    {layer: TopK}
    """
    check_net(net, "top_k")
    layers = list(layers) if layers is not None else conv_layer_names(net)
    if not layers:
        raise ValueError("top_k: no layers chosen and the net has no Conv2D layer")
    for name in layers:
        check_layer(net, name)
    if int(k) < 1:
        raise ValueError(f"top_k: k must be >= 1, got {k}")
    N = len(images)
    if N == 0:
        raise ValueError("top_k: the dataset is empty")
    if comm is not None and comm.size > 1:
        run = comm.batch_run(N, batch_size)
        local = top_k(net, images[run] if run.stop > run.start else images[:1], layers, k,
                      batch_size, preprocess, distinct_images, show_progress and comm.is_root)
        if run.stop == run.start:  # no batch left for this rank: it offers no candidates
            local = {name: TopK(name, np.full_like(r.values, -np.inf), np.full_like(r.images, -1),
                                np.full_like(r.positions, -1)) for name, r in local.items()}
        return comm.merge_top_k(local, run.start)
    deepest = max(layers, key=net.index) if is_plain(net) else \
        net.names[-1] if isinstance(net, Sequential) else net.output
    running, widths = {}, {}
    parts = chunks(N, batch_size)
    for part in progress(parts, len(parts), "top-k scan", show_progress):
        xb = images[part]
        if preprocess is not None:
            xb = preprocess(xb)
        xb = like_net(xb, net)
        for name, a in walk(net, xb, deepest, layers):
            if name not in layers:
                continue
            if name not in running:
                running[name] = _Running(get_array_module(a), a.shape[1], int(k), a.ndim == 2)
                widths[name] = a.shape[-1] if a.ndim == 4 else 1
            running[name].update(a, part.start, distinct_images)
    net.clear_cache()
    return {name: running[name].result(name, widths[name]) for name in layers}


def top9(net, images, layers=None, **kwargs):
    """:func:`top_k` with k = 9, the paper's choice."""
    return top_k(net, images, layers, k=9, **kwargs)


def project_top_k(net, images, result, rule="deconv", preprocess=None, batch_size=64,
                  maps=None, show_progress=False):
    """Deconvnet projections of the entries of a :class:`TopK`.

    Returns an array (len(maps), k, C, H, W) on the host, zeros where an entry is empty.
    ``maps`` picks feature maps (default: all).
    """
    maps = np.arange(len(result)) if maps is None else np.asarray(maps, dtype=np.int64)
    f_idx, k_idx = np.nonzero(result.images[maps] >= 0)
    img_idx = result.images[maps][f_idx, k_idx]
    fc = (result.positions[..., 0] < 0).all()
    dn = DeconvNet(net, batch_size)
    out = None
    parts = chunks(len(f_idx), batch_size)
    for part in progress(parts, len(parts), f"project {result.layer}", show_progress):
        xb = take(images, img_idx[part])
        if preprocess is not None:
            xb = preprocess(xb)
        xb = like_net(xb, net)
        pos = None if fc else result.positions[maps][f_idx[part], k_idx[part]]
        proj = to_numpy(dn.project(xb, result.layer, maps[f_idx[part]], pos, rule=rule))
        if out is None:
            out = np.zeros((len(maps), result.k) + proj.shape[1:], dtype=proj.dtype)
        out[f_idx[part], k_idx[part]] = proj
    return out


def top_k_patches(net, images, result, maps=None, pad=True, fill=None, projections=None):
    """Crops of the receptive field of every top-k entry: from the images, and from the
    projections when given. Lists indexed [map][rank] of (C, h, w) arrays (None if empty)."""
    maps = np.arange(len(result)) if maps is None else np.asarray(maps, dtype=np.int64)
    sample = to_numpy(take(images, [0])[0])
    field = receptive_field(net, result.layer, sample.shape)
    fill = float(np.min(sample)) if fill is None else fill
    patches, crops = [], []
    for row, f in enumerate(maps):
        p_row, c_row = [], []
        for r in range(result.k):
            i = int(result.images[f, r])
            if i < 0:
                p_row.append(None)
                c_row.append(None)
                continue
            pos = tuple(result.positions[f, r])
            pos = None if pos[0] < 0 else pos
            image = to_numpy(take(images, [i])[0])
            p_row.append(field.crop(image, pos, pad=pad, fill=fill)
                         if field.size is not None else image)
            if projections is not None:
                proj = projections[row, r]
                c_row.append(field.crop(proj, pos, pad=pad, fill=0.0)
                             if field.size is not None else proj)
        patches.append(p_row)
        crops.append(c_row)
    return (patches, crops) if projections is not None else patches


def choose_maps(result, n, how="strongest", seed=0):
    """Which feature maps of a :class:`TopK` to show: ``n`` of them, sorted.

    how : "strongest" (those with the largest top activation, strongest first) or "random"
          (a subset drawn by ``seed`` among the maps that fired at all, in index order: the
          paper's Fig. 2 shows a random subset)
    """
    F = len(result)
    n = min(int(n), F)
    if how == "strongest":
        return np.argsort(-result.values[:, 0], kind="stable")[:n]
    if how != "random":
        raise ValueError(f"choose_maps: how must be 'strongest' or 'random', got {how!r}")
    alive = np.flatnonzero(result.values[:, 0] > 0)
    pool = alive if len(alive) >= n else np.arange(F)
    return np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))
