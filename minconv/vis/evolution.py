"""Filters and the evolution of features during training (the paper's Figs. 4 and 6).

Fig. 6 shows the first-layer filters; Fig. 4 shows, for a few feature maps of each
layer, the strongest activation over a set of images, projected to pixel space
with the deconvnet, at a series of epochs side by side. Here a "snapshot" is a
trained net or the path of a checkpoint (rebuilt by
:func:`minconv.train.load_checkpoint`).
"""
from dataclasses import dataclass

import numpy as np

from ._common import check_layer, check_net, conv_layer_names, progress, take, to_numpy
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


def run_snapshots(checkpoint):
    """The snapshots a run kept (``minconv train --snapshot-every K``): the paths of
    ``snapshots/epochNNN.npz`` beside the checkpoint, in epoch order, then the checkpoint
    itself when it is a later state; [] when the run kept none."""
    import glob
    import os
    folder = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "snapshots")
    paths = sorted(glob.glob(os.path.join(folder, "epoch[0-9][0-9][0-9].npz")))
    if not paths:
        return []
    from ..train import load_checkpoint
    if load_checkpoint(checkpoint).epoch > load_checkpoint(paths[-1]).epoch:
        paths.append(checkpoint)
    return paths


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

    layer : a name, or a list of names (one scan per snapshot serves them all; the
        result is then {name: Evolution}). maps : feature maps to follow: a list, the
        first n (an int), or all (None).
    labels : one caption per snapshot (default: the checkpoint's epoch, or its index).
    """
    layers = [layer] if isinstance(layer, str) else list(layer)
    crops, values, which = ({name: [] for name in layers} for _ in range(3))
    chosen_of, names = {}, []
    sample = to_numpy(take(images, [0])[0])
    for s, snapshot in enumerate(progress(snapshots, len(snapshots), "snapshots",
                                          show_progress)):
        net, epoch = _load(snapshot)
        for name in layers:
            check_layer(net, name)
        found = top_k(net, images, layers, k=1, batch_size=batch_size, preprocess=preprocess,
                      show_progress=False)
        for name in layers:
            result = found[name]
            chosen = _chosen(maps, len(result), name)
            proj = project_top_k(net, images, result, rule=rule, preprocess=preprocess,
                                 batch_size=batch_size, maps=chosen)     # (m, 1, C, H, W)
            field = receptive_field(net, name, sample.shape)
            row = []
            for m, f in enumerate(chosen):
                pos = tuple(result.positions[f, 0])
                pos = None if pos[0] < 0 else pos
                row.append(field.crop(proj[m, 0], pos, pad=True) if field.size else proj[m, 0])
            chosen_of[name] = chosen
            crops[name].append(row)
            values[name].append(result.values[chosen, 0])
            which[name].append(result.images[chosen, 0])
        names.append(labels[s] if labels is not None else
                     (f"epoch {epoch}" if epoch is not None else str(s)))
    out = {name: Evolution(name, chosen_of[name], names, crops[name], np.array(values[name]),
                           np.array(which[name])) for name in layers}
    return out[layer] if isinstance(layer, str) else out


def _chosen(maps, F, layer):
    """Feature maps to follow: all (None), the first ``maps`` (an int), or those listed."""
    if maps is None or isinstance(maps, (int, np.integer)):
        return np.arange(F if maps is None else min(int(maps), F))
    chosen = np.asarray(maps, dtype=np.int64)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= F):
        raise ValueError(f"feature_evolution: feature maps {chosen.tolist()} out of range "
                         f"for layer {layer!r} with {F} maps (0..{F - 1})")
    return chosen


def evolution_figure(evolution, zoom=None, min_cell=48):
    """Rows = feature maps, columns = snapshots (a PIL image). ``evolution`` may be one
    :class:`Evolution` or {layer: Evolution}; layers are then laid out side by side,
    each under its name. Tiles are enlarged to at least ``min_cell`` pixels."""
    from PIL import Image, ImageDraw
    from .render import evolution_image, grid
    evolutions = [evolution] if isinstance(evolution, Evolution) else list(evolution.values())
    blocks = []
    for evo in evolutions:
        side = max(p.shape[-1] for row in evo.crops for p in row if p is not None)
        z = zoom or max(1, -(-min_cell // side))
        body = evolution_image(evo.crops, evo.labels, zoom=z)
        block = Image.new("RGB", (body.width, body.height + 14), (255, 255, 255))
        ImageDraw.Draw(block).text((2, 1), evo.layer, fill=(0, 0, 0))
        block.paste(body, (0, 14))
        blocks.append(block)
    return blocks[0] if len(blocks) == 1 else grid(blocks, len(blocks), pad=8, background=255,
                                                   mode="RGB")
