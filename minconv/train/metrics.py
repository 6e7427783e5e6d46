"""Evaluation: loss, top-1 and top-5 error, with softmax averaging over views.

A batch ``x`` of shape (B, V, C, H, W) holds V views of each image (the
paper's 10 crops, or an image and its mirror); the class probabilities are
averaged over the views, p = mean_v softmax(f(x_v)), and the loss is the
cross-entropy of that average, -log p[y].
"""
import numpy as np

from .. import functional as F
from ..backend import get_array_module, to_device


def topk_correct(probs, labels, k):
    """Number of rows of probs (N, K) whose label is among the k largest entries."""
    xp = get_array_module(probs)
    k = min(k, probs.shape[1])
    top = xp.argpartition(-probs, k - 1, axis=1)[:, :k]            # (N, k), unordered
    return int((top == xp.asarray(labels)[:, None]).any(axis=1).sum())


def predict_proba(net, x):
    """Softmax outputs for x (B, C, H, W), or their mean over views for x (B, V, C, H, W)."""
    if x.ndim == 4:
        return F.softmax(net.forward(x, train=False))
    xp = get_array_module(x)
    total = None
    for v in range(x.shape[1]):  # one view at a time: a 10-crop batch is 10x the memory
        p = F.softmax(net.forward(xp.ascontiguousarray(x[:, v]), train=False))
        total = p if total is None else total + p
    return total / x.shape[1]


def evaluate(net, loader, device=None, max_batches=None):
    """Mean loss, top-1 and top-5 error (fractions) of ``net`` over ``loader``.

    Returns {"loss", "top1_error", "top5_error", "count"}; the net's forward caches
    are cleared afterwards.
    """
    device = device or net.device or "cpu"
    loss_sum, correct1, correct5, count = 0.0, 0, 0, 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = to_device(x, device), to_device(y, device)
        probs = predict_proba(net, x)
        xp = get_array_module(probs)
        _check_batch_labels(y, probs.shape[1])
        picked = probs[xp.arange(len(y)), y]
        loss_sum += float(-xp.log(xp.maximum(picked, np.finfo(probs.dtype).tiny)).sum())
        correct1 += topk_correct(probs, y, 1)
        correct5 += topk_correct(probs, y, 5)
        count += len(y)
    net.clear_cache()
    if count == 0:
        raise ValueError("evaluate: the loader produced no examples")
    return {"loss": loss_sum / count, "top1_error": 1.0 - correct1 / count,
            "top5_error": 1.0 - correct5 / count, "count": count}


def _check_batch_labels(y, num_classes):
    """Integer labels in [0, num_classes): -1 would score the last class, silently."""
    if y.dtype.kind not in "iu":
        raise ValueError(f"evaluate: labels must be integer class indices, got {y.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"evaluate: labels must lie in [0, {num_classes}) for a net with "
                         f"{num_classes} outputs, got values in [{int(y.min())}, {int(y.max())}]")
