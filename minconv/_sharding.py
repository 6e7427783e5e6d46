"""How the data are split over the ranks of :mod:`minconv.distributed`.

- Training: every rank iterates the whole loader and keeps its rows of each global
  batch (:class:`ShardedLoader`); Dropout draws the mask of the whole batch and keeps
  the same rows (:func:`share_dropout`). Both keep the random draws those of one
  process, so the data-parallel run equals the single-process one.
- Scans: each rank scans a contiguous run of whole batches (``Communicator.batch_run``);
  :func:`merge_top_k` merges the ranks' top-k lists exactly.
"""
import numpy as np

from .backend import get_array_module


class ShardedLoader:
    """This rank's rows of every batch of ``loader``.

    Every rank iterates the whole loader (so the shuffled order and the random
    augmentations, drawn from the loader's one generator, are the same on all)
    and keeps rows [b_r, b_{r+1}) of each global batch (:func:`minconv.distributed.shares`).
    Anything else (``rng``, ``spec()``, ``num_samples``, ``len``) is the loader's.
    """

    def __init__(self, loader, comm):
        self.loader, self.comm = loader, comm

    def __iter__(self):
        try:
            for x, y in self.loader:
                part = self.comm.share(len(y))
                self.comm.batch_rows = (part, len(y))  # for the Dropout layers
                yield x[part], y[part]
        finally:
            self.comm.batch_rows = None

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def share_dropout(net, comm):
    """Make every Dropout layer of ``net`` draw the mask of the whole global batch, as one
    process would, and keep this rank's rows of it: training with dropout then equals one
    process too, and every rank's generator stays in step (checkpoints hold rank 0's)."""
    from . import functional as F
    from .nn import Dropout
    for layer in _all_layers(net):
        if isinstance(layer, Dropout) and not getattr(layer, "_shared_masks", False):
            layer.forward = _whole_batch_dropout(layer, comm, F)
            layer._shared_masks = True


def _whole_batch_dropout(layer, comm, F):
    original = layer.forward

    def forward(x, train=False):
        rows = comm.batch_rows
        if not train or rows is None or layer.p == 0.0:
            return original(x, train)
        part, total = rows
        xp = get_array_module(x)
        whole = xp.zeros((total,) + tuple(x.shape[1:]), dtype=x.dtype)  # only its shape counts
        _, mask = F.dropout(whole, layer.p, layer._generator_for(x), True)
        mask = mask[part]
        layer._cache = (mask, x.shape)          # what Dropout.backward reads
        return x * mask

    return forward


def _all_layers(net):
    for _, layer in net.items():
        if hasattr(layer, "items") and callable(layer.items):
            yield from _all_layers(layer)
        else:
            yield layer


def merge_top_k(comm, results, offset):
    """Merge every rank's {layer: TopK} (image indices relative to ``offset``) into the
    top-k of the whole scan, the same on every rank.

    Each rank's list is sorted by value, ties by (image, position); rank r's images all
    precede rank r+1's, so a stable sort of the rank-ordered concatenation by value keeps
    the single-process order of ties."""
    from .vis.topk import TopK
    merged = {}
    for layer, result in results.items():
        images = np.where(result.images >= 0, result.images + offset, -1)
        values = comm.allgather(result.values, f"the top-k of {layer}")      # (R, F, k)
        images = comm.allgather(images, f"the top-k of {layer}")
        positions = comm.allgather(result.positions, f"the top-k of {layer}")  # (R, F, k, 2)
        R, F, k = values.shape
        cat_v = values.transpose(1, 0, 2).reshape(F, R * k)
        cat_i = images.transpose(1, 0, 2).reshape(F, R * k)
        cat_p = positions.transpose(1, 0, 2, 3).reshape(F, R * k, 2)
        order = np.argsort(-cat_v, axis=1, kind="stable")[:, :k]
        merged[layer] = TopK(layer, np.take_along_axis(cat_v, order, axis=1),
                             np.take_along_axis(cat_i, order, axis=1),
                             np.take_along_axis(cat_p, order[:, :, None], axis=1))
    return merged
