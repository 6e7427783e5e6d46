"""Attribution maps as pictures: a colour map for each map and an overlay on its image.

A signed map (guided backprop, Integrated Gradients, ...) is shown with a diverging map,
blue < 0 < red, scaled by its largest magnitude so that zero stays white; an unsigned one
(saliency, Grad-CAM) from black to yellow, scaled to its maximum. An overlay blends the
coloured map over the grey-scale image with weight ``alpha`` where the map is strong.
"""
import numpy as np

from ._common import to_numpy


def to_map(a):
    """(H, W) from an attribution (H, W) or (C, H, W): the sum over channels."""
    a = np.asarray(to_numpy(a), np.float64)
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise ValueError(f"heatmap: expected an (H, W) or (C, H, W) map, got shape {a.shape}")
    return a


def heatmap(a, signed=None):
    """An RGB uint8 (3, H, W) picture of the map; ``signed`` defaults to: it has negatives."""
    from matplotlib import colormaps
    a = to_map(a)
    if signed is None:
        signed = bool((a < 0).any())
    peak = np.abs(a).max()
    scale = peak if peak > 0 else 1.0
    if signed:
        rgba = colormaps["bwr"](0.5 + 0.5 * a / scale)
    else:
        rgba = colormaps["inferno"](np.clip(a, 0, None) / scale)
    return (rgba[..., :3] * 255).round().astype(np.uint8).transpose(2, 0, 1)


def overlay(image, a, alpha=0.6):
    """The map ``a`` over ``image`` (C, H, W) (any range; C = 1 or 3): RGB uint8 (3, H, W).

    Each pixel mixes the grey image and the map's colour by alpha * |a| / max |a|.
    """
    from .render import stretch
    img = np.asarray(to_numpy(image), np.float64)
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"overlay: image must be (C, H, W) with C = 1 or 3, got {img.shape}")
    a = to_map(a)
    if a.shape != img.shape[1:]:
        raise ValueError(f"overlay: map {a.shape} and image {img.shape[1:]} differ in size")
    grey = stretch(img).astype(np.float64).mean(axis=0, keepdims=True)          # (1, H, W)
    peak = np.abs(a).max()
    weight = alpha * (np.abs(a) / peak if peak > 0 else np.zeros_like(a))[None]  # (1, H, W)
    return ((1 - weight) * grey + weight * heatmap(a)).round().astype(np.uint8)
