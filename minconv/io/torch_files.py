"""PyTorch ``.pth``/``.pt`` state dicts, read with ``torch.load(weights_only=True)``.

Only tensors and plain containers are unpickled (PyTorch's restricted unpickler), never
arbitrary objects, so a file cannot run code. PyTorch is needed to read the format;
minconv itself never imports it otherwise.
"""
import os

import numpy as np


def read_torch_state_dict(path):
    """The tensors of a .pth/.pt file as {name: ndarray}. A checkpoint that wraps its state
    dict (``{"state_dict": ...}`` or ``{"model": ...}``) is unwrapped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch weights file not found: {path}")
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: reading .pth/.pt files needs PyTorch (pip install torch); "
                          "or convert the weights to .safetensors where PyTorch is "
                          "installed") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a PyTorch state dict that loads with weights_only=True "
                         f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    arrays = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            arrays[str(name)] = value.detach().cpu().numpy()
        elif not isinstance(value, (int, float)):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    if any(name.startswith("module.") for name in arrays):  # saved from DataParallel
        arrays = {name[len("module."):] if name.startswith("module.") else name: value
                  for name, value in arrays.items()}
    return {name: np.ascontiguousarray(value) for name, value in arrays.items()}


def load_torch_weights(net, path):
    """Load a .pth/.pt state dict (torchvision's names, or minconv's) into ``net``."""
    from .safetensors_io import load_state
    return load_state(net, read_torch_state_dict(path), os.fspath(path))
