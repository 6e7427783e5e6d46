"""Filters and the evolution of features during training (the paper's Figs. 4 and 6).

Fig. 6 shows the first-layer filters; Fig. 4 shows, for a few feature maps of each
layer, the strongest activation over a set of images, projected to pixel space
with the deconvnet, at a series of epochs side by side. Here a "snapshot" is a
trained net or the path of a checkpoint (rebuilt by
:func:`minconv.train.load_checkpoint`).
"""
from dataclasses import dataclass

import numpy as np

from ._common import check_layer, check_net, conv_layer_names, progress, to_numpy
from .receptive import receptive_field
from .topk import project_top_k, top_k


def first_filters(net, layer=None):
    """The weights (F, C, kh, kw) of ``layer`` (default: the first Conv2D) as NumPy."""
    check_net(net, "first_filters")
    if layer is None:
        convs = conv_layer_names(net)
        if not convs:
            raise ValueError("first_filters: the net has no Conv2D layer")
        layer = convs[0]
    check_layer(net, layer)
    params = net[layer].params
    if "W" not in params or np.ndim(params["W"]) != 4:
        raise ValueError(f"first_filters: layer {layer!r} has no 4-D weight")
    return to_numpy(params["W"])


def _load(snapshot):
    """(net, label) from a net or a checkpoint path."""
    if hasattr(snapshot, "forward"):
        return snapshot, None
    from ..train import load_checkpoint
    checkpoint = load_checkpoint(snapshot)
    return checkpoint.net, checkpoint.epoch


@dataclass
class Evolution:
    """crops[s][m]: the projection (C, h, w) of map ``maps[m]``'s strongest activation
    at snapshot s, cropped to the receptive field; ``values[s, m]`` its activation."""
    layer: str
    maps: np.ndarray
    labels: list
    crops: list
    values: np.ndarray
    images: np.ndarray


def feature_evolution(snapshots, images, layer, maps=None, labels=None, preprocess=None,
                      rule="deconv", batch_size=256, show_progress=False):
    """For each snapshot, the strongest activation of each chosen feature map of
    ``layer`` over ``images`` (N, C, H, W), projected down and cropped.

    labels : one caption per snapshot (default: the checkpoint's epoch, or its index).
    """
    crops, values, which, names = [], [], [], []
    sample = np.asarray(images[0])
    for s, snapshot in enumerate(progress(snapshots, len(snapshots), "snapshots",
                                          show_progress)):
        net, epoch = _load(snapshot)
        check_layer(net, layer)
        result = top_k(net, images, [layer], k=1, batch_size=batch_size, preprocess=preprocess,
                       show_progress=False)[layer]
        chosen = np.arange(len(result)) if maps is None else np.asarray(maps, dtype=np.int64)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= len(result)):
            raise ValueError(f"feature_evolution: feature maps {chosen.tolist()} out of range "
                             f"for layer {layer!r} with {len(result)} maps")
        proj = project_top_k(net, images, result, rule=rule, preprocess=preprocess,
                             batch_size=batch_size, maps=chosen)         # (m, 1, C, H, W)
        field = receptive_field(net, layer, sample.shape)
        row = []
        for m, f in enumerate(chosen):
            pos = tuple(result.positions[f, 0])
            pos = None if pos[0] < 0 else pos
            row.append(field.crop(proj[m, 0], pos, pad=True) if field.size else proj[m, 0])
        crops.append(row)
        values.append(result.values[chosen, 0])
        which.append(result.images[chosen, 0])
        names.append(labels[s] if labels is not None else
                     (f"epoch {epoch}" if epoch is not None else str(s)))
    return Evolution(layer, chosen, names, crops, np.array(values), np.array(which))


def evolution_figure(evolution, zoom=3):
    """Rows = feature maps, columns = snapshots (a PIL image)."""
    from .render import evolution_image
    return evolution_image(evolution.crops, evolution.labels, zoom=zoom)
