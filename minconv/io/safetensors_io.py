"""Weights in and out as safetensors: a flat table of named arrays, with no pickle.

``save_safetensors(net, path)`` writes torchvision's names (``features.0.weight``,
``bn1.running_mean``) for the nets of torchvision's families (VGG, ResNet, GoogLeNet,
DenseNet), so ``torchvision.models.resnet18().load_state_dict(safetensors.torch.load_file(
path))`` takes the file as is, and minconv's own dotted names (``conv1.W``) otherwise.
``load_safetensors(net, path)`` reads either naming. Every name and shape is checked
before anything is copied: a file that does not fit the net changes nothing.
"""
import json
import os
import tempfile

import numpy as np

TORCHVISION_FAMILIES = ("vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50",
                        "googlenet", "densenet121")


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("safetensors files need the safetensors package: "
                          "pip install 'minconv[onnx]' (or pip install safetensors)") from None
    return safetensors.numpy


def is_torchvision_family(net):
    config = getattr(net, "config", None) or {}
    return config.get("model") in TORCHVISION_FAMILIES


def _model_name(net):
    config = getattr(net, "config", None) or {}
    return config.get("model")


def save_safetensors(net, path):
    """Write the parameters and buffers of ``net`` to ``path`` (atomically); returns the
    names written."""
    st = _safetensors()
    if is_torchvision_family(net):
        from . import to_torch_state_dict
        state, naming = to_torch_state_dict(net), "torchvision"
    else:
        state, naming = net.state_dict(), "minconv"
    arrays = {name: np.ascontiguousarray(_to_numpy(value)) for name, value in state.items()}
    config = getattr(net, "config", None)
    metadata = {"format": "pt" if naming == "torchvision" else "np", "naming": naming}
    if config is not None:
        metadata["minconv_config"] = json.dumps(config)
    path = os.fspath(path)
    handle, temporary = tempfile.mkstemp(suffix=".safetensors.tmp",
                                         dir=os.path.dirname(os.path.abspath(path)))
    os.close(handle)
    try:
        st.save_file(arrays, temporary, metadata=metadata)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return sorted(arrays)


def read_safetensors(path):
    """(arrays, metadata) of a safetensors file; a corrupt file is a ValueError naming it."""
    st = _safetensors()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        arrays = st.load_file(path)
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:
        raise ValueError(f"{path}: not a readable safetensors file ({type(error).__name__}: "
                         f"{error})") from None
    return arrays, metadata


def load_state(net, state, source):
    """Copy ``state`` (minconv's or torchvision's names) into ``net``, all or nothing."""
    own = net.state_dict()
    if set(state) == set(own):
        _check_shapes(own, state, source)
        net.load_state_dict(state)
        return net
    if is_torchvision_family(net) or any(k.endswith((".weight", ".bias")) for k in state):
        from . import from_torch_state_dict
        try:
            from_torch_state_dict(net, state)
        except ValueError as error:
            raise ValueError(f"{source}: the weights do not fit the net "
                             f"({_model_name(net) or type(net).__name__}): {error}") from None
        return net
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    raise ValueError(f"{source}: the names do not fit the net "
                     f"({_model_name(net) or type(net).__name__}): missing {_few(missing)}, "
                     f"unexpected {_few(unexpected)}; nothing was loaded")


def _check_shapes(own, state, source):
    wrong = [f"{k} {tuple(state[k].shape)} (the net has {tuple(own[k].shape)})"
             for k in sorted(own) if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"{source}: shapes do not fit the net: {_few(wrong)}; nothing was "
                         "loaded")


def _few(names, limit=6):
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


def load_safetensors(net, path):
    """Load the weights of the safetensors file ``path`` into ``net``; returns ``net``."""
    arrays, _ = read_safetensors(path)
    return load_state(net, arrays, os.fspath(path))


def _to_numpy(value):
    return value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else \
        np.asarray(value)
