"""Layers: small classes whose ``emit`` composes engine primitives.

Adding a layer touches Python only: subclass ``Layer`` in the module of its family,
declare weights in ``build`` and compose primitives in ``emit``.
"""

from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Swish, Tanh
from .base import EmitContext, Layer, WeightSpec
from .core import Dense
from .merge import Add, Concatenate, Multiply
from .regularization import Dropout
from .reshaping import Flatten

__all__ = [
    "ELU",
    "GELU",
    "Add",
    "Concatenate",
    "Dense",
    "Dropout",
    "EmitContext",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "Multiply",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Swish",
    "Tanh",
    "WeightSpec",
]
