"""Gradient maps of a class score or a unit: saliency and guided backpropagation.

Both are the deconvnet's projection with another backward rule (DESIGN.md):

    saliency(x)        = max_c | d S_k / d x_c |     (Simonyan et al.; rule "grad")
    guided_backprop(x) = the "guided" backward pass of S_k: relu(dy) * (x > 0) at ReLUs

with S_k the unnormalised score (logit) of class k, k the predicted class unless
given. ``layer`` and ``channel`` pick a hidden unit instead of a class score (its
strongest position, as in :meth:`DeconvNet.project`).
"""
import numpy as np

from ._common import check_images, check_net, like_net, to_numpy
from .deconvnet import DeconvNet


def predict(net, x, batch_size=256):
    """Class probabilities (N, K) as a NumPy array."""
    from ..functional import softmax
    from ._common import chunks
    x = like_net(check_images(x, "predict"), net)
    out = [to_numpy(softmax(net.forward(x[part], train=False)))
           for part in chunks(len(x), batch_size)]
    net.clear_cache()
    return np.concatenate(out)


def _target(net, x, target):
    if target is None:
        return predict(net, x).argmax(axis=1)
    return target


def input_gradient(net, x, target=None, layer=None, channel=None, position=None, rule="grad"):
    """d unit / dx (N, C, H, W) under ``rule``: the class score ``target`` of the last
    layer (default: the predicted class), or ``channel`` of ``layer``."""
    check_net(net, "input_gradient")
    x = like_net(check_images(x, "input_gradient"), net)
    if layer is None:
        layer, channel = net.names[-1], _target(net, x, target)
    elif channel is None:
        raise ValueError("input_gradient: give channel= together with layer=")
    return DeconvNet(net).project(x, layer, channel, position, rule=rule, keep_value=False)


def saliency(net, x, target=None, layer=None, channel=None, reduce="max"):
    """Vanilla-gradient saliency |d S / d x| reduced over colour channels.

    reduce : "max" (Simonyan et al.) or "mean" give (N, H, W); None keeps every channel,
             (N, C, H, W) (Captum's ``Saliency(abs=True)``).
    """
    if reduce not in ("max", "mean", None):
        raise ValueError(f"saliency: reduce must be 'max', 'mean' or None, got {reduce!r}")
    g = abs(input_gradient(net, x, target, layer, channel, rule="grad"))
    if reduce is None:
        return g
    return g.max(axis=1) if reduce == "max" else g.mean(axis=1)


def guided_backprop(net, x, target=None, layer=None, channel=None, position=None):
    """Guided backpropagation of a class score or a unit: (N, C, H, W), signed."""
    return input_gradient(net, x, target, layer, channel, position, rule="guided")
