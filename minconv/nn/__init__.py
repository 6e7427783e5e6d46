"""Stateful layers: thin wrappers over :mod:`minconv.functional`, and Sequential."""
from .base import Layer, default_rng, set_seed, shapes_only
from .conv import Conv2D, ConvTranspose2D
from .layers import LRN, Dropout, Flatten, Linear, MaxPool2D, ReLU
from .loss import SoftmaxCrossEntropy
from .sequential import Sequential
from .container import Container, LayerError
from .graph import Graph
from .merge import Add, Concat, Identity
from .norm import BatchNorm2D
from .pool import AdaptiveAvgPool2D, AvgPool2D
from .saturating import Sigmoid, Tanh

__all__ = ["AdaptiveAvgPool2D", "Add", "AvgPool2D", "BatchNorm2D", "Concat", "Container", "Graph",
           "Identity", "LayerError", "Sigmoid", "Tanh",
           "Conv2D", "ConvTranspose2D", "Dropout", "Flatten", "LRN", "Layer", "Linear",
           "MaxPool2D", "ReLU", "Sequential", "SoftmaxCrossEntropy", "default_rng", "set_seed",
           "shapes_only"]
