"""Gaussian blur of image batches, the regulariser of activation maximisation (Yosinski et
al., 2015): blurring every few steps damps the high frequencies that gradient ascent alone
piles up.

    (G_sigma * x)[i, j] = sum_(u, v) g(u) g(v) x[i - u, j - v],
    g(u) = exp(-u^2 / (2 sigma^2)) / sum_u' exp(-u'^2 / (2 sigma^2)),  |u| <= ceil(3 sigma)

separable (rows, then columns), with the border replicated, on the array's own device.
"""
import math

import numpy as np

from ..backend import get_array_module


def gaussian_kernel(sigma):
    """The normalised 1-D taps g(u), u = -r..r with r = ceil(3 sigma), float64."""
    if sigma <= 0:
        raise ValueError(f"gaussian_blur: sigma must be positive, got {sigma}")
    r = max(1, int(math.ceil(3 * sigma)))
    u = np.arange(-r, r + 1)
    g = np.exp(-u * u / (2.0 * sigma * sigma))
    return g / g.sum()


def gaussian_blur(x, sigma):
    """x (N, C, H, W) blurred by a Gaussian of standard deviation ``sigma`` pixels."""
    if x.ndim != 4:
        raise ValueError(f"gaussian_blur: expected (N, C, H, W), got shape {tuple(x.shape)}")
    xp = get_array_module(x)
    g = gaussian_kernel(sigma)
    r = len(g) // 2
    for axis in (2, 3):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = xp.pad(x, pad, mode="edge")
        n = x.shape[axis]
        out = xp.zeros_like(x)
        for t, weight in enumerate(g):
            window = [slice(None)] * 4
            window[axis] = slice(t, t + n)
            out += x.dtype.type(weight) * padded[tuple(window)]
        x = out
    return x
