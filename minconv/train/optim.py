"""Stochastic gradient descent with momentum, and the paper's filter renormalisation.

For each parameter w with gradient g, multiplier m of its layer and rate lr:

    v <- mu * v + (g + wd * w)          (momentum buffer, PyTorch's form)
    w <- w - lr * m * v

With a constant rate this is the paper's update v <- mu v - wd lr w - lr g,
w <- w + v (the buffers differ by the factor -lr). After the update, every
convolutional filter whose RMS exceeds ``renorm_radius`` is scaled back to it
(see :func:`renormalize_filters`).

The update runs in place over chunks of each array, so it allocates nothing
the size of a parameter (ZFNet's fc6 weight alone is 151 MB). Buffers live on
the parameter's device.
"""
import numpy as np

from ..backend import get_array_module
from ..runtime import map_shares
from ..nn import Conv2D

CHUNK = 1 << 18  # elements per in-place update step: 1 MB of float32, stays in cache


def renormalize_filters(W, radius):
    """Rescale in place the filters of W (F, C, kh, kw) whose RMS exceeds ``radius``.

        rms_f = sqrt(mean(W[f]^2));   W[f] <- W[f] * radius / rms_f   where rms_f > radius

    Returns the number of filters rescaled.
    """
    xp = get_array_module(W)
    W2 = W.reshape(W.shape[0], -1)                                # (F, C*kh*kw), a view
    rms = xp.sqrt(xp.einsum("fk,fk->f", W2, W2) / W2.shape[1])    # (F,)
    over = rms > radius
    scale = xp.where(over, radius / xp.maximum(rms, np.finfo(W.dtype).tiny), 1.0)
    W2 *= scale.astype(W.dtype)[:, None]
    return int(over.sum())


def _layer_of(name):
    return name.rsplit(".", 1)[0]


def _within(layer, names):
    """Whether ``layer`` (a dotted path) is one of ``names`` or lies inside one of them."""
    return any(layer == n or layer.startswith(n + ".") for n in names)


