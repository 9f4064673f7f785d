"""int8 quantization: ``gm.quantize`` (static post-training quantization of ``Dense`` and
``Conv2D``), ``quantize_dynamic`` (``Dense`` layers quantizing each batch) and the int8
layers they build models from."""

from .calibration import METHODS, affine_parameters, symmetric_weights
from .layers import QuantizedConv2D, QuantizedDense
from .quantize import quantize, quantize_dynamic

__all__ = [
    "METHODS",
    "QuantizedConv2D",
    "QuantizedDense",
    "affine_parameters",
    "quantize",
    "quantize_dynamic",
    "symmetric_weights",
]
