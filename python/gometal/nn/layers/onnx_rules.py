"""The ONNX export rules of the built-in layers, registered with each layer class.

Each rule writes one layer call as standard ONNX operators in inference form: batch norm
normalizes with its running statistics, dropout is an identity. Weights are initializers
named as gometal names them (``dense_0.weight``), in PyTorch's layouts, so ``Gemm`` takes
the dense weight with ``transB=1`` and ``Conv`` takes ``(O, C/groups, kh, kw)`` as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..tensor import LayerCall
from .base import Layer
from .registry import OnnxGraph, OnnxRule


def weight_operands(b: OnnxGraph, layer: Any, x: str) -> list[str]:
    """``[x, weight]``, then ``bias`` when the layer has one: a Gemm's or a Conv's operands."""
    operands = [x, b.weight(layer, "weight")]
    if layer.use_bias:
        operands.append(b.weight(layer, "bias"))
    return operands


def dense(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Dense``: one ``Gemm`` (with the bias when the layer has one)."""
    layer = call.layer
    if call.inputs[0].ndim > 2:
        _dense_over_last_axis(b, call, inputs, out, name)
        return
    operands = weight_operands(b, layer, inputs[0])
    # The weight is (out_features, in_features), as nn.Linear: y = x @ W^T + b.
    b.node("Gemm", operands, out, name, transB=1)


def _dense_over_last_axis(
    b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    # Gemm is 2-D; MatMul broadcasts over the leading axes, as nn.Linear does.
    layer = call.layer
    transposed = b.unique(f"{name}/weight_t")
    b.node("Transpose", [b.weight(layer, "weight")], transposed, transposed, perm=[1, 0])
    product = b.unique(f"{name}/matmul") if layer.use_bias else out
    b.node("MatMul", [inputs[0], transposed], product, product if layer.use_bias else name)
    if layer.use_bias:
        b.node("Add", [product, b.weight(layer, "bias")], out, name)


def single_node(op_type: str, **attrs_of: Callable[[Layer], Any]) -> OnnxRule:
    """A rule for layers that map to one ONNX operator with attributes read off the layer."""

    def rule(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
        attrs = {key: get(call.layer) for key, get in attrs_of.items()}
        b.node(op_type, inputs, out, name, **attrs)

    return rule


def swish(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Swish``: ``x * Sigmoid(x)``."""
    gate = b.unique(f"{name}/sigmoid")
    b.node("Sigmoid", inputs, gate, gate)
    b.node("Mul", [inputs[0], gate], out, name)


def gelu(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``GELU``: the exact (erf) form, one ``Gelu`` node from opset 20 on."""
    if b.opset >= 20:
        b.node("Gelu", inputs, out, name, approximate="none")
        return
    # Before opset 20: 0.5 * x * (1 + erf(x / sqrt(2))), the exact form the layer computes.
    x = inputs[0]
    scaled = b.unique(f"{name}/scaled")
    inv_sqrt2 = b.constant(f"{name}/inv_sqrt2", np.float32(1.0 / math.sqrt(2.0)))
    b.node("Mul", [x, inv_sqrt2], scaled, scaled)
    erf = b.unique(f"{name}/erf")
    b.node("Erf", [scaled], erf, erf)
    gate = b.unique(f"{name}/gate")
    b.node("Add", [erf, b.constant(f"{name}/one", np.float32(1.0))], gate, gate)
    half = b.unique(f"{name}/half_x")
    b.node("Mul", [x, b.constant(f"{name}/half", np.float32(0.5))], half, half)
    b.node("Mul", [half, gate], out, name)


def conv_attributes(layer: Any) -> dict[str, list[int]]:
    """A 2-D convolution layer's ONNX ``kernel_shape``, ``strides``, symmetric ``pads`` and
    ``dilations`` (``Conv``, ``ConvTranspose`` and the quantized ``Conv`` share them)."""
    ph, pw = layer.padding
    return {
        "kernel_shape": list(layer.kernel_size),
        "strides": list(layer.stride),
        "pads": [ph, pw, ph, pw],
        "dilations": list(layer.dilation),
    }


def conv2d(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Conv2D``: one ``Conv`` with symmetric pads."""
    layer = call.layer
    operands = weight_operands(b, layer, inputs[0])
    b.node("Conv", operands, out, name, **conv_attributes(layer), group=layer.groups)


def pool(op_type: str, **extra: Any) -> OnnxRule:
    """A rule for 2-D pooling layers: ``op_type`` with the layer's window, stride and pads."""

    def rule(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
        layer = call.layer
        ph, pw = layer.padding
        b.node(
            op_type,
            inputs,
            out,
            name,
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=[ph, pw, ph, pw],
            **extra,
        )

    return rule


def global_avg_pool2d(
    b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    """``GlobalAvgPool2D``: ``GlobalAveragePool`` then ``Flatten``."""
    pooled = b.unique(f"{name}/pooled")
    b.node("GlobalAveragePool", inputs, pooled, pooled)
    # GlobalAveragePool keeps (N, C, 1, 1); the layer returns (N, C).
    b.node("Flatten", [pooled], out, name, axis=1)


def flatten(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Flatten``: ``Flatten(axis=1)``, or an ``Identity`` of an already flat input."""
    if call.inputs[0].ndim == 2:
        b.node("Identity", inputs, out, name)
    else:
        b.node("Flatten", inputs, out, name, axis=1)


def batch_norm(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``BatchNorm``: ``BatchNormalization`` with the running statistics (inference)."""
    layer = call.layer
    channels = call.inputs[0].engine_shape[1]
    if layer.affine:
        scale, shift = b.weight(layer, "weight"), b.weight(layer, "bias")
    else:
        # ONNX requires scale and bias; identity values keep the layer's math.
        scale = b.constant(f"{name}/unit_scale", np.ones(channels, np.float32))
        shift = b.constant(f"{name}/zero_shift", np.zeros(channels, np.float32))
    operands = [
        inputs[0],
        scale,
        shift,
        b.weight(layer, "running_mean"),
        b.weight(layer, "running_var"),
    ]
    # ONNX's momentum weighs the running value, gometal's (as torch's) the batch value.
    b.node(
        "BatchNormalization",
        operands,
        out,
        name,
        epsilon=layer.eps,
        momentum=1.0 - layer.momentum,
    )


def fold(op_type: str) -> OnnxRule:
    """A rule folding two or more inputs with a broadcasting binary operator."""

    def rule(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
        acc = inputs[0]
        for i, other in enumerate(inputs[1:], start=1):
            last = i == len(inputs) - 1
            target = out if last else b.unique(f"{name}/partial_{i}")
            b.node(op_type, [acc, other], target, name if last else target)
            acc = target

    return rule


def identity(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Dropout``: an ``Identity``, as torch exports dropout in eval mode."""
    b.node("Identity", inputs, out, name)
