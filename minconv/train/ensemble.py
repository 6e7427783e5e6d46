"""Ensembles as in the paper's Table 2: the class probabilities of several nets averaged,

    p(y | x) = 1/M sum_m softmax(f_m(x)),

scored beside each net on its own in one pass over the data.
"""
import numpy as np

from ..backend import get_array_module, to_device
from .metrics import _check_batch_labels, predict_proba, topk_correct


def evaluate_ensemble(nets, loader, device=None):
    """Loss, top-1 and top-5 error of each net and of their averaged softmax.

    Returns {"single": [result per net], "ensemble": result}, each result a dict with
    "loss", "top1_error", "top5_error", "count" as :func:`minconv.train.evaluate` gives.
    """
    nets = list(nets)
    if not nets:
        raise ValueError("evaluate_ensemble: no nets given")
    device = device or nets[0].device or "cpu"
    sums = [np.zeros(3) for _ in range(len(nets) + 1)]   # loss, top-1 and top-5 correct
    count = 0
    for x, y in loader:
        x, y = to_device(x, device), to_device(y, device)
        probs = [predict_proba(net, x) for net in nets]
        if len({p.shape for p in probs}) > 1:
            raise ValueError("evaluate_ensemble: the nets give outputs of different shapes "
                             f"{[tuple(p.shape) for p in probs]}")
        probs.append(sum(probs) / len(nets))
        xp = get_array_module(probs[0])
        _check_batch_labels(y, probs[0].shape[1])
        for total, p in zip(sums, probs):
            picked = p[xp.arange(len(y)), y]
            total += (float(-xp.log(xp.maximum(picked, np.finfo(p.dtype).tiny)).sum()),
                      topk_correct(p, y, 1), topk_correct(p, y, 5))
        count += len(y)
    for net in nets:
        net.clear_cache()
    if count == 0:
        raise ValueError("evaluate_ensemble: the loader produced no examples")
    results = [{"loss": s[0] / count, "top1_error": 1 - s[1] / count,
                "top5_error": 1 - s[2] / count, "count": count} for s in sums]
    return {"single": results[:-1], "ensemble": results[-1]}


def print_ensemble(paths, checkpoints, loader, split, tta, as_json=False, device=None):
    """``minconv evaluate --checkpoint a.npz b.npz ...``: each checkpoint and the ensemble,
    side by side. The data and views are those of the first checkpoint's run; the others
    must have been trained on data prepared the same way."""
    first = checkpoints[0].extra.get("data", {})
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        spec = checkpoint.extra.get("data", {})
        keys = ("kind", "mean", "std", "classes", "size", "crop")
        if any(spec.get(k) != first.get(k) for k in keys):
            raise ValueError(f"{path}: its data preparation {dict((k, spec.get(k)) for k in keys)}"
                             f" differs from {paths[0]}'s {dict((k, first.get(k)) for k in keys)}"
                             "; an ensemble needs nets that read the same inputs")
    result = evaluate_ensemble([c.net for c in checkpoints], loader, device=device)
    print_ensemble_table(paths, result, split, tta, as_json)
    return result


def print_ensemble_table(paths, result, split, tta, as_json=False):
    """:func:`evaluate_ensemble`'s result as a Markdown table (or JSON), a row per net."""
    from .._cli_args import strict_json
    if as_json:
        rows = [dict(r, checkpoint=p) for p, r in zip(paths, result["single"])]
        print(strict_json({"single": rows, "ensemble": result["ensemble"], "split": split,
                           "tta": tta}))
        return
    count = result["ensemble"]["count"]
    print(f"{len(paths)} checkpoints on {count} {split} images, views: {tta}")
    print("| model | loss | top-1 error | top-5 error |\n|---|---|---|---|")
    for path, r in zip(paths, result["single"]):
        print(f"| {path} | {r['loss']:.4f} | {r['top1_error']:.4f} | {r['top5_error']:.4f} |")
    r = result["ensemble"]
    print(f"| ensemble of {len(paths)} (mean softmax) | {r['loss']:.4f} | "
          f"{r['top1_error']:.4f} | {r['top5_error']:.4f} |")