class SGD:
    """SGD with momentum, weight decay, per-layer rate multipliers and frozen layers.

    net            : a Sequential; its ``params``/``grads`` are read at each ``step``
    lr             : base learning rate (schedules set ``optimizer.lr``)
    momentum       : mu; 0 turns the buffer off
    weight_decay   : wd, L2 penalty (wd/2)|w|^2 added to the loss, on every parameter
    lr_mult        : {layer name: multiplier}, e.g. {"fc8": 10.0}; 1 for the others
    frozen         : layer names whose parameters never change (and are not renormalised)
    renorm_radius  : RMS radius for conv filters after each update; None turns it off
    """

    def __init__(self, net, lr=0.01, momentum=0.9, weight_decay=0.0, lr_mult=None, frozen=(),
                 renorm_radius=None):
        self.net = net
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.lr_mult = dict(lr_mult or {})
        self.frozen = list(frozen)
        self.renorm_radius = None if renorm_radius is None else float(renorm_radius)
        for name in list(self.lr_mult) + self.frozen:
            net.index(name)  # ValueError listing the valid names
        self.velocity = {}
        self.steps = 0
        self.renormalized = 0  # filters rescaled at the last step

    @property
    def trainable(self):
        """Names of the parameters this optimiser updates."""
        frozen = set(self.frozen)
        return [name for name in self.net.params if not _within(_layer_of(name), frozen)
                and self.lr_mult.get(_layer_of(name), 1.0) != 0.0]

    def lowest_trainable_layer(self):
        """Position in the net of the first layer with a trainable parameter (None: none)."""
        layers = {_layer_of(name) for name in self.trainable}
        for position, name in enumerate(self.net.names):
            if any(_within(layer, [name]) for layer in layers):  # or a layer inside it
                return position
        return None

    def step(self):
        """Apply one update from the gradients of the last backward pass."""
        params, grads = self.net.params, self.net.grads
        locked = [name for name in self.trainable
                  if isinstance(params[name], np.ndarray) and not params[name].flags.writeable]
        if locked:
            raise ValueError(f"SGD: parameters {locked} are read-only (the net's weights are "
                             "locked: net.unlock_weights() before training)")
        for name in self.trainable:
            if name not in grads:
                raise ValueError(f"SGD: no gradient for {name}; run the backward pass first")
            w, g = params[name], grads[name]
            if g.shape != w.shape:
                raise ValueError(f"SGD: gradient of {name} has shape {g.shape}, "
                                 f"the parameter {w.shape}")
            v = None
            if self.momentum:
                v = self.velocity.get(name)
                if v is None:
                    v = self.velocity[name] = get_array_module(w).zeros_like(w)
            rate = self.lr * self.lr_mult.get(_layer_of(name), 1.0)
            _update(w, g, v, rate, self.momentum, self.weight_decay)
        self.steps += 1
        self.renormalized = 0
        if self.renorm_radius is not None:
            frozen = set(self.frozen)
            for name, layer in self.net.named_layers():
                if isinstance(layer, Conv2D) and not _within(name, frozen):
                    self.renormalized += renormalize_filters(layer.params["W"],
                                                             self.renorm_radius)

    # -- state, for checkpoints ---------------------------------------------------
    def state_dict(self):
        """(scalars as a JSON-able dict, {name: momentum buffer})."""
        scalars = dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                       lr_mult=self.lr_mult, frozen=self.frozen,
                       renorm_radius=self.renorm_radius, steps=self.steps)
        return scalars, dict(self.velocity)

    def load_state_dict(self, scalars, buffers):
        params = self.net.params
        for name, value in buffers.items():
            if name not in params or tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(f"SGD: momentum buffer {name} {tuple(value.shape)} does not "
                                 "match the net's parameters")
        self.lr, self.momentum = float(scalars["lr"]), float(scalars["momentum"])
        self.weight_decay = float(scalars["weight_decay"])
        self.lr_mult, self.frozen = dict(scalars["lr_mult"]), list(scalars["frozen"])
        radius = scalars["renorm_radius"]
        self.renorm_radius = None if radius is None else float(radius)
        self.steps = int(scalars["steps"])
        self.velocity = {}
        for name, value in buffers.items():
            xp = get_array_module(params[name])
            self.velocity[name] = xp.array(value, dtype=params[name].dtype)  # on w's device

    def to(self, device):
        from ..backend import to_device
        self.velocity = to_device(self.velocity, device)
        return self


def _update(w, g, v, lr, mu, wd):
    """w, v updated in place from g (see the module docstring), chunk by chunk; on
    the CPU the chunks are shared among the cores (each element is updated by
    one core, exactly as one pass would update it)."""
    xp = get_array_module(w)
    if not w.flags.c_contiguous:  # reshape(-1) must be a view to update w in place
        raise ValueError("SGD: parameters must be C-contiguous arrays")
    wf, gf = w.reshape(-1), xp.ascontiguousarray(g).reshape(-1)
    vf = None if v is None else v.reshape(-1)
    n = wf.size
    step = CHUNK if xp is np else n  # one pass on the GPU: no cache to fit
    starts = range(0, n, step)

    def update_chunks(part):
        scratch = xp.empty(min(step, n), dtype=w.dtype)
        for start in starts[part]:
            stop = min(start + step, n)
            _update_chunk(wf[start:stop], gf[start:stop],
                          None if vf is None else vf[start:stop],
                          scratch[:stop - start], lr, mu, wd, xp)

    map_shares(update_chunks, len(starts), xp)


def _update_chunk(wc, gc, vc, s, lr, mu, wd, xp):
    """One chunk of the update, in place; ``s`` is scratch of the chunk's size."""
    if wd:
        xp.multiply(wc, wd, out=s)
        s += gc
        d = s                                  # g + wd*w
    else:
        d = gc
    if vc is not None:
        vc *= mu
        vc += d
        d = vc                                 # v = mu*v + g + wd*w
    xp.multiply(d, lr, out=s)
    wc -= s
