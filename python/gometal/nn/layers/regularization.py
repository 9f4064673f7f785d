"""Regularization layers."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

from ...graph.composites import const, op
from . import onnx_rules
from .base import EmitContext, Layer
from .registry import register_layer


@register_layer(onnx=onnx_rules.identity)
class Dropout(Layer):
    """Zeroes each element with probability ``rate`` while training, scaling the rest by
    ``1 / (1 - rate)`` (inverted dropout, as ``torch.nn.Dropout``); identity otherwise.

    The mask comes from the engine's counter-based generator, which advances every step.

    Args:
        rate: the drop probability, in ``[0, 1)``.
        name: an explicit layer name.

    Example:
        >>> h = Dropout(0.5)(h)  # doctest: +SKIP
    """

    kind = "dropout"

    def __init__(self, rate: float, name: str | None = None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, Real) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        x = inputs[0]
        if not ctx.training or self.rate == 0.0:
            return x
        g = ctx.graph
        keep = op(g, "greater_equal", op(g, "random_uniform", x), const(g, self.rate))
        scaled = op(g, "mul", x, const(g, 1.0 / (1.0 - self.rate)))
        return op(g, "mul", scaled, keep)

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"Dropout({self.rate:g}{name})"
