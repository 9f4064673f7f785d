"""Layers that change shape without changing values."""

from __future__ import annotations

from collections.abc import Sequence

from ...graph.composites import op
from ..tensor import BATCH
from . import onnx_rules
from .base import EmitContext, Layer
from .registry import register_layer


@register_layer(onnx=onnx_rules.flatten)
class Flatten(Layer):
    """Reshapes ``(batch, d1, d2, ...)`` to ``(batch, d1 * d2 * ...)``."""

    kind = "flatten"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        shape = tuple(g.shape(x))
        features = 1
        for d in shape[1:]:
            features *= d
        if len(shape) == 2:
            return x
        return op(g, "reshape", x, shape=[BATCH, features])
