"""PyTorch state dicts in and out, under torchvision's names.

minconv's nets carry torchvision's module paths (``layer3.1.conv2``), so only the last
part of a key differs:

    layer            PyTorch                                 minconv
    Conv2D, Linear   weight, bias                            W, b
    BatchNorm2D      weight, bias, running_mean, running_var gamma, beta, running_mean, running_var
                     num_batches_tracked                     (ignored on the way in, 0 out)

Weights keep their layout (Conv2D ``(F, C/groups, kh, kw)``, Linear ``(out, in)``), so
arrays copy as they are. PyTorch is not needed: tensors are read through ``.numpy()``.
"""
import numpy as np

from ..nn import BatchNorm2D

_BN_IN = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean",
          "running_var": "running_var"}
_PLAIN_IN = {"weight": "W", "bias": "b"}
_IGNORED = ("num_batches_tracked",)


def _array(value, key):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        raise ValueError(f"from_torch_state_dict: {key} is not numeric ({value.dtype})")
    return value


def _entry_names(layer):
    return _BN_IN if isinstance(layer, BatchNorm2D) else _PLAIN_IN


def torch_to_minconv_key(net, key):
    """The minconv name of torch key ``key`` in ``net`` (None for ignored keys);
    ValueError naming the key when no layer of ``net`` has it."""
    path, _, entry = key.rpartition(".")
    if entry in _IGNORED:
        return None
    try:
        layer = net.resolve(path) if path else None
    except ValueError:
        layer = None
    if layer is None:
        raise ValueError(f"from_torch_state_dict: key {key!r} names no layer of this net "
                         f"({path!r} is not one of its layers); is the state dict from "
                         "another architecture?")
    names = _entry_names(layer)
    if entry not in names:
        raise ValueError(f"from_torch_state_dict: key {key!r}: a {type(layer).__name__} has no "
                         f"{entry!r} (it takes {', '.join(names)})")
    return f"{path}.{names[entry]}"


def from_torch_state_dict(net, state_dict, strict=True):
    """Load a PyTorch state dict (torchvision names) into ``net``; returns ``net``.

    Every key and shape is checked before anything is copied: a key with no layer, a
    missing key (with ``strict``) or a shape that differs raises ``ValueError`` naming the
    key and both shapes, and leaves the net unchanged.
    """
    own = net.state_dict()
    converted, sources = {}, {}
    for key, value in state_dict.items():
        name = torch_to_minconv_key(net, key)
        if name is None:
            continue
        array = _array(value, key)
        if name not in own:
            raise ValueError(f"from_torch_state_dict: key {key!r} has no counterpart {name!r} "
                             "in this net (a layer built without a bias?)")
        if tuple(array.shape) != tuple(own[name].shape):
            raise ValueError(f"from_torch_state_dict: {key} has shape {tuple(array.shape)} but "
                             f"{name} is {tuple(own[name].shape)}; is the state dict from another "
                             "architecture or number of classes?")
        converted[name] = array
        sources[name] = key
    missing = sorted(set(own) - set(converted))
    if strict and missing:
        shown = ", ".join(minconv_to_torch_key(net, m) for m in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise ValueError(f"from_torch_state_dict: the state dict lacks {shown}{more} "
                         "(torch names); is it from another architecture?")
    net.load_state_dict(converted, strict=False)
    return net


def minconv_to_torch_key(net, name):
    """The torchvision name of minconv parameter or buffer ``name``."""
    path, _, entry = name.rpartition(".")
    names = _entry_names(net.resolve(path))
    back = {v: k for k, v in names.items()}
    return f"{path}.{back.get(entry, entry)}"


def to_torch_state_dict(net):
    """{torchvision name: ndarray} of every parameter and buffer of ``net`` (host copies),
    with ``num_batches_tracked`` (0) for each BatchNorm so that ``torch``'s
    ``load_state_dict`` takes it as it is (wrap the arrays with ``torch.from_numpy``)."""
    from ..backend import to_device
    out = {}
    for name, value in net.state_dict().items():
        out[minconv_to_torch_key(net, name)] = np.array(to_device(value, "cpu"))
    for path, layer in net.named_layers():
        if isinstance(layer, BatchNorm2D):
            out[f"{path}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return out
