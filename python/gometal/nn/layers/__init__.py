"""Layers: small classes whose ``emit`` composes engine primitives.

Adding a layer touches Python only: subclass ``Layer`` in the module of its family,
declare weights in ``build`` and compose primitives in ``emit``.
"""

from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Swish, Tanh
from .base import EmitContext, Layer, WeightSpec
from .conv import Conv2D
from .core import Dense
from .merge import Add, Concatenate, Multiply
from .normalization import BatchNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .regularization import Dropout
from .reshaping import Flatten

__all__ = [
    "ELU",
    "GELU",
    "Add",
    "AvgPool2D",
    "BatchNorm",
    "Concatenate",
    "Conv2D",
    "Dense",
    "Dropout",
    "EmitContext",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "Multiply",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Swish",
    "Tanh",
    "WeightSpec",
]
