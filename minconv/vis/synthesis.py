"""Images made by gradient steps on the input: class models, feature inversion, Deep Dream,
adversarial examples.

All four use the true gradient (rule "grad") of an objective defined on one layer:
a forward pass up to the layer, a seed dL/dA on its output, ``net.backward`` to the
pixels. The net's weights and their gradients are left untouched.

    class_model      max_x  S_k(x) - l2 * ||x||^2                (Simonyan et al.)
    invert_features  min_x  ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2
                            + l2 * ||x||^2 + tv * sum ((dx)^2 + (dy)^2)^(beta/2)
    deep_dream       max_x  1/2 ||phi(x)||^2                     (dL/dA = A)
    adversarial      max_x  log softmax(net(x))[target], in small normalised steps,
                     until the net says ``target``
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ..functional import softmax
from ._common import (backward_to_input, check_images, check_layer, check_net, like_net,
                      to_numpy)


def _grad(net, x, layer, seed_fn):
    """(A, dL/dx) for the seed ``seed_fn(A)`` = dL/dA on the output A of ``layer``."""
    a = net.forward(x, train=False, until=layer)
    seed = seed_fn(a)
    return a, backward_to_input(net, seed, rule="grad", start=layer)


class _Adam:
    """Adam on one array (Kingma & Ba), for the image being optimised."""

    def __init__(self, lr, beta1=0.9, beta2=0.99, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, beta1, beta2, eps, 0
        self.m = self.v = None

    def step(self, x, g):
        xp = get_array_module(x)
        if self.m is None:
            self.m, self.v = xp.zeros_like(x), xp.zeros_like(x)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        mhat = self.m / (1 - self.b1 ** self.t)
        vhat = self.v / (1 - self.b2 ** self.t)
        return x - self.lr * mhat / (xp.sqrt(vhat) + self.eps)


def total_variation(x, beta=2.0, eps=1e-8):
    """R = sum over pixels of ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2 + eps)^(beta/2)
    (differences past the border are 0) and dR/dx, for x (N, C, H, W)."""
    xp = get_array_module(x)
    gx = xp.zeros_like(x)
    gy = xp.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    d = gx * gx + gy * gy + eps
    r = (d ** (beta / 2)).sum()
    w = beta * d ** (beta / 2 - 1)                  # dR/dd * 2
    wx, wy = w * gx, w * gy
    grad = -(wx + wy)
    grad[..., :, 1:] += wx[..., :, :-1]
    grad[..., 1:, :] += wy[..., :-1, :]
    return float(r), grad


def _jitter(x, rng, amount):
    """Roll the image by a random offset of at most ``amount`` pixels; returns (x, offset)."""
    if amount <= 0:
        return x, (0, 0)
    oy, ox = (int(v) for v in rng.integers(-amount, amount + 1, 2))
    xp = get_array_module(x)
    return xp.roll(x, (oy, ox), axis=(2, 3)), (oy, ox)


def _unjitter(x, offset):
    xp = get_array_module(x)
    return xp.roll(x, (-offset[0], -offset[1]), axis=(2, 3)) if offset != (0, 0) else x


def _clip(x, clip):
    if clip is None:
        return x
    xp = get_array_module(x)
    return xp.clip(x, clip[0], clip[1])


def class_model(net, target, shape, steps=200, lr=0.1, l2=1e-3, tv=0.0, jitter=1, clip=None,
                init=None, init_std=0.1, seed=0, blur_every=0, blur_sigma=0.5):
    """Images that maximise class scores, one per entry of ``target`` (an int or a list):

        x*_k = argmax_x  S_k(x) - l2 * ||x||^2 - tv * R_TV(x)      (R_TV: total_variation)

    by Adam ascent from ``init`` (default: N(0, init_std^2) noise; an all-zero image
    would sit where every ReLU is off and get no gradient), all classes in one batch,
    with random jitter between steps, optional clipping to ``clip=(lo, hi)`` and a Gaussian
    blur of ``blur_sigma`` pixels every ``blur_every`` steps (0: none; :mod:`.blur`).
    Returns (len(target), C, H, W) (or (1, C, H, W) for an int).
    """
    check_net(net, "class_model")
    last = net.names[-1]
    targets = np.atleast_1d(np.asarray(target, dtype=np.int64))
    shape = tuple(int(s) for s in shape)[-3:]
    rng = np.random.default_rng(seed)
    if init is None:
        x = like_net(rng.standard_normal((len(targets),) + shape) * init_std, net)
    else:
        x = like_net(check_images(init, "class_model"), net).copy()
    opt = _Adam(lr)
    for step in range(int(steps)):
        xj, off = _jitter(x, rng, jitter)
        _, g = _grad(net, xj, last, lambda a: _class_seed(a, targets))
        g = _unjitter(g, off) - 2 * l2 * x
        if tv:
            g = g - tv * total_variation(x)[1]
        x = _clip(opt.step(x, -g), clip)                # Adam descends: give it -dL/dx
        if blur_every and (step + 1) % int(blur_every) == 0:
            from .blur import gaussian_blur
            x = gaussian_blur(x, blur_sigma)
    net.clear_cache()
    return x


def _class_seed(a, targets):
    """dS/dA: one-hot rows, row i at class targets[i]."""
    xp = get_array_module(a)
    K = a.shape[1]
    if targets.min() < 0 or targets.max() >= K:
        raise ValueError(f"class {int(targets[(targets < 0) | (targets >= K)][0])} is out of "
                         f"range for an output with {K} classes")
    seed = xp.zeros_like(a)
    seed[xp.arange(len(targets)), xp.asarray(targets)] = 1
    return seed


def invert_features(net, x, layer, steps=200, lr=0.05, l2=1e-4, tv=1e-3, tv_beta=2.0,
                    clip=None, init=None, seed=0):
    """Reconstruct an image (1, C, H, W) from the features phi_layer(x) of one image x
    (1, C, H, W) by minimising the loss in the module docstring with Adam."""
    check_net(net, "invert_features")
    check_layer(net, layer)
    x0 = like_net(check_images(x, "invert_features"), net)[:1]
    target = net.forward(x0, train=False, until=layer).copy()
    norm = float((target * target).sum()) or 1.0
    xp = get_array_module(x0)
    rng = np.random.default_rng(seed)
    if init is None:
        z = xp.asarray(rng.standard_normal(x0.shape) * 0.01 * float(x0.std() or 1.0))
        z = z.astype(x0.dtype)
    else:
        z = like_net(init, net).copy()
    opt = _Adam(lr)
    for _ in range(int(steps)):
        a, g = _grad(net, z, layer, lambda a: 2 * (a - target) / norm)
        _, g_tv = total_variation(z, tv_beta)
        z = _clip(opt.step(z, g + 2 * l2 * z + tv * g_tv), clip)
    net.clear_cache()
    return z


def deep_dream(net, x, layer, steps=20, lr=0.02, jitter=1, channel=None, clip=None, seed=0):
    """Deep Dream: ascend 1/2 ||A||^2 of ``layer`` (or of one ``channel`` of it) from the
    images x, in steps of ``lr`` * (data scale) / mean |gradient|. Returns the new images."""
    check_net(net, "deep_dream")
    check_layer(net, layer)
    x = like_net(check_images(x, "deep_dream"), net).copy()
    xp = get_array_module(x)
    scale = float(x.std()) or 1.0
    rng = np.random.default_rng(seed)

    def seed_fn(a):
        if channel is None:
            return a.copy()
        s = xp.zeros_like(a)
        s[:, channel] = a[:, channel]
        return s

    for _ in range(int(steps)):
        xj, off = _jitter(x, rng, jitter)
        _, g = _grad(net, xj, layer, seed_fn)
        g = _unjitter(g, off)
        mean = abs(g).mean(axis=(1, 2, 3), keepdims=True) + 1e-12
        x = _clip(x + (lr * scale) * g / mean, clip)
    net.clear_cache()
    return x


@dataclass
class Adversarial:
    """image (1, C, H, W); original and new label with their probabilities; the number of
    steps taken; the largest pixel change max |x_adv - x| and the relative change
    ||x_adv - x||_2 / ||x||_2; whether the net now says ``target``."""
    image: np.ndarray
    original_label: int
    original_prob: float
    label: int
    prob: float
    steps: int
    max_change: float
    relative_change: float
    success: bool


def adversarial(net, x, target, steps=300, lr=None, margin=1, max_norm=None):
    """A targeted adversarial example from the image x (1, C, H, W):

        x <- x + lr * g / ||g||_2,   g = d log softmax(net(x))[target] / dx

    until the net predicts ``target`` (then ``margin`` more steps, so that the label
    does not sit on the decision boundary) or ``steps`` run out. ``lr`` defaults to
    0.5% of ||x||_2; ``max_norm`` caps ||x_adv - x||_2."""
    check_net(net, "adversarial")
    x0 = like_net(check_images(x, "adversarial"), net)[:1]
    xp = get_array_module(x0)
    last = net.names[-1]
    p0 = to_numpy(softmax(net.forward(x0, train=False)))[0]
    if not 0 <= int(target) < p0.shape[0]:
        raise ValueError(f"adversarial: target {target} is out of range for {p0.shape[0]} "
                         "classes")
    target = int(target)
    size = float(xp.sqrt((x0 * x0).sum())) or 1.0
    lr = 0.005 * size if lr is None else float(lr)

    def seed_fn(a):  # d log softmax(a)[target] / da = onehot - softmax(a)
        s = -softmax(a)
        s[:, target] += 1
        return s

    x, taken, hits = x0.copy(), 0, 0
    while taken < int(steps):
        a, g = _grad(net, x, last, seed_fn)
        if int(to_numpy(a.argmax(axis=1))[0]) == target:
            hits += 1
            if hits > margin:
                break
        x = x + (lr / (float(xp.sqrt((g * g).sum())) + 1e-12)) * g
        taken += 1
        if max_norm is not None:
            delta = x - x0
            dn = float(xp.sqrt((delta * delta).sum()))
            if dn > max_norm:
                x = x0 + delta * (max_norm / dn)
    p = to_numpy(softmax(net.forward(x, train=False)))[0]
    net.clear_cache()
    delta = to_numpy(x - x0)
    return Adversarial(to_numpy(x), int(p0.argmax()), float(p0.max()), int(p.argmax()),
                       float(p[target]), taken, float(np.abs(delta).max()),
                       float(np.sqrt((delta ** 2).sum())) / size, int(p.argmax()) == target)


__all__ = ["Adversarial", "adversarial", "class_model", "deep_dream", "invert_features",
           "total_variation"]
