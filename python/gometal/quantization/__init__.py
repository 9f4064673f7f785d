"""int8 quantization: ``gm.quantize`` (static post-training quantization of ``Dense`` and
``Conv2D``) and the int8 layers it builds models from."""

from .calibration import METHODS, affine_parameters, symmetric_weights
from .layers import QuantizedConv2D, QuantizedDense
from .quantize import quantize

__all__ = [
    "METHODS",
    "QuantizedConv2D",
    "QuantizedDense",
    "affine_parameters",
    "quantize",
    "symmetric_weights",
]
