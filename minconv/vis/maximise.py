"""Activation maximisation: the image that most excites one hidden unit or feature map.

For a unit a = A_c[h, w] of layer L (or A_c for a fully connected layer, or the mean of
the whole map A_c with ``position="map"``), gradient ascent on the input (Erhan et al.,
2009; Yosinski et al., 2015):

    x* = argmax_x  a(x) - l2 * ||x||^2 - tv * R_TV(x)

with random jitter (shifts of up to ``jitter`` pixels) before each step and a Gaussian blur
of the image every ``blur_every`` steps. The units of a conv layer default to the centre
of their map, whose receptive field is the most central in the image.
"""
import numpy as np

from ..backend import get_array_module
from ._common import check_images, check_layer, check_net, like_net
from .blur import gaussian_blur
from .synthesis import _Adam, _clip, _grad, _jitter, _unjitter, total_variation


def _unit_seed(a, channels, position, layer):
    """dObjective/dA: 1 at each row's unit (or 1/(h w) over its whole map)."""
    xp = get_array_module(a)
    F = a.shape[1]
    if channels.min() < 0 or channels.max() >= F:
        bad = int(channels[(channels < 0) | (channels >= F)][0])
        raise ValueError(f"maximise: channel {bad} is out of range for layer {layer!r}, whose "
                         f"output {tuple(a.shape[1:])} has {F} channels")
    seed = xp.zeros_like(a)
    rows, ch = xp.arange(len(channels)), xp.asarray(channels)
    if a.ndim == 2:
        if position is not None:
            raise ValueError(f"maximise: layer {layer!r} is fully connected; leave position "
                             "as None")
        seed[rows, ch] = 1
        return seed
    H, W = a.shape[2:]
    if position == "map":
        seed[rows, ch] = 1.0 / (H * W)
        return seed
    h, w = (H // 2, W // 2) if position is None else position
    if not (0 <= h < H and 0 <= w < W):
        raise ValueError(f"maximise: position {(h, w)} is outside layer {layer!r}'s "
                         f"{H}x{W} maps")
    seed[rows, ch, h, w] = 1
    return seed


def maximise(net, layer, channel, shape, position=None, steps=200, lr=0.05, l2=1e-3, tv=0.0,
             tv_beta=2.0, jitter=1, blur_every=4, blur_sigma=0.5, clip=None, init=None,
             init_std=0.1, seed=0):
    """Images (M, C, H, W) that maximise ``channel`` (an int or M ints) of ``layer``.

    shape    : the input's (C, H, W)
    position : None (the map's centre unit), (h, w), or "map" (the map's mean)
    l2, tv   : weights of the L2 and total-variation penalties (tv_beta: its exponent)
    jitter   : random shift in pixels before each step; blur_every / blur_sigma: a Gaussian
               blur of the image every so many steps (0: never)
    clip     : (lo, hi) bounds of the pixels after each step
    """
    check_net(net, "maximise")
    check_layer(net, layer)
    channels = np.atleast_1d(np.asarray(channel, dtype=np.int64))
    shape = tuple(int(s) for s in shape)[-3:]
    if int(steps) < 1:
        raise ValueError(f"maximise: steps must be at least 1, got {steps}")
    rng = np.random.default_rng(seed)
    if init is None:
        x = like_net(rng.standard_normal((len(channels),) + shape) * init_std, net)
    else:
        x = like_net(check_images(init, "maximise"), net).copy()
    opt = _Adam(lr)
    for step in range(int(steps)):
        xj, off = _jitter(x, rng, jitter)
        _, g = _grad(net, xj, layer, lambda a: _unit_seed(a, channels, position, layer))
        g = _unjitter(g, off) - 2 * l2 * x
        if tv:
            g = g - tv * total_variation(x, tv_beta)[1]
        x = _clip(opt.step(x, -g), clip)                # Adam descends: give it -dL/dx
        if blur_every and (step + 1) % int(blur_every) == 0:
            x = gaussian_blur(x, blur_sigma)
    net.clear_cache()
    return x


def unit_activation(net, x, layer, channel, position=None):
    """The objective of :func:`maximise` for images x (one row per channel): (M,) NumPy."""
    from ._common import to_numpy
    channels = np.atleast_1d(np.asarray(channel, dtype=np.int64))
    a = net.forward(like_net(x, net), train=False, until=layer)
    seed = _unit_seed(a, channels, position, layer)
    value = (a * seed).reshape(len(a), -1).sum(axis=1)
    net.clear_cache()
    return to_numpy(value).astype(np.float64)
