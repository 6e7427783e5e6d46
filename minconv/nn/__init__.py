"""Stateful layers: thin wrappers over :mod:`minconv.functional`, and Sequential."""
from .base import Layer, default_rng, set_seed
from .conv import Conv2D, ConvTranspose2D
from .layers import LRN, Dropout, Flatten, Linear, MaxPool2D, ReLU
from .loss import SoftmaxCrossEntropy
from .sequential import Sequential

__all__ = ["Conv2D", "ConvTranspose2D", "Dropout", "Flatten", "LRN", "Layer", "Linear",
           "MaxPool2D", "ReLU", "Sequential", "SoftmaxCrossEntropy", "default_rng", "set_seed"]
