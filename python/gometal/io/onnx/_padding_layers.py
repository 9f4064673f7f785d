"""Layers for a key-padding mask given as a model input: choosing one of two values by a
boolean (ONNX ``Where``) and broadcasting run-time data to a larger shape (``Expand``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import const, op
from ...nn.layers.base import EmitContext, Layer
from ...nn.layers.registry import register_layer


@register_layer
class OnnxMaskFill(Layer):
    """``inside`` where the input (a boolean held as 0 or 1) is 1, ``outside`` where it is 0.

    Args:
        inside: the value where the input is 1 (finite: infinities come in clamped).
        outside: the value where the input is 0.
        name: an explicit layer name.

    Example:
        >>> additive = OnnxMaskFill(-1e30, 0.0)(padding)  # doctest: +SKIP
    """

    kind = "onnx_mask_fill"

    def __init__(self, inside: float, outside: float, name: str | None = None):
        super().__init__(name)
        self.inside, self.outside = float(inside), float(outside)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "inside": self.inside, "outside": self.outside}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        # outside + mask * (inside - outside): exact for a 0/1 mask and finite values.
        scaled = op(g, "mul", inputs[0], const(g, self.inside - self.outside))
        return op(g, "add", scaled, const(g, self.outside))


@register_layer
class OnnxBroadcast(Layer):
    """The input broadcast to ``shape`` (engine dims: sizes, or the symbols it holds).

    Args:
        shape: the target engine shape.
        name: an explicit layer name.

    Example:
        >>> y = OnnxBroadcast([-1, 4, 1, 7])(mask)  # doctest: +SKIP
    """

    kind = "onnx_broadcast"

    def __init__(self, shape: Sequence[int], name: str | None = None):
        super().__init__(name)
        self.shape = [int(d) for d in shape]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": self.shape}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "broadcast_to", inputs[0], shape=self.shape)
