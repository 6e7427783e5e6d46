"""ReLU, its three backward rules, and dropout.

The deconvnet differs from backpropagation only at the ReLU (docs/architecture.md):

    rule      dx
    grad      dy * (x > 0)              the true gradient
    deconv    relu(dy)                  Zeiler & Fergus's relu*: the input's sign is ignored
    guided    relu(dy) * (x > 0)        guided backpropagation: both
"""
from .._kernels import kernels_for
from ..backend import get_array_module
from ._checks import check_array, check_shape

RULES = ("grad", "deconv", "guided")


def check_rule(rule):
    if rule not in RULES:
        raise ValueError(f"unknown backward rule {rule!r}: expected one of {RULES}")


def relu(x, out=None):
    """max(x, 0), elementwise; ``out=x`` makes it in place."""
    check_array(x, "relu", "input")
    return kernels_for(x).relu_forward(x, out=out)


def relu_backward(dy, x, rule="grad"):
    """dx under ``rule`` (see the module docstring). ``x`` may be relu's input or output:
    both are positive at exactly the same places."""
    check_rule(rule)
    check_array(dy, "relu_backward", "dy")
    check_shape(dy, x.shape, "relu_backward", "dy")
    xp = get_array_module(dy)
    if rule == "deconv":
        return xp.maximum(dy, 0)
    if rule == "guided":
        return xp.maximum(dy, 0) * (x > 0)
    return kernels_for(dy).relu_backward(dy, x)


def dropout(x, p=0.5, rng=None, train=True):
    """Inverted dropout: ``(y, mask)`` with each unit zeroed with probability p and the
    survivors scaled by 1/(1-p), so nothing changes at test time (mask None there)."""
    check_array(x, "dropout", "input")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not train or p == 0.0:
        return x, None
    xp = get_array_module(x)
    if rng is None:
        rng = xp.random.default_rng()
    keep = rng.random(x.shape, dtype=x.dtype) >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dy, mask):
    """dx = dy * mask (the identity when there was no mask)."""
    if mask is None:
        return dy
    check_shape(dy, mask.shape, "dropout_backward", "dy")  # no silent broadcast
    return dy * mask
