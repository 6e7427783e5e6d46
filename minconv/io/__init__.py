"""Weights and nets in and out: PyTorch state dicts (torchvision's names), and the
interchange formats."""
from .safetensors_io import load_safetensors, save_safetensors
from .torch_files import load_torch_weights, read_torch_state_dict
from .torch_state import from_torch_state_dict, to_torch_state_dict


def load_onnx(path, fold_batchnorm=False):
    """An .onnx file as a :class:`minconv.nn.Graph` named after the ONNX nodes (needs the
    ``onnx`` package, imported only here; see :mod:`minconv.io.onnx`). ``fold_batchnorm``
    folds each BatchNormalization, and each per-channel Mul or Add, that alone reads a
    Conv's or a BatchNormalization's output into that layer."""
    from .onnx import load_onnx as load
    return load(path, fold_batchnorm=fold_batchnorm)


def save_onnx(net, path, input_shape):
    """Write a Sequential or Graph as an ONNX model (see :mod:`minconv.io.onnx.exporter`)."""
    from .onnx.exporter import save_onnx as save
    return save(net, path, input_shape)


__all__ = ["from_torch_state_dict", "load_onnx", "load_safetensors", "load_torch_weights",
           "read_torch_state_dict", "save_onnx", "save_safetensors", "to_torch_state_dict"]
