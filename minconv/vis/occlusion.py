"""Occlusion sensitivity (the paper's Fig. 7).

A grey square of ``size`` pixels slides over the image with ``stride``; at each
position (top, left) the occluded copy goes through the net and we record

    feature[i, j]   total activation  sum_{h,w} A_f(x_ij)[h, w]  of the feature map f
                    of ``layer`` that is strongest on the unoccluded image
    prob[i, j]      softmax(net(x_ij))[label], the probability of the correct class
    top_class[i, j] argmax softmax(net(x_ij)), the most probable class

where x_ij is the image with rows top..top+size-1 and columns left..left+size-1 set
to ``fill`` (the dataset mean: 0 for normalised inputs). Copies go through the net
in batches; the square's positions are ``range(0, H - size + 1, stride)`` per axis.
"""
from dataclasses import dataclass, field

import numpy as np

from ..backend import get_array_module
from ..functional import softmax
from ..functional._checks import pair
from ._common import (check_layer, check_net, chunks, default_feature_layer, like_net,
                      progress, to_numpy)
from .topk import walk


@dataclass
class OcclusionResult:
    """Maps over the occluder positions, all (len(tops), len(lefts)).

    ``baseline`` holds the unoccluded values: feature, prob, top_class, probs (K,).
    """
    feature: np.ndarray
    prob: np.ndarray
    top_class: np.ndarray
    top_prob: np.ndarray
    tops: np.ndarray
    lefts: np.ndarray
    size: tuple
    stride: tuple
    layer: str
    channel: int
    label: int
    fill: object
    baseline: dict = field(default_factory=dict)
    projection: np.ndarray = None

    def extent(self):
        """(left, right, bottom, top) in pixel coordinates for ``imshow`` of the maps:
        each cell is centred on the centre of its occluder."""
        sh, sw = self.size
        th, tw = self.stride
        cy0 = self.tops[0] + (sh - 1) / 2
        cy1 = self.tops[-1] + (sh - 1) / 2
        cx0 = self.lefts[0] + (sw - 1) / 2
        cx1 = self.lefts[-1] + (sw - 1) / 2
        return (cx0 - tw / 2, cx1 + tw / 2, cy1 + th / 2, cy0 - th / 2)


def occluder_positions(shape, size, stride):
    """Top and left coordinates of the square for an image (..., H, W)."""
    H, W = shape[-2:]
    sh, sw = pair(size, "occlusion: size")
    th, tw = pair(stride, "occlusion: stride")
    if sh < 1 or sw < 1:
        raise ValueError(f"occlusion: size must be >= 1, got {(sh, sw)}")
    if th < 1 or tw < 1:
        raise ValueError(f"occlusion: stride must be >= 1, got {(th, tw)}")
    if sh > H or sw > W:
        raise ValueError(f"occlusion: the occluder {sh}x{sw} is larger than the {H}x{W} image")
    return np.arange(0, H - sh + 1, th), np.arange(0, W - sw + 1, tw)


def _fill_value(image, fill):
    if fill is None:  # per-channel mean of the image itself
        return to_numpy(image.mean(axis=(1, 2)))
    fill = np.asarray(to_numpy(fill) if hasattr(fill, "shape") else fill, dtype=np.float64)
    if fill.ndim > 1 or (fill.ndim == 1 and fill.shape[0] not in (1, image.shape[0])):
        raise ValueError(f"occlusion: fill must be a number or one value per channel "
                         f"({image.shape[0]}), got shape {fill.shape}")
    return fill


def _run(net, x, layer, channel):
    """(total activation of ``channel`` of ``layer``, softmax probs) for a batch, and the
    layer's output when channel is None."""
    feature = kept = None
    for name, out in walk(net, x, net.names[-1], [layer]):
        if name == layer:
            if channel is None:
                kept = out.copy()
            else:
                feature = out[:, channel].reshape(len(x), -1).sum(axis=1)
    return feature, softmax(out), kept


