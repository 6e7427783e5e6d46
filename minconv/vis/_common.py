"""Helpers shared by the visualisations: argument checks, layer lookup, batching."""
import numpy as np

from ..backend import get_array_module, to_device
from ..nn import Conv2D, Linear, ReLU, Sequential


def check_net(net, op):
    if not isinstance(net, Sequential):
        raise ValueError(f"{op}: expected a minconv Sequential net, got {type(net).__name__}")
    return net


def check_images(x, op, what="images"):
    """``x`` must be a float (N, C, H, W) array; returns it unchanged."""
    xp = get_array_module(x)
    if not isinstance(x, xp.ndarray):
        raise ValueError(f"{op}: {what} must be an array, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{op}: {what} must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise ValueError(f"{op}: {what} must be float32 or float64, got {x.dtype} "
                         f"(shape {tuple(x.shape)})")
    return x


def net_dtype(net):
    for value in net.params.values():
        return value.dtype
    return np.dtype(np.float32)


def like_net(x, net):
    """``x`` on the net's device and in its dtype: the ops refuse mixed dtypes, so the
    visualisations convert their inputs once, here."""
    if get_array_module(x) is np:
        x = np.asarray(x)
    x = to_device(x, net.device or "cpu")
    return x.astype(net_dtype(net), copy=False)


def names_of(net, kind):
    """Names of the layers of class ``kind``, in order."""
    return [name for name, layer in net.items() if isinstance(layer, kind)]


def conv_layer_names(net):
    return names_of(net, Conv2D)


def rectified(net, name):
    """The ReLU right after layer ``name`` if there is one, else ``name`` itself: the
    paper looks at rectified feature maps."""
    position = net.index(name)
    if position + 1 < len(net) and isinstance(net[position + 1], ReLU):
        return net.names[position + 1]
    return name


def default_feature_layer(net):
    """The rectified output of the last convolution (the paper's "layer 5")."""
    convs = conv_layer_names(net)
    if not convs:
        raise ValueError(f"the net has no Conv2D layer; name a layer from: {', '.join(net.names)}")
    return rectified(net, convs[-1])


def default_invariance_layers(net):
    """First convolution and the penultimate fully connected layer ("layer 1", "layer 7")."""
    convs, fcs = conv_layer_names(net), names_of(net, Linear)
    first = rectified(net, convs[0]) if convs else net.names[0]
    if len(fcs) >= 2:
        last = rectified(net, fcs[-2])
    elif convs:
        last = rectified(net, convs[-1])
    else:
        last = net.names[-1]
    return [first, last] if first != last else [first]


def check_layer(net, layer):
    net.index(layer)  # ValueError listing the valid names
    return layer


def chunks(n, size):
    """Slices of ``range(n)`` of at most ``size`` items."""
    size = max(1, int(size))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def to_numpy(a):
    xp = get_array_module(a)
    return a if xp is np else xp.asnumpy(a)


def take(images, index):
    """Rows ``index`` of a dataset: one fancy-indexing gather for arrays (NumPy or CuPy),
    item by item for other sequences (e.g. images decoded on demand)."""
    index = np.asarray(index, dtype=np.int64)
    xp = get_array_module(images)
    if isinstance(images, xp.ndarray):
        return images[xp.asarray(index)]
    try:
        rows = images[index]
        if isinstance(rows, np.ndarray):
            return rows
    except (TypeError, IndexError, KeyError):
        pass
    return np.stack([to_numpy(images[int(i)]) for i in index])


def pick_examples(labels, n):
    """Indices of up to n images, one per class first (the first of each), then in order."""
    labels = np.asarray(labels)
    picked, seen = [], set()
    for i, y in enumerate(labels):
        if int(y) not in seen:
            picked.append(i)
            seen.add(int(y))
        if len(picked) == n:
            return np.array(picked)
    rest = [i for i in range(len(labels)) if i not in picked]
    return np.array(picked + rest[:n - len(picked)])


def progress(iterable, total=None, desc=None, enabled=True):
    """A tqdm bar over ``iterable`` when enabled, the iterable itself otherwise."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


def backward_to_input(net, dy, rule="grad", start=None):
    """``net.backward(dy, rule, start)`` without the parameter gradients.

    The visualisations only need the signal that reaches the pixels; under "grad"
    every Conv2D and Linear layer would also compute dW (as much work again as the
    data gradient) and overwrite the net's ``grads``.
    """
    return net.backward(dy, rule=rule, start=start, param_grads=False)
