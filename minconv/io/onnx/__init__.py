"""ONNX in and out: :func:`load_onnx` builds a minconv Graph from an .onnx file and
:func:`save_onnx` writes a Sequential or Graph as one. Needs the ``onnx`` package
(``pip install minconv[onnx]``); minconv itself imports without it."""
from .importer import graph_from_model, load_onnx
from .registry import supported_ops

__all__ = ["graph_from_model", "load_onnx", "supported_ops"]
