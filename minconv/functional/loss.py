"""Softmax and the cross-entropy loss, computed stably with log-sum-exp."""
from ..backend import get_array_module
from ._checks import check_array


def log_softmax(logits):
    """log p = z - max z - log sum exp(z - max z), row by row: (N, K) -> (N, K)."""
    xp = get_array_module(logits)
    if logits.shape[0] == 0:  # max over no rows is fine, but keep the shapes exact
        return logits.copy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    """Row-wise softmax, (N, K) -> (N, K), never overflowing."""
    xp = get_array_module(logits)
    return xp.exp(log_softmax(logits))


def _check_labels(op, logits, labels):
    check_array(logits, op, "logits", 2, "(N, classes)")
    xp = get_array_module(logits)
    labels = xp.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{op}: labels must have shape ({logits.shape[0]},) to match logits "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu" and not (labels.size == 0 and labels.dtype.kind == "f"):
        raise ValueError(f"{op}: labels must be integer class indices, got {labels.dtype}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(f"{op}: labels must lie in [0, {logits.shape[1]}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy over the batch, and the softmax probabilities.

    logits : (N, K), labels : (N,) integer class indices
    L = -1/N sum_n log softmax(z_n)[y_n]; returns ``(L, probs)``.
    """
    labels = _check_labels("softmax_cross_entropy", logits, labels)
    xp = get_array_module(logits)
    logp = log_softmax(logits)
    N = logits.shape[0]
    if N == 0:  # an empty batch: no loss to average, nothing to learn from
        return logits.dtype.type(0), xp.exp(logp)
    loss = -logp[xp.arange(N), labels].mean()
    return loss, xp.exp(logp)


def softmax_cross_entropy_backward(probs, labels):
    """dL/dz = (softmax(z) - onehot(y)) / N: (N, K)."""
    labels = _check_labels("softmax_cross_entropy_backward", probs, labels)
    xp = get_array_module(probs)
    N = probs.shape[0]
    if N == 0:
        return probs.copy()
    dz = probs.copy()
    dz[xp.arange(N), xp.asarray(labels)] -= 1
    dz /= N
    return dz
