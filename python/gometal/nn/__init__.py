"""The nn layer: symbolic tensors, layers, models and the builder that chains them.

A model is described here, in Python, as a graph of layer calls from ``Input`` tensors
to outputs; each layer emits engine primitives (through ``gometal.graph``) when a
trainer or the model's inference engine compiles it. This layer imports only the graph
and base layers.

Example:
    >>> from gometal import nn
    >>> x = nn.Input((4,))
    >>> model = nn.Model(x, nn.layers.Dense(2)(x))
"""

from . import initializers, layers, ops
from .builder import ModelBuilder
from .layers.base import EmitContext
from .model import Model
from .tensor import Input, LayerCall, SymbolicTensor

__all__ = [
    "EmitContext",
    "Input",
    "LayerCall",
    "Model",
    "ModelBuilder",
    "SymbolicTensor",
    "initializers",
    "layers",
    "ops",
]
