"""SmoothGrad (Smilkov et al., 2017): any attribution averaged over noisy copies of the image.

For an attribution method A, an image x and n_samples draws e_s ~ N(0, stdev^2 I):

    smoothgrad    = 1/n sum_s A(x + e_s)
    smoothgrad_sq = 1/n sum_s A(x + e_s)^2
    vargrad       = smoothgrad_sq - smoothgrad^2         (the attributions' variance)

as Captum's ``NoiseTunnel``. The noise is drawn once, as an (N, n_samples, C, H, W) array,
from ``seed``; pass ``noise=`` to use a draw of your own (a test shares Captum's draw so).
"""
import numpy as np

from ..backend import get_array_module
from ._common import check_images, check_net, chunks, like_net, to_numpy

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def smoothgrad(method, net, x, n_samples=25, stdev=0.15, kind="smoothgrad", noise=None,
               seed=0, batch_size=64, **kwargs):
    """``method(net, x_noisy, target=..., **kwargs)`` averaged over noisy copies of x.

    method    : any attribution with the signature method(net, x, ...) -> (N, ...) (saliency,
                input_gradient, guided_backprop, integrated_gradients, grad_cam, ...)
    stdev     : the noise's standard deviation, in the images' own units
    noise     : None (drawn from ``seed``) or an array of shape (N, n_samples, C, H, W)
    target    : (in kwargs) the class; None takes the prediction on the clean image, so that
                every noisy copy explains the same class
    Returns the method's output shape for the N clean images.
    """
    op = "smoothgrad"
    check_net(net, op)
    if kind not in KINDS:
        raise ValueError(f"{op}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    x = like_net(check_images(x, op), net)
    xp = get_array_module(x)
    N, S = len(x), int(n_samples)
    if S < 1:
        raise ValueError(f"{op}: n_samples must be at least 1, got {n_samples}")
    shape = (N, S) + tuple(x.shape[1:])
    if noise is None:
        noise = np.random.default_rng(seed).normal(0.0, stdev, size=shape)
    noise = xp.asarray(noise, dtype=x.dtype)
    if tuple(noise.shape) != shape:
        raise ValueError(f"{op}: noise must have shape {shape} (images, samples, C, H, W), "
                         f"got {tuple(noise.shape)}")
    target = kwargs.pop("target", None)
    if target is None and kwargs.get("channel") is None:   # a class, not a hidden unit
        from .saliency import predict
        target = predict(net, x).argmax(axis=1)
    t = None if target is None else np.broadcast_to(
        np.asarray(to_numpy(target) if hasattr(target, "shape") else target), (N,))
    noisy = (x[:, None] + noise).reshape((N * S,) + tuple(x.shape[1:]))   # image-major rows
    rows_t = None if t is None else np.repeat(t, S)
    total = total_sq = None
    for part in chunks(N * S, batch_size):
        extra = dict(kwargs) if rows_t is None else dict(kwargs, target=rows_t[part])
        a = method(net, noisy[part], **extra)
        if total is None:
            total = xp.zeros((N * S,) + tuple(a.shape[1:]), dtype=a.dtype)
            total_sq = xp.zeros_like(total)
        total[part], total_sq[part] = a, a * a
    mean = total.reshape((N, S) + total.shape[1:]).mean(axis=1)
    mean_sq = total_sq.reshape((N, S) + total.shape[1:]).mean(axis=1)
    if kind == "smoothgrad":
        return mean
    if kind == "smoothgrad_sq":
        return mean_sq
    return mean_sq - mean * mean
