"""ONNX export of the int8 layers in the QDQ form onnxruntime runs: the input goes through
QuantizeLinear and DequantizeLinear with the layer's per-tensor parameters, the int8
weights through DequantizeLinear with their per-channel scales (axis 0), and the float
operator (Gemm, MatMul or Conv), bias and relu follow, as the layers compute them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.layers.onnx_rules import conv_attributes
from ..nn.layers.registry import OnnxGraph
from ..nn.tensor import LayerCall

NUMPY_DTYPES = {"uint8": np.uint8, "int8": np.int8}


def integer_constant(b: OnnxGraph, name: str, value: np.ndarray) -> str:
    """A ``Constant`` node holding ``value`` with its own integer dtype; its output."""
    from onnx import numpy_helper  # onnx loads with the export, not with gometal

    output = b.unique(name)
    b.node("Constant", [], output, output, value=numpy_helper.from_array(value, output))
    return output


def dequantized_input(b: OnnxGraph, layer: Any, x: str, name: str) -> str:
    """QuantizeLinear then DequantizeLinear of ``x`` with the layer's input parameters
    (DynamicQuantizeLinear's, from each batch's range, for a dynamic layer)."""
    if layer.input_scale is None:
        quantized, scale, zero = (b.unique(f"{name}/input_{part}") for part in ("q", "scale", "zp"))
        b.node("DynamicQuantizeLinear", [x], [quantized, scale, zero], quantized)
        restored = b.unique(f"{name}/input_dq")
        b.node("DequantizeLinear", [quantized, scale, zero], restored, restored)
        return restored
    scale = b.constant(f"{name}/input_scale", np.float32(layer.input_scale))
    zero = integer_constant(
        b,
        f"{name}/input_zero_point",
        np.array(layer.input_zero_point, dtype=NUMPY_DTYPES[layer.input_dtype]),
    )
    quantized, restored = b.unique(f"{name}/input_q"), b.unique(f"{name}/input_dq")
    b.node("QuantizeLinear", [x, scale, zero], quantized, quantized)
    b.node("DequantizeLinear", [quantized, scale, zero], restored, restored)
    return restored


def dequantized_weight(b: OnnxGraph, layer: Any, name: str) -> str:
    """The int8 weight through DequantizeLinear with one scale per output channel."""
    weight = layer.get_weights()["weight"].astype(np.int8)
    values = integer_constant(b, f"{name}/weight_q", weight)
    zeros = integer_constant(b, f"{name}/weight_zero_point", np.zeros(len(weight), np.int8))
    restored = b.unique(f"{name}/weight_dq")
    scales = b.weight(layer, "weight_scale")
    b.node("DequantizeLinear", [values, scales, zeros], restored, restored, axis=0)
    return restored


def finish(
    b: OnnxGraph, layer: Any, op_type: str, operands: list[str], out: str, name: str, **attrs: Any
) -> None:
    """The float operator, then a Relu when the layer fuses one."""
    product = b.unique(f"{name}/product") if layer.relu else out
    b.node(op_type, operands, product, product if layer.relu else name, **attrs)
    if layer.relu:
        b.node("Relu", [product], out, name)


def quantized_dense(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``QuantizedDense``: Q/DQ of the input and the weight around a Gemm (2-D input) or a
    MatMul over the last axis, plus the bias."""
    layer = call.layer
    x = dequantized_input(b, layer, inputs[0], name)
    weight = dequantized_weight(b, layer, name)
    if call.inputs[0].ndim == 2:
        operands = [x, weight] + ([b.weight(layer, "bias")] if layer.use_bias else [])
        finish(b, layer, "Gemm", operands, out, name, transB=1)
        return
    transposed = b.unique(f"{name}/weight_t")
    b.node("Transpose", [weight], transposed, transposed, perm=[1, 0])
    if not layer.use_bias:
        finish(b, layer, "MatMul", [x, transposed], out, name)
        return
    product = b.unique(f"{name}/matmul")
    b.node("MatMul", [x, transposed], product, product)
    finish(b, layer, "Add", [product, b.weight(layer, "bias")], out, name)


def quantized_conv2d(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``QuantizedConv2D``: Q/DQ of the input and the weight around a Conv with the bias."""
    layer = call.layer
    x = dequantized_input(b, layer, inputs[0], name)
    operands = [x, dequantized_weight(b, layer, name)]
    if layer.use_bias:
        operands.append(b.weight(layer, "bias"))
    finish(b, layer, "Conv", operands, out, name, **conv_attributes(layer))
