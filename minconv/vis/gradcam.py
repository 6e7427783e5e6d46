"""Grad-CAM and Guided Grad-CAM (Selvaraju et al., 2017): where in a layer's maps a class
score comes from.

For the class score S (a logit) and the K feature maps A_k (h, w) of a spatial layer:

    alpha_k   = 1/(h w) sum_ij  d S / d A_k[i, j]        (the gradient, averaged over space)
    Grad-CAM  = relu( sum_k alpha_k A_k )                 (h, w)
    Guided Grad-CAM = guided_backprop(x) * upsample(Grad-CAM, to H x W)     (C, H, W)

The same as Captum's ``LayerGradCam`` (``relu_attributions=True``) and ``GuidedGradCam``,
which upsample with ``torch.nn.functional.interpolate``; :func:`upsample` is that function's
"nearest" and "bilinear" (``align_corners=False``) modes.

The layer is named as everywhere else (``"conv5"``, ``"relu5"``, or a dotted path into a
Graph such as a residual stage, ``"layer3"``); its output is taken before any later layer
rectifies it in place, and the gradient that reaches it is :func:`layer_gradient`.
"""
import numpy as np

from ..backend import get_array_module
from ._common import check_images, check_layer, check_net, like_net, to_numpy


def _targets(op, logits, target):
    """Class index per row (N,) as NumPy: the argmax of the logits unless given."""
    n = logits.shape[0]
    if target is None:
        return to_numpy(logits.argmax(axis=1)).astype(np.int64)
    t = np.asarray(to_numpy(target) if hasattr(target, "shape") else target)
    if t.ndim == 0:
        t = np.full(n, int(t), dtype=np.int64)
    if t.shape != (n,) or t.dtype.kind not in "iu":
        raise ValueError(f"{op}: target must be an int or {n} ints, got {target!r}")
    K = logits.shape[1]
    if t.min() < 0 or t.max() >= K:
        raise ValueError(f"{op}: target {int(t[(t < 0) | (t >= K)][0])} is out of range for "
                         f"{K} classes")
    return t.astype(np.int64)


def layer_gradient(net, x, layer, target=None, rule="grad", op="layer_gradient"):
    """The output of ``layer`` and the gradient of the class score at it.

    x : (N, C, H, W). Returns (A, dS/dA, targets): A and dS/dA of the layer's output shape,
    on the net's device; targets (N,) the classes used (default: the predicted ones).

    Any net of the protocol (Sequential or Graph, ``layer`` a dotted path at any depth):
    one forward pass records A (copied if a later layer works in place), one backward pass
    from the class score runs while the layer's ``backward`` is wrapped to keep the
    gradient it receives (on a graph, the sum over the layer's consumers).
    """
    check_net(net, op)
    check_layer(net, layer)
    x = like_net(check_images(x, op), net)
    unit = net[layer]
    caught = []
    plain = type(unit).backward

    def keep(dy, *args, **kwargs):
        caught.append(dy.copy())           # the layers below may reuse dy's memory
        return plain(unit, dy, *args, **kwargs)

    unit.backward = keep
    try:
        y = net.forward(x, train=False, record=(layer,))
        a = net.outputs[layer]
        t = _targets(op, y, target)
        xp = get_array_module(y)
        seed = xp.zeros_like(y)
        seed[xp.arange(len(t)), xp.asarray(t)] = 1
        net.backward(seed, rule=rule, param_grads=False)
    finally:
        del unit.backward
        net.clear_cache()
    if len(caught) != 1:
        raise ValueError(f"{op}: no gradient reached layer {layer!r} from the net's output")
    return a, caught[0], t


def grad_cam(net, x, layer, target=None, relu=True, upsample_to=None, mode="nearest"):
    """Grad-CAM of the class ``target`` (default: the predicted class) at a spatial ``layer``.

    Returns (N, h, w) for the layer's h x w maps, or (N, H, W) with ``upsample_to=(H, W)``.
    ``relu=False`` keeps the negative evidence (Captum's ``relu_attributions=False``).
    """
    a, g, _ = layer_gradient(net, x, layer, target, op="grad_cam")
    if a.ndim != 4:
        raise ValueError(f"grad_cam: layer {layer!r} has output shape {tuple(a.shape)}; Grad-CAM "
                         "needs a spatial layer with (N, F, h, w) maps (a conv, relu, pool or "
                         "norm layer)")
    alpha = g.mean(axis=(2, 3), keepdims=True)            # (N, F, 1, 1)
    cam = (alpha * a).sum(axis=1)                         # (N, h, w)
    if relu:
        xp = get_array_module(cam)
        cam = xp.maximum(cam, 0)
    if upsample_to is not None:
        cam = upsample(cam[:, None], upsample_to, mode)[:, 0]
    return cam


def guided_grad_cam(net, x, layer, target=None, mode="nearest"):
    """Guided backpropagation times the upsampled Grad-CAM: (N, C, H, W), signed.

    The target defaults to the predicted class, the same for both factors.
    """
    from .saliency import guided_backprop, predict
    x = like_net(check_images(x, "guided_grad_cam"), net)
    if target is None:
        target = predict(net, x).argmax(axis=1)
    cam = grad_cam(net, x, layer, target, relu=True, upsample_to=x.shape[2:], mode=mode)
    return guided_backprop(net, x, target) * cam[:, None]


def upsample(a, size, mode="nearest"):
    """Resize (N, C, h, w) maps to (N, C, H, W) as ``torch.nn.functional.interpolate``.

    nearest : output pixel i takes input pixel floor(i * h / H)
    bilinear: align_corners=False, source coordinate (i + 0.5) h / H - 0.5, clamped at 0
    """
    if a.ndim != 4:
        raise ValueError(f"upsample: expected (N, C, h, w) maps, got shape {tuple(a.shape)}")
    H, W = (int(s) for s in size)
    if H < 1 or W < 1:
        raise ValueError(f"upsample: size must be positive, got {tuple(size)}")
    xp = get_array_module(a)
    h, w = a.shape[2:]
    if mode == "nearest":
        rows = np.minimum(np.floor(np.arange(H) * (h / H)).astype(np.int64), h - 1)
        cols = np.minimum(np.floor(np.arange(W) * (w / W)).astype(np.int64), w - 1)
        return a[:, :, xp.asarray(rows)][:, :, :, xp.asarray(cols)]
    if mode == "bilinear":
        r0, r1, fr = _linear_taps(h, H)
        c0, c1, fc = _linear_taps(w, W)
        fr = xp.asarray(fr, dtype=a.dtype)[:, None]
        fc = xp.asarray(fc, dtype=a.dtype)
        top = a[:, :, xp.asarray(r0)] * (1 - fr) + a[:, :, xp.asarray(r1)] * fr   # (N, C, H, w)
        return top[..., xp.asarray(c0)] * (1 - fc) + top[..., xp.asarray(c1)] * fc
    raise ValueError(f"upsample: mode must be 'nearest' or 'bilinear', got {mode!r}")


def _linear_taps(n_in, n_out):
    """Left and right source index and the right one's weight for each output position."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    left = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    right = np.minimum(left + 1, n_in - 1)
    return left, right, src - left
