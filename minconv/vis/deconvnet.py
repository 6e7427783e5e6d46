"""The deconvnet: project one activation down to pixel space (Zeiler & Fergus, Sec. 2.1).

To see what a unit of layer L responds to in an image x:

1. run x forward up to L (the max-pooling layers record their switches);
2. keep the chosen activation a = L(x)[c, h, w] with its value and set every other
   activation of L to zero: a one-hot map  s = a * e_(c,h,w);
3. send s down to the pixels layer by layer: unpool with the switches, apply relu*
   (``relu(s)``) at every ReLU, filter with the transposed filters C^T (no bias),
   let LRN pass the signal through.

Step 3 is ``net.backward(s, rule="deconv", start=L)`` (here without parameter
gradients: :func:`~minconv.vis._common.backward_to_input`). The same call with
``rule="guided"`` gives guided backpropagation and with ``rule="grad"`` the true
gradient a * d unit / dx (docs/architecture.md, "The three backward rules").

Batching: each of the M rows of a projection is one (image, channel, position)
triple; images are repeated along the batch so that every row has its own switches
and its own one-hot seed, and M rows go down in one backward pass per chunk.
"""
import numpy as np

from ..backend import get_array_module
from ..functional.activation import check_rule
from ._common import (backward_to_input, check_images, check_layer, check_net, chunks, like_net,
                      to_numpy)

# ``position`` values that keep the whole feature map rather than one unit
WHOLE_MAP = ("map", "all")


class DeconvNet:
    """Zeiler & Fergus's deconvnet attached to a trained :class:`~minconv.nn.Sequential`.

    The net itself is the deconvnet: its layers already know how to go down under
    the ``deconv`` rule, so nothing is copied. ``batch_size`` bounds how many
    (image, channel) rows go down at once.
    """

    def __init__(self, net, batch_size=64):
        self.net = check_net(net, "DeconvNet")
        self.batch_size = int(batch_size)

    # ------------------------------------------------------------------ forward
    def activations(self, x, layer):
        """The output of ``layer`` for images x: (N, C, H, W) -> (N, F, Ho, Wo) or (N, F)."""
        check_layer(self.net, layer)
        x = like_net(check_images(x, "DeconvNet.activations"), self.net)
        return self.net.forward(x, train=False, until=layer)

    # ------------------------------------------------------------------ projection
    def project(self, x, layer, channel, position=None, rule="deconv", keep_value=True,
                return_units=False, batch_size=None):
        """Project units of ``layer`` down to pixel space.

        Parameters
        ----------
        x : array of shape (N, C, H, W)
            Images. With N == 1 and M channels, the image is repeated M times.
        layer : str
            Name of the layer whose output holds the unit (conv, relu, pool, norm or fc).
        channel : int or sequence of M ints
            Feature map (or fc unit) of each row; one int means the same for all rows.
        position : None, (h, w), array of shape (M, 2), or "map"
            None takes the strongest position of the chosen map in each image; "map"
            keeps the whole map. Must be None for fully connected layers.
        rule : "deconv" | "guided" | "grad"
        keep_value : bool
            True (the paper): the kept activation keeps its value a. False: it is set to
            1, so that under ``rule="grad"`` the result is exactly d unit / dx.

        Returns
        -------
        proj : array of shape (M, C, H, W), on the device of x.
        With ``return_units``: also ``values`` (M,) and ``positions`` (M, 2) of the
        chosen units as NumPy arrays (positions -1 for fc layers and whole maps).
        """
        op = "DeconvNet.project"
        net = self.net
        check_layer(net, layer)
        check_rule(rule)
        x = like_net(check_images(x, op), net)
        rows, channels = _broadcast_rows(op, len(x), channel)
        positions = _positions(op, position, len(rows))
        xp = get_array_module(x)
        out = xp.empty((len(rows),) + tuple(x.shape[1:]), dtype=x.dtype)
        values = np.empty(len(rows), dtype=np.float64)
        chosen = np.full((len(rows), 2), -1, dtype=np.int64)
        try:
            for part in chunks(len(rows), batch_size or self.batch_size):
                xb = x[xp.asarray(rows[part])]
                a = net.forward(xb, train=False, until=layer)
                ch = channels[part]
                _check_channels(op, layer, a, ch)
                pos = positions if isinstance(positions, str) or positions is None \
                    else positions[part]
                seed, v, p = _one_hot(a, ch, pos, keep_value, op, layer)
                out[part] = backward_to_input(net, seed, rule=rule, start=layer)
                values[part], chosen[part] = v, p
        finally:
            net.clear_cache()  # the repeated images' activations are large: free them
        if return_units:
            return out, values, chosen
        return out


