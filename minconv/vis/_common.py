"""Helpers shared by the visualisations: argument checks, layer lookup, batching."""
import numpy as np

from ..backend import get_array_module, to_device
from ..nn import (AdaptiveAvgPool2D, AvgPool2D, BatchNorm2D, Container, Conv2D, Flatten, Linear,
                  MaxPool2D, ReLU, Sequential)
from ..nn.container import is_container
from ..nn.fields import container_outputs, leaf_graph


def check_net(net, op):
    if not isinstance(net, Container):
        raise ValueError(f"{op}: expected a minconv Sequential or Graph net, got "
                         f"{type(net).__name__}")
    return net


def is_plain(net):
    """A Sequential of layers only (no nested containers): walked layer by layer."""
    return isinstance(net, Sequential) and not any(is_container(layer) for layer in net)


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
    """Dotted names of the layers of class ``kind`` at any depth, in running order."""
    return [name for name, layer in net.named_layers() if isinstance(layer, kind)]


def conv_layer_names(net):
    return names_of(net, Conv2D)


def rectified(net, name):
    """The ReLU right after layer ``name`` if there is one, else ``name`` itself: the
    paper looks at rectified feature maps."""
    if is_plain(net):
        position = net.index(name)
        if position + 1 < len(net) and isinstance(net[position + 1], ReLU):
            return net.names[position + 1]
        return name
    nodes, _ = leaf_graph(net)
    leaf = container_outputs(net).get(name, name)
    while True:  # through a BatchNorm that alone reads it, to the ReLU
        readers = [(path, layer) for path, layer, reads in nodes if leaf in reads]
        if len(readers) != 1 or readers[0][1] is None:
            return name
        path, layer = readers[0]
        if isinstance(layer, ReLU):
            return path
        if not isinstance(layer, BatchNorm2D):
            return name
        leaf = path


def default_feature_layer(net):
    """The last feature maps before the classifier: the input of the first flattening,
    global pooling or fully connected layer, taken before a pooling that feeds it
    (ZFNet's relu5, ResNet's last block, GoogLeNet's inception5b); without one, the
    rectified output of the last convolution (the paper's "layer 5")."""
    convs = conv_layer_names(net)
    if not convs:
        raise ValueError(f"the net has no Conv2D layer; name a layer from: {', '.join(net.names)}")
    nodes, _ = leaf_graph(net)
    kinds = {path: layer for path, layer, _ in nodes}
    for path, layer, reads in nodes:
        if isinstance(layer, (Flatten, Linear, AdaptiveAvgPool2D)) and len(reads) == 1 \
                and reads[0] in kinds:
            below = reads[0]
            if isinstance(kinds[below], (MaxPool2D, AvgPool2D)):
                below = next(r for p, _, r in nodes if p == below)[0]
            if below in kinds:
                return _outer_name(net, below)
    return rectified(net, convs[-1])


def _outer_name(net, leaf):
    """The shortest container path whose output is ``leaf`` (``layer4`` for
    ``layer4.1.relu2``), or ``leaf`` itself."""
    names = [path for path, out in container_outputs(net).items() if out == leaf]
    return min(names, key=len) if names else leaf


def default_invariance_layers(net):
    """First convolution and the penultimate fully connected layer ("layer 1", "layer 7")."""
    convs, fcs = conv_layer_names(net), names_of(net, Linear)
    first = rectified(net, convs[0]) if convs else net.names[0]
    if len(fcs) >= 2:
        last = rectified(net, fcs[-2])
    elif convs:
        last = default_feature_layer(net)
    else:
        last = net.names[-1]
    return [first, last] if first != last else [first]


def check_layer(net, layer):
    net.resolve(layer)  # ValueError listing the valid names
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
