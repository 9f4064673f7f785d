"""Elementwise activations and softmax, each composed of engine primitives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import const, gelu, op, softmax
from . import onnx_rules
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


@register_layer(onnx=onnx_rules.single_node("Relu"))
class ReLU(Layer):
    """``max(x, 0)``."""

    kind = "relu"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "relu", inputs[0])


@register_layer(onnx=onnx_rules.single_node("LeakyRelu", alpha=lambda layer: layer.negative_slope))
class LeakyReLU(Layer):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (as ``torch.nn.LeakyReLU``).

    Args:
        negative_slope: the slope for negative inputs.
        name: an explicit layer name.
    """

    kind = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, name: str | None = None):
        super().__init__(name)
        self.negative_slope = float(negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "negative_slope": self.negative_slope}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        positive = op(g, "greater", x, const(g, 0.0))
        return op(g, "select", positive, x, op(g, "mul", x, const(g, self.negative_slope)))


@register_layer(onnx=onnx_rules.single_node("Elu", alpha=lambda layer: layer.alpha))
class ELU(Layer):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (as ``torch.nn.ELU``).

    Args:
        alpha: the saturation value for negative inputs.
        name: an explicit layer name.
    """

    kind = "elu"

    def __init__(self, alpha: float = 1.0, name: str | None = None):
        super().__init__(name)
        self.alpha = float(alpha)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        # exp of min(x, 0) so the unselected branch cannot overflow into inf * 0 = NaN gradients.
        expm1 = op(g, "sub", op(g, "exp", op(g, "minimum", x, const(g, 0.0))), const(g, 1.0))
        negative_part = op(g, "mul", expm1, const(g, self.alpha))
        # Selecting on x <= 0 (not x > 0) sends a NaN down the x branch, value and gradient,
        # as torch's ELU does.
        return op(g, "select", op(g, "greater_equal", const(g, 0.0), x), negative_part, x)


@register_layer(onnx=onnx_rules.single_node("Sigmoid"))
class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``."""

    kind = "sigmoid"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "sigmoid", inputs[0])


@register_layer(onnx=onnx_rules.single_node("Tanh"))
class Tanh(Layer):
    """Hyperbolic tangent."""

    kind = "tanh"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "tanh", inputs[0])


@register_layer(onnx=onnx_rules.swish)
class Swish(Layer):
    """``x * sigmoid(x)`` (SiLU)."""

    kind = "swish"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        return op(g, "mul", x, op(g, "sigmoid", x))


@register_layer(onnx=onnx_rules.gelu)
class GELU(Layer):
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, PyTorch's default form."""

    kind = "gelu"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return gelu(ctx.graph, inputs[0])


@register_layer(onnx=onnx_rules.single_node("Softmax", axis=lambda layer: layer.axis))
class Softmax(Layer):
    """Softmax along ``axis`` (numerically stable).

    Args:
        axis: the axis to normalize over; ``-1`` is the last.
        name: an explicit layer name.
    """

    kind = "softmax"

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"Softmax axis must be an int, got {axis!r}")
        self.axis = axis

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        axis = self.axis + len(shape) if self.axis < 0 else self.axis
        if axis == 0:
            raise ValueError("Softmax over the batch axis (axis 0) is not supported")
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return softmax(ctx.graph, inputs[0], self.axis)
