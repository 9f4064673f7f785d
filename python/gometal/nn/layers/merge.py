"""Layers that combine several tensors: elementwise sums and products, concatenation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from . import onnx_rules
from .base import EmitContext, Layer
from .registry import register_layer


class _Elementwise(Layer):
    """Folds two or more inputs with one broadcasting binary primitive."""

    num_inputs = None
    primitive = ""

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        out = inputs[0]
        for other in inputs[1:]:
            out = op(ctx.graph, self.primitive, out, other)
        return out


@register_layer(onnx=onnx_rules.fold("Add"))
class Add(_Elementwise):
    """Elementwise sum of two or more tensors (NumPy broadcasting). ``a + b`` is sugar for it.

    Example:
        >>> s = Add()([a, b])  # doctest: +SKIP
    """

    kind = "add"
    primitive = "add"


@register_layer(onnx=onnx_rules.fold("Mul"))
class Multiply(_Elementwise):
    """Elementwise product of two or more tensors (NumPy broadcasting). ``a * b`` is sugar."""

    kind = "multiply"
    primitive = "mul"


@register_layer(onnx=onnx_rules.single_node("Concat", axis=lambda layer: layer.axis))
class Concatenate(Layer):
    """Concatenates two or more tensors along ``axis`` (not the batch axis).

    Args:
        axis: the axis to join along; ``-1`` is the last.
        name: an explicit layer name.

    Example:
        >>> joined = Concatenate()([a, b])  # doctest: +SKIP
    """

    kind = "concatenate"
    num_inputs = None

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"Concatenate axis must be an int, got {axis!r}")
        self.axis = axis

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "concat", *inputs, axis=self.axis)
