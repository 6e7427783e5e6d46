"""Gradient maps of a class score or a unit: saliency and guided backpropagation.

Both are the deconvnet's projection with another backward rule (docs/architecture.md):

    saliency(x)        = max_c | d S_k / d x_c |     (Simonyan et al.; rule "grad")
    guided_backprop(x) = the "guided" backward pass of S_k: relu(dy) * (x > 0) at ReLUs

with S_k the unnormalised score (logit) of class k, k the predicted class unless
given. ``layer`` and ``channel`` pick a hidden unit instead of a class score (its
strongest position, as in :meth:`DeconvNet.project`).
"""
import numpy as np

from ..backend import get_array_module
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


def input_gradient(net, x, target=None, layer=None, channel=None, position=None, rule="grad"):
    """d unit / dx (N, C, H, W) under ``rule``: the class score ``target`` of the last
    layer (default: the predicted class), or ``channel`` of ``layer``."""
    check_net(net, "input_gradient")
    x = like_net(check_images(x, "input_gradient"), net)
    if layer is None:
        return _class_gradient(net, x, target, rule)
    if channel is None:
        raise ValueError("input_gradient: give channel= together with layer=")
    return DeconvNet(net).project(x, layer, channel, position, rule=rule, keep_value=False)


def _class_gradient(net, x, target, rule, batch_size=64):
    """d S_t / dx under ``rule``: a one-hot seed on the net's output, sent down."""
    from ._common import chunks
    from .gradcam import _targets
    xp = get_array_module(x)
    out = xp.empty_like(x)
    t = None if target is None else np.broadcast_to(
        np.asarray(to_numpy(target) if hasattr(target, "shape") else target), (len(x),))
    try:
        for part in chunks(len(x), batch_size):
            y = net.forward(x[part], train=False)
            rows = _targets("input_gradient", y, None if t is None else t[part])
            seed = xp.zeros_like(y)
            seed[xp.arange(len(rows)), xp.asarray(rows)] = 1
            out[part] = net.backward(seed, rule=rule, param_grads=False)
    finally:
        net.clear_cache()
    return out


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
