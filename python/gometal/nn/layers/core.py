"""Fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from ..initializers import fan_in_uniform
from . import onnx_rules
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


@register_layer(onnx=onnx_rules.dense)
class Dense(Layer):
    """``y = x @ weight.T + bias``, with PyTorch's ``nn.Linear`` layout and initialization.

    ``weight`` has shape ``(units, in_features)``; weight and bias are drawn from
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))``.

    Args:
        units: the number of output features.
        use_bias: whether to add a bias vector.
        name: an explicit layer name.

    Example:
        >>> h = Dense(128)(gm.Input((64,)))  # doctest: +SKIP
        >>> h.shape
        (None, 128)
    """

    kind = "dense"

    def __init__(self, units: int, use_bias: bool = True, name: str | None = None):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"Dense units must be a positive int, got {units!r}")
        self.units = units
        self.use_bias = bool(use_bias)

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) != 2:
            shown = tuple(None if d == -1 else d for d in shape)
            raise ValueError(
                f"Dense expects 2-D input (batch, features), got shape {shown}; "
                "add a Flatten layer first"
            )
        in_features = shape[1]
        init = fan_in_uniform(in_features)
        specs = [WeightSpec("weight", (self.units, in_features), init)]
        if self.use_bias:
            specs.append(WeightSpec("bias", (self.units,), init))
        return specs

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        out = op(g, "matmul", inputs[0], ctx.variable("weight"), transpose_b=True)
        if self.use_bias:
            out = op(g, "add", out, ctx.variable("bias"))
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias}

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"Dense({self.units}, use_bias={self.use_bias}{name})"
