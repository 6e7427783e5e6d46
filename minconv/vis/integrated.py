"""Path attributions: Integrated Gradients (Sundararajan et al., 2017) and Input x Gradient.

For a class score S, an image x and a baseline x' (black by default):

    IG(x)_i = (x_i - x'_i) * integral_0^1  d S / d x_i (x' + a (x - x'))  da
            ~ (x_i - x'_i) * sum_s  w_s  d S / d x_i (x' + a_s (x - x'))

The sum is a quadrature rule over n_steps points a_s with weights w_s, the same as Captum's
``IntegratedGradients``: "riemann_left", "riemann_right", "riemann_middle",
"riemann_trapezoid" and "gausslegendre" (Gauss-Legendre nodes mapped to [0, 1]). The
trapezoid rule is Captum's: n points from 0 to 1 but weights 1/n (halved at the ends), which
sum to (n - 1)/n, so it falls short of the integral by about 1/n of it. IG is
*complete*: sum_i IG(x)_i = S(x) - S(x') up to the quadrature's error, which
:func:`integrated_gradients` reports with ``return_delta=True``.

Input x Gradient is x * d S / d x, the one-point version with a zero baseline.
"""
import numpy as np

from ..backend import get_array_module
from ._common import check_images, check_net, like_net, to_numpy
from .saliency import input_gradient, predict

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
           "gausslegendre")


def quadrature(n_steps, method="gausslegendre"):
    """Points a_s in [0, 1] and weights w_s (n_steps each, float64) of ``method``."""
    if method not in METHODS:
        raise ValueError(f"integrated_gradients: method must be one of {', '.join(METHODS)}, "
                         f"got {method!r}")
    n = int(n_steps)
    least = 1 if method == "gausslegendre" else 2
    if n < least:
        raise ValueError(f"integrated_gradients: n_steps must be at least {least} for "
                         f"{method}, got {n_steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + nodes), 0.5 * weights
    weights = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return np.linspace(0, 1, n), weights
    start = {"riemann_left": 0.0, "riemann_middle": 0.5 / n, "riemann_right": 1.0 / n}[method]
    return np.linspace(start, start + 1 - 1.0 / n, n), weights


def _baseline(op, x, baseline):
    xp = get_array_module(x)
    if baseline is None:
        return xp.zeros_like(x)
    if np.isscalar(baseline):
        return xp.full_like(x, baseline)
    b = xp.asarray(baseline, dtype=x.dtype)
    if b.shape == x.shape[1:]:
        b = xp.broadcast_to(b, x.shape)
    if b.shape != x.shape:
        raise ValueError(f"{op}: baseline of shape {tuple(b.shape)} does not match the images "
                         f"{tuple(x.shape)} (give one per image, one for all, or a number)")
    return b


def integrated_gradients(net, x, target=None, baseline=None, n_steps=50,
                         method="gausslegendre", batch_size=64, return_delta=False):
    """Integrated Gradients of the class ``target`` (default: the predicted class at x).

    x        : (N, C, H, W); baseline: None (zeros), a number, (C, H, W) or (N, C, H, W)
    Returns (N, C, H, W), and with ``return_delta`` also the completeness gap (N,) as NumPy:
    sum IG - (S(x) - S(x')).
    """
    op = "integrated_gradients"
    check_net(net, op)
    x = like_net(check_images(x, op), net)
    alphas, weights = quadrature(n_steps, method)
    base = _baseline(op, x, baseline)
    t = predict(net, x).argmax(axis=1) if target is None else _as_targets(op, target, len(x))
    xp = get_array_module(x)
    total = xp.zeros_like(x)
    diff = x - base
    # all n_steps points of one image go down together, several images per pass
    per_pass = max(1, int(batch_size) // len(alphas))
    a = xp.asarray(alphas, dtype=x.dtype)[:, None, None, None]
    w = xp.asarray(weights, dtype=x.dtype)[:, None, None, None]
    for i in range(0, len(x), per_pass):
        rows = slice(i, min(i + per_pass, len(x)))
        path = base[rows][None] + a[:, None] * diff[rows][None]        # (S, n, C, H, W)
        S, n = path.shape[:2]
        g = input_gradient(net, path.reshape((S * n,) + x.shape[1:]),
                           np.tile(t[rows], S)).reshape(path.shape)
        total[rows] = (w[:, None] * g).sum(axis=0)
    attributions = diff * total
    if not return_delta:
        return attributions
    scores = _scores(net, x, t) - _scores(net, base, t)
    delta = to_numpy(attributions.reshape(len(x), -1).sum(axis=1)).astype(np.float64) - scores
    return attributions, delta


def input_x_gradient(net, x, target=None):
    """x * d S / d x: (N, C, H, W) (Captum's ``InputXGradient``)."""
    x = like_net(check_images(x, "input_x_gradient"), net)
    return x * input_gradient(net, x, target)


def _as_targets(op, target, n):
    t = np.asarray(to_numpy(target) if hasattr(target, "shape") else target)
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,):
        raise ValueError(f"{op}: target must be an int or {n} ints, got shape {t.shape}")
    return t.astype(np.int64)


def _scores(net, x, t):
    """The logits S_t(x) (N,) in float64."""
    logits = to_numpy(net.forward(x, train=False)).astype(np.float64)
    net.clear_cache()
    return logits[np.arange(len(t)), t]