def occlusion(net, image, label=None, size=8, stride=2, fill=None, layer=None, channel=None,
              batch_size=256, project=True, show_progress=False, comm=None):
    """Occlusion maps of one image; see the module docstring.

    Parameters
    ----------
    image : (C, H, W) or (1, C, H, W), as the net takes it (normalised)
    label : the correct class (default: the class predicted on the unoccluded image)
    size, stride : int or (h, w) pair, in pixels
    fill : grey value, scalar or per channel (default: the image's channel means;
        pass the dataset mean — 0 for standardised data)
    layer : whose strongest feature map is tracked (default: the rectified last conv)
    channel : that feature map (default: the one with the largest activation)
    project : also project the strongest unit of that map to pixels (deconvnet)
    comm : a :mod:`minconv.distributed` communicator: each rank runs a contiguous run of
        the batches of occluded copies; every rank gets the whole maps
    """
    check_net(net, "occlusion")
    image = like_net(image, net)
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"occlusion: expected one image, got shape {tuple(image.shape)}")
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f"occlusion: image must be (C, H, W), got shape {tuple(image.shape)}")
    layer = default_feature_layer(net) if layer is None else check_layer(net, layer)
    size, stride = pair(size, "occlusion: size"), pair(stride, "occlusion: stride")
    tops, lefts = occluder_positions(image.shape, size, stride)
    fill = _fill_value(image, fill)

    _, probs0, a0 = _run(net, image[None], layer, None)
    if a0.ndim != 4:
        raise ValueError(f"occlusion: layer {layer!r} has output {tuple(a0.shape)}; choose a "
                         "layer with feature maps (N, F, H, W)")
    F = a0.shape[1]
    if channel is None:
        channel = int(to_numpy(a0[0].reshape(F, -1).max(axis=1)).argmax())
    elif not 0 <= int(channel) < F:
        raise ValueError(f"occlusion: feature map {channel} is out of range for layer "
                         f"{layer!r} with {F} maps (0..{F - 1})")
    channel = int(channel)
    probs0 = to_numpy(probs0[0])
    K = probs0.shape[0]
    label = int(probs0.argmax()) if label is None else int(label)
    if not 0 <= label < K:
        raise ValueError(f"occlusion: label {label} is out of range for {K} classes")

    n = len(tops) * len(lefts)
    feature = np.zeros(n)
    prob = np.zeros(n)
    top_class = np.zeros(n, dtype=np.int64)
    top_prob = np.zeros(n)
    all_t, all_l = np.repeat(tops, len(lefts)), np.tile(lefts, len(tops))
    parts = chunks(n, batch_size)
    if comm is not None and comm.size > 1:  # this rank's batches; the others' stay zero
        parts = parts[comm.share(len(parts))]
        show_progress = show_progress and comm.is_root
    for part in progress(parts, len(parts), "occlusion", show_progress):
        x = occluded_copies(image, all_t[part], all_l[part], size, fill)
        f, p, _ = _run(net, x, layer, channel)
        p = to_numpy(p)
        feature[part] = to_numpy(f)
        prob[part] = p[:, label]
        top_class[part] = p.argmax(axis=1)
        top_prob[part] = p.max(axis=1)
    net.clear_cache()
    if comm is not None and comm.size > 1:  # every position was computed by one rank
        for a in (feature, prob, top_class, top_prob):
            comm.allreduce(a, "the occlusion maps")

    shape = (len(tops), len(lefts))
    baseline = dict(feature=float(to_numpy(a0[0, channel]).sum()), prob=float(probs0[label]),
                    top_class=int(probs0.argmax()), probs=probs0)
    projection = None
    if project:
        from .deconvnet import DeconvNet
        projection = to_numpy(DeconvNet(net).project(image[None], layer, channel))[0]
    return OcclusionResult(feature.reshape(shape), prob.reshape(shape),
                           top_class.reshape(shape), top_prob.reshape(shape), tops, lefts,
                           size, stride, layer, channel, label, fill, baseline, projection)


def occluded_copies(image, tops, lefts, size, fill):
    """Copies of ``image`` (C, H, W) with the ``size`` square at each paired
    (tops[i], lefts[i]) set to ``fill``: (len(tops), C, H, W)."""
    xp = get_array_module(image)
    C, H, W = image.shape
    sh, sw = pair(size, "occlusion: size")
    t = xp.asarray(tops)[:, None]                                       # (n, 1)
    l = xp.asarray(lefts)[:, None]
    rows, cols = xp.arange(H)[None, :], xp.arange(W)[None, :]
    mask = (((rows >= t) & (rows < t + sh))[:, None, :, None]
            & ((cols >= l) & (cols < l + sw))[:, None, None, :])       # (n, 1, H, W)
    grey = xp.asarray(fill, dtype=image.dtype).reshape(1, -1, 1, 1)   # one value or (C,)
    return xp.where(mask, grey, image[None])
