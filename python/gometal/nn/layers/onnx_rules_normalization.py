"""ONNX export rules of ``LayerNorm``, ``GroupNorm`` and ``InstanceNorm2D``.

``LayerNormalization`` exists from opset 17, and ``GroupNormalization`` took per-channel
scales only in opset 21, so group norm is written for every opset as torch exports it:
an ``InstanceNormalization`` over each sample's groups, then the per-channel affine.
"""

from __future__ import annotations

import numpy as np

from ..tensor import LayerCall
from .registry import OnnxGraph


def _per_channel(b: OnnxGraph, vector: str, channels: int, rank: int, name: str) -> str:
    if rank == 2:
        return vector
    shape = b.int_constant(f"{name}/shape", [channels] + [1] * (rank - 2))
    shaped = b.unique(name)
    b.node("Reshape", [vector, shape], shaped, shaped)
    return shaped


def layer_norm(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``LayerNorm``: ``LayerNormalization`` from opset 17, else its decomposition."""
    layer = call.layer
    axes = layer.axes
    if b.opset >= 17:
        if layer.elementwise_affine:
            scale = b.weight(layer, "weight")
        else:
            scale = b.constant(f"{name}/unit_scale", np.ones(layer.normalized_shape, np.float32))
        operands = [inputs[0], scale]
        if layer.elementwise_affine and layer.bias:
            operands.append(b.weight(layer, "bias"))
        b.node("LayerNormalization", operands, out, name, axis=axes[0], epsilon=layer.eps)
        return
    mean = b.unique(f"{name}/mean")
    b.node("ReduceMean", inputs, mean, mean, axes=axes, keepdims=1)
    centered = b.unique(f"{name}/centered")
    b.node("Sub", [inputs[0], mean], centered, centered)
    square = b.unique(f"{name}/square")
    b.node("Mul", [centered, centered], square, square)
    variance = b.unique(f"{name}/variance")
    b.node("ReduceMean", [square], variance, variance, axes=axes, keepdims=1)
    shifted = b.unique(f"{name}/variance_eps")
    b.node("Add", [variance, b.constant(f"{name}/eps", np.float32(layer.eps))], shifted, shifted)
    deviation = b.unique(f"{name}/deviation")
    b.node("Sqrt", [shifted], deviation, deviation)
    if not layer.elementwise_affine:
        b.node("Div", [centered, deviation], out, name)
        return
    normalized = b.unique(f"{name}/normalized")
    b.node("Div", [centered, deviation], normalized, normalized)
    if not layer.bias:
        b.node("Mul", [normalized, b.weight(layer, "weight")], out, name)
        return
    scaled = b.unique(f"{name}/scaled")
    b.node("Mul", [normalized, b.weight(layer, "weight")], scaled, scaled)
    b.node("Add", [scaled, b.weight(layer, "bias")], out, name)


def _affine(
    b: OnnxGraph, call: LayerCall, normalized: str, out: str, name: str, channels: int
) -> None:
    layer, rank = call.layer, call.inputs[0].ndim
    weight = _per_channel(b, b.weight(layer, "weight"), channels, rank, f"{name}/weight")
    bias = _per_channel(b, b.weight(layer, "bias"), channels, rank, f"{name}/bias")
    scaled = b.unique(f"{name}/scaled")
    b.node("Mul", [normalized, weight], scaled, scaled)
    b.node("Add", [scaled, bias], out, name)


def group_norm(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``GroupNorm``: ``Reshape`` to ``(N, G, -1)``, ``InstanceNormalization``, ``Reshape``
    back, then the per-channel ``Mul`` and ``Add``."""
    layer, shape = call.layer, call.inputs[0].engine_shape
    groups = layer.num_groups
    grouped = b.unique(f"{name}/grouped")
    b.node(
        "Reshape", [inputs[0], b.int_constant(f"{name}/groups", [0, groups, -1])], grouped, grouped
    )
    unit = b.constant(f"{name}/unit_scale", np.ones(groups, np.float32))
    zero = b.constant(f"{name}/zero_shift", np.zeros(groups, np.float32))
    normalized = b.unique(f"{name}/normalized")
    b.node(
        "InstanceNormalization", [grouped, unit, zero], normalized, normalized, epsilon=layer.eps
    )
    target = b.int_constant(f"{name}/input_shape", [0, *shape[1:]])
    if not layer.affine:
        b.node("Reshape", [normalized, target], out, name)
        return
    restored = b.unique(f"{name}/restored")
    b.node("Reshape", [normalized, target], restored, restored)
    _affine(b, call, restored, out, name, layer.num_channels)


def instance_norm(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``InstanceNorm2D``: ``InstanceNormalization`` (unit scale, zero shift without affine)."""
    layer = call.layer
    channels = layer.num_features
    if layer.affine:
        scale, shift = b.weight(layer, "weight"), b.weight(layer, "bias")
    else:
        scale = b.constant(f"{name}/unit_scale", np.ones(channels, np.float32))
        shift = b.constant(f"{name}/zero_shift", np.zeros(channels, np.float32))
    b.node("InstanceNormalization", [inputs[0], scale, shift], out, name, epsilon=layer.eps)