def project(net, x, layer, channel, position=None, rule="deconv", **kwargs):
    """Functional form of :meth:`DeconvNet.project`."""
    return DeconvNet(net).project(x, layer, channel, position, rule, **kwargs)


# ---------------------------------------------------------------------- argument handling

def _broadcast_rows(op, n_images, channel):
    """Image index and channel of each row: (M,) int arrays."""
    if isinstance(channel, (int, np.integer)):
        channels = np.full(n_images, int(channel), dtype=np.int64)
    else:
        channels = np.asarray(to_numpy(channel) if hasattr(channel, "shape") else channel)
        if channels.ndim != 1 or channels.dtype.kind not in "iu":
            raise ValueError(f"{op}: channel must be an int or a 1-D sequence of ints, "
                             f"got {channel!r}")
        channels = channels.astype(np.int64)
    M = len(channels)
    if n_images == M:
        rows = np.arange(M)
    elif n_images == 1:
        rows = np.zeros(M, dtype=np.int64)
    else:
        raise ValueError(f"{op}: {M} channels for {n_images} images; give one channel per "
                         "image, one int, or a single image")
    return rows, channels


def _positions(op, position, M):
    if position is None:
        return None
    if isinstance(position, str):
        if position not in WHOLE_MAP:
            raise ValueError(f"{op}: position must be None, (h, w), an (M, 2) array or "
                             f"'map', got {position!r}")
        return "map"
    pos = np.asarray(to_numpy(position) if hasattr(position, "shape") else position)
    if pos.dtype.kind not in "iu":
        raise ValueError(f"{op}: position must hold integers, got {position!r}")
    if pos.shape == (2,):
        pos = np.broadcast_to(pos, (M, 2))
    if pos.shape != (M, 2):
        raise ValueError(f"{op}: position must be (h, w) or an array of shape ({M}, 2), "
                         f"got shape {pos.shape}")
    return pos.astype(np.int64)


def _check_channels(op, layer, a, channels):
    F = a.shape[1]
    if channels.size and (channels.min() < 0 or channels.max() >= F):
        bad = channels[(channels < 0) | (channels >= F)][0]
        kind = "unit" if a.ndim == 2 else "feature map"
        raise ValueError(f"{op}: {kind} index {int(bad)} is out of range for layer {layer!r}, "
                         f"whose output {tuple(a.shape[1:])} has {F} channels (0..{F - 1})")


def _one_hot(a, channels, position, keep_value, op, layer):
    """The seed for the way down: zeros like ``a`` except the chosen unit(s).

    a : (n, F, H, W) or (n, F). Returns (seed, values (n,), positions (n, 2)).
    """
    xp = get_array_module(a)
    n = a.shape[0]
    idx = xp.arange(n)
    ch = xp.asarray(channels)
    seed = xp.zeros_like(a)
    pos_out = np.full((n, 2), -1, dtype=np.int64)
    if a.ndim == 2:
        if position is not None:
            raise ValueError(f"{op}: layer {layer!r} is fully connected (output "
                             f"{tuple(a.shape)}); leave position as None")
        value = a[idx, ch]
        seed[idx, ch] = value if keep_value else 1
        return seed, to_numpy(value).astype(np.float64), pos_out
    if a.ndim != 4:
        raise ValueError(f"{op}: layer {layer!r} has output shape {tuple(a.shape)}; "
                         "expected (N, F, H, W) or (N, F)")
    H, W = a.shape[2:]
    maps = a.reshape(n, a.shape[1], H * W)[idx, ch]                 # (n, H*W)
    if isinstance(position, str):                                    # the whole map
        seed[idx, ch] = a[idx, ch] if keep_value else 1
        return seed, to_numpy(maps.sum(axis=1)).astype(np.float64), pos_out
    if position is None:
        flat = maps.argmax(axis=1)                                   # first maximum
    else:
        h, w = position[:, 0], position[:, 1]
        bad = (h < 0) | (h >= H) | (w < 0) | (w >= W)
        if bad.any():
            raise ValueError(f"{op}: position out of range for layer {layer!r}, whose maps "
                             f"are {H}x{W}: got {position[bad][0].tolist()}")
        flat = xp.asarray(h * W + w)
    value = maps[idx, flat]                                          # (n,)
    seed.reshape(n, a.shape[1], H * W)[idx, ch, flat] = value if keep_value else 1
    flat_np = to_numpy(flat)
    pos_out[:, 0], pos_out[:, 1] = flat_np // W, flat_np % W
    return seed, to_numpy(value).astype(np.float64), pos_out
