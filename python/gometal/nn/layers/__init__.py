"""Layers: small classes whose ``emit`` composes engine primitives.

Adding a layer touches Python only: subclass ``Layer`` in the module of its family,
declare weights in ``build``, compose primitives in ``emit``, return the constructor's
arguments from ``get_config``, and register the class (``@register_layer``, with its ONNX
export rule when it has one: see ``registry`` and the built-in rules in ``onnx_rules``).
The registry is the one list of layers that saving, loading and ONNX export read.
"""

from .activations import (
    ELU,
    GELU,
    Hardswish,
    LeakyReLU,
    Mish,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Swish,
    Tanh,
)
from .adaptive_pooling import AdaptiveAvgPool2D, GlobalMaxPool2D
from .base import EmitContext, Layer, WeightSpec
from .conv import Conv2D
from .conv_variants import Conv1D, Conv2DTranspose
from .core import Dense
from .embedding import Embedding, PositionalEmbedding, RMSNorm, TiedLinear
from .lambda_layer import Lambda, register_function, registered_functions
from .merge import Add, Concatenate, Multiply
from .normalization import BatchNorm
from .normalization_groups import GroupNorm, InstanceNorm2D, LayerNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .recurrent import GRU as GRU
from .recurrent import LSTM as LSTM
from .recurrent import SimpleRNN as SimpleRNN
from .registry import (
    LayerEntry,
    OnnxGraph,
    OnnxRule,
    entry_of,
    layer_entries,
    register_layer,
    registered_layers,
)
from .regularization import Dropout
from .resampling import UpSampling2D, ZeroPadding2D
from .reshaping import Flatten, Permute, Reshape
from .transformer import (
    MultiHeadAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

# Registers the transformer layers' ONNX export rules (kept apart from the layers' math).
from . import onnx_rules_transformer  # noqa: F401  isort: skip
from . import onnx_rules_recurrent  # noqa: F401  isort: skip

__all__ = [
    "ELU",
    "GELU",
    "GRU",
    "LSTM",
    "AdaptiveAvgPool2D",
    "Add",
    "AvgPool2D",
    "BatchNorm",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Dense",
    "Dropout",
    "Embedding",
    "EmitContext",
    "Flatten",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "GroupNorm",
    "Hardswish",
    "InstanceNorm2D",
    "Lambda",
    "Layer",
    "LayerEntry",
    "LayerNorm",
    "LeakyReLU",
    "MaxPool2D",
    "Mish",
    "MultiHeadAttention",
    "Multiply",
    "OnnxGraph",
    "OnnxRule",
    "PReLU",
    "Permute",
    "PositionalEmbedding",
    "RMSNorm",
    "ReLU",
    "Reshape",
    "SiLU",
    "Sigmoid",
    "SimpleRNN",
    "Softmax",
    "Swish",
    "Tanh",
    "TiedLinear",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "UpSampling2D",
    "WeightSpec",
    "ZeroPadding2D",
    "entry_of",
    "layer_entries",
    "register_function",
    "register_layer",
    "registered_functions",
    "registered_layers",
]
