"""Elementwise activations and softmax, each composed of engine primitives."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

from ...graph.composites import const, op, softmax
from ..initializers import Constant
from . import onnx_rules, onnx_rules_activations
from ._spatial import show_shape
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
        # The engine's gelu op, whose gradient is one gelu_grad pass (composites.gelu, its
        # decomposition, is the reference).
        return op(ctx.graph, "gelu", inputs[0])


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


# torch's name for the same function.
SiLU = Swish


@register_layer(onnx=onnx_rules_activations.hardswish)
class Hardswish(Layer):
    """``x * min(max(x + 3, 0), 6) / 6`` (as ``torch.nn.Hardswish``)."""

    kind = "hardswish"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        gate = op(
            g,
            "minimum",
            op(g, "maximum", op(g, "add", x, const(g, 3.0)), const(g, 0.0)),
            const(g, 6.0),
        )
        return op(g, "mul", x, op(g, "mul", gate, const(g, 1.0 / 6.0)))


def softplus(g: Any, x: int) -> int:
    """``log(1 + exp(x))`` as ``max(x, 0) + log(1 + exp(-|x|))``, which cannot overflow."""
    tail = op(g, "log", op(g, "add", const(g, 1.0), op(g, "exp", op(g, "neg", op(g, "abs", x)))))
    return op(g, "add", op(g, "maximum", x, const(g, 0.0)), tail)


@register_layer(onnx=onnx_rules_activations.mish)
class Mish(Layer):
    """``x * tanh(softplus(x))`` (as ``torch.nn.Mish``)."""

    kind = "mish"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        return op(g, "mul", x, op(g, "tanh", softplus(g, x)))


@register_layer(onnx=onnx_rules_activations.prelu)
class PReLU(Layer):
    """``max(x, 0) + weight * min(x, 0)`` with a learned slope (as ``torch.nn.PReLU``).

    ``weight`` has shape ``(num_parameters,)``, initialized to ``init``: one slope shared by
    every value, or one per channel (axis 1, as torch: ``(batch, C)`` or ``(batch, C, ...)``).

    Args:
        num_parameters: 1, or the number of channels of the input.
        init: the initial slope.
        name: an explicit layer name.

    Example:
        >>> h = PReLU(16)(gm.layers.Conv2D(16, 3)(gm.Input((3, 8, 8))))  # doctest: +SKIP
    """

    kind = "prelu"

    def __init__(self, num_parameters: int = 1, init: float = 0.25, name: str | None = None):
        super().__init__(name)
        label = "PReLU" if name is None else f"PReLU '{name}'"
        if (
            isinstance(num_parameters, bool)
            or not isinstance(num_parameters, int)
            or num_parameters < 1
        ):
            raise ValueError(
                f"{label} num_parameters must be a positive int, got {num_parameters!r}"
            )
        if isinstance(init, bool) or not isinstance(init, Real) or not math.isfinite(init):
            raise ValueError(f"{label} init must be a finite number, got {init!r}")
        self.num_parameters = num_parameters
        self.init = float(init)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_parameters": self.num_parameters, "init": self.init}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if self.num_parameters != 1 and (len(shape) < 2 or shape[1] != self.num_parameters):
            raise ValueError(
                f"num_parameters={self.num_parameters} must equal the channels (axis 1) of "
                f"the input, got shape {show_shape(shape)}"
            )
        return [WeightSpec("weight", (self.num_parameters,), Constant(self.init))]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        slope = ctx.variable("weight")
        rank = len(g.shape(x))
        if self.num_parameters == 1:
            slope = op(g, "reshape", slope, shape=[])
        elif rank > 2:
            slope = op(g, "reshape", slope, shape=[self.num_parameters] + [1] * (rank - 2))
        negative = op(g, "mul", op(g, "minimum", x, const(g, 0.0)), slope)
        return op(g, "add", op(g, "maximum", x, const(g, 0.0)), negative)

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"PReLU(num_parameters={self.num_parameters}, init={self.init:g}{name})"
