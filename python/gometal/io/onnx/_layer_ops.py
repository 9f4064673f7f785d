"""Importer handlers for normalization and activation operators: ``LayerNormalization``,
``GroupNormalization``, ``InstanceNormalization``, ``PRelu``, ``HardSwish``, ``Mish``.

Each maps to the built-in layer computing the same function, with the operator's
constant inputs as the layer's weights (trainable, as any imported weight).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...graph.composites import const, op
from ...nn import layers as L
from ...nn.initializers import Zeros
from ...nn.layers.base import EmitContext, Layer, WeightSpec
from ...nn.layers.registry import register_layer
from ...nn.tensor import SymbolicTensor
from ._reader import GraphReader, show_shape


@register_layer
class OnnxPRelu(Layer):
    """``max(x, 0) + slope * min(x, 0)`` with a trainable ``slope`` of any shape that
    broadcasts against the input as NumPy does (ONNX ``PRelu``).

    Args:
        slope_shape: the slope's shape.
        name: an explicit layer name.

    Example:
        >>> y = OnnxPRelu((5,))(x)  # doctest: +SKIP
    """

    kind = "onnx_prelu"

    def __init__(self, slope_shape: Sequence[int], name: str | None = None):
        super().__init__(name)
        self.slope_shape = tuple(int(d) for d in slope_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "slope_shape": list(self.slope_shape)}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        return [WeightSpec("slope", self.slope_shape, Zeros())]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        negative = op(g, "mul", op(g, "minimum", x, const(g, 0.0)), ctx.variable("slope"))
        return op(g, "add", op(g, "maximum", x, const(g, 0.0)), negative)


class LayerOperators(GraphReader):
    """The normalization and activation handlers (see the module docstring)."""

    def op_layer_norm(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``LayerNormalization`` as ``LayerNorm`` over the axes from ``axis`` on."""
        x = self.runtime(node.input[0])
        shape = x.engine_shape
        axis = int(attrs.get("axis", -1))
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis < len(shape):
            self.fail(f"axis {attrs.get('axis')} is out of range for rank {len(shape)}")
        normalized = tuple(shape[axis:])
        if any(d < 1 for d in normalized):
            self.fail(f"cannot normalize over the dynamic batch axis (input {show_shape(shape)})")
        weights = {"weight": self._broadcast(node.input[1], "Scale", normalized)}
        bias = node.input[2] if len(node.input) > 2 else ""
        if bias:
            weights["bias"] = self._broadcast(bias, "B", normalized)
        layer = L.LayerNorm(
            normalized, float(attrs.get("epsilon", 1e-5)), bias=bool(bias), name=self.layer_name()
        )
        return self.call(layer, x, weights)

    def op_group_norm(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``GroupNormalization``; scales per group (opsets 18 to 20) are repeated
        over each group's channels."""
        x = self.runtime(node.input[0])
        shape = x.engine_shape
        if len(shape) < 3:
            self.fail(f"expects input (N, C, ...) of rank >= 3, got {show_shape(shape)}")
        if "num_groups" not in attrs:
            self.fail("the num_groups attribute is required")
        groups, channels = int(attrs["num_groups"]), shape[1]
        if groups < 1 or channels % groups:
            self.fail(f"num_groups={groups} must divide the {channels} channels")
        weights = {}
        for index, local, what in ((1, "weight", "scale"), (2, "bias", "bias")):
            value = self.float_const(node.input[index], f"GroupNormalization {what}").reshape(-1)
            if value.shape == (groups,) and groups != channels:
                value = np.repeat(value, channels // groups)
            if value.shape != (channels,):
                self.fail(f"{what} has shape {value.shape}; expected ({channels},) or ({groups},)")
            weights[local] = value
        layer = L.GroupNorm(
            groups, channels, float(attrs.get("epsilon", 1e-5)), name=self.layer_name()
        )
        return self.call(layer, x, weights)

    def op_instance_norm(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``InstanceNormalization`` of ``(N, C, H, W)`` as ``InstanceNorm2D(affine=True)``."""
        x = self.runtime(node.input[0])
        shape = x.engine_shape
        if len(shape) not in (3, 4):
            self.fail(
                f"only (N, C, L) and (N, C, H, W) inputs are supported, got {show_shape(shape)}"
            )
        weights = {
            "weight": self.float_const(node.input[1], "InstanceNormalization scale"),
            "bias": self.float_const(node.input[2], "InstanceNormalization B"),
        }
        if len(shape) == 3:
            # (N, C, L) normalizes over L: an image of height L and width 1.
            x = self.reshape_to(x, [*shape, 1])
        eps = float(attrs.get("epsilon", 1e-5))
        layer = L.InstanceNorm2D(shape[1], eps, affine=True, name=self.layer_name())
        out = self.call(layer, x, weights)
        return self.reshape_to(out, list(shape)) if len(shape) == 3 else out

    def op_prelu(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``PRelu``: ``PReLU`` for one slope or one per channel, else ``OnnxPRelu``."""
        x = self.runtime(node.input[0])
        slope = self.float_const(node.input[1], "PRelu slope")
        shape = x.engine_shape
        channels = shape[1] if len(shape) > 1 else 0
        per_channel = (channels, *([1] * (len(shape) - 2)))
        if slope.size == 1 and slope.ndim <= len(shape):
            layer: Any = L.PReLU(1, name=self.layer_name())
        elif len(shape) > 1 and channels > 0 and slope.shape == per_channel:
            layer = L.PReLU(channels, name=self.layer_name())
        else:
            try:
                np.broadcast_shapes(tuple(abs(d) for d in shape), slope.shape)
            except ValueError:
                self.fail(f"slope shape {slope.shape} does not broadcast to {show_shape(shape)}")
            layer = OnnxPRelu(slope.shape, name=self.layer_name())
            return self.call(layer, x, {"slope": slope})
        return self.call(layer, x, {"weight": slope.reshape(-1)})

    def op_activation(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``HardSwish`` and ``Mish``."""
        x = self.runtime(node.input[0])
        cls = L.Hardswish if node.op_type == "HardSwish" else L.Mish
        return self.call(cls(name=self.layer_name()), x)

    def folded_layout(self, node: Any, attrs: dict[str, Any]) -> np.ndarray | None:
        """A ``Transpose`` or ``Reshape`` of a float constant, computed at import (so a
        weight exported as ``Transpose(W)`` stays a weight), or ``None`` for other inputs."""
        data = self.consts.get(node.input[0])
        if data is None or data.dtype.kind != "f":
            return None
        if node.op_type == "Transpose":
            perm = attrs.get("perm")
            return np.ascontiguousarray(np.transpose(data, None if perm is None else list(perm)))
        if self.opset < 5 or len(node.input) < 2 or node.input[1] not in self.consts:
            return None
        shape = [int(d) for d in self.int_list(node.input[1], "Reshape shape")]
        if not int(attrs.get("allowzero", 0)):
            shape = [data.shape[i] if d == 0 and i < data.ndim else d for i, d in enumerate(shape)]
        try:
            return data.reshape(shape)
        except ValueError:
            self.fail(f"cannot reshape the constant of shape {data.shape} to {shape}")
            raise

    def _broadcast(self, name: str, what: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self.float_const(name, f"LayerNormalization {what}")
        try:
            return np.ascontiguousarray(np.broadcast_to(value, shape))
        except ValueError:
            self.fail(f"{what} has shape {value.shape}, which does not broadcast to {shape}")
            raise
