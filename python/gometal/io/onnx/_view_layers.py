"""Layers for the importer's views (see ``_views``) and for attention written as
primitive nodes: moving axes into order, taking one index of an axis, the product of
two run-time tensors, and causal attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from ...nn.layers.base import EmitContext, Layer
from ...nn.layers.registry import register_layer


@register_layer
class OnnxRelayout(Layer):
    """A transpose by ``perm`` (if any), then a reshape to ``shape`` (if any).

    Args:
        perm: the permutation, or ``None``.
        shape: the engine shape after it (symbols in order), or ``None``.
        name: an explicit layer name.

    Example:
        >>> y = OnnxRelayout([0, 2, 1, 3], [-1, 4, 5, 8])(x)  # doctest: +SKIP
    """

    kind = "onnx_relayout"

    def __init__(
        self, perm: Sequence[int] | None, shape: Sequence[int] | None, name: str | None = None
    ):
        super().__init__(name)
        self.perm = None if perm is None else [int(p) for p in perm]
        self.shape = None if shape is None else [int(d) for d in shape]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "perm": self.perm, "shape": self.shape}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        if self.perm is not None and self.perm != sorted(self.perm):
            x = op(g, "transpose", x, perm=self.perm)
        if self.shape is not None:
            x = op(g, "reshape", x, shape=self.shape)
        return x


@register_layer
class OnnxTake(Layer):
    """Index ``index`` of axis ``axis``, the axis removed (ONNX ``Gather`` of a scalar).

    Args:
        axis: the axis (non-negative).
        index: the index (non-negative).
        name: an explicit layer name.

    Example:
        >>> q = OnnxTake(2, 0)(qkv)  # doctest: +SKIP
    """

    kind = "onnx_take"

    def __init__(self, axis: int, index: int, name: str | None = None):
        super().__init__(name)
        self.axis, self.index = int(axis), int(index)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "index": self.index}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        part = op(g, "slice", x, axis=self.axis, start=self.index, end=self.index + 1)
        shape = list(g.shape(part))
        del shape[self.axis]
        return op(g, "reshape", part, shape=shape)


@register_layer
class OnnxSliceAxis(Layer):
    """Indices ``start`` to ``end`` of axis ``axis`` (ONNX ``Slice`` of a view's axis).

    Args:
        axis: the axis (non-negative).
        start: the first index kept.
        end: one past the last index kept.
        name: an explicit layer name.

    Example:
        >>> k = OnnxSliceAxis(0, 1, 2)(qkv)  # doctest: +SKIP
    """

    kind = "onnx_slice_axis"

    def __init__(self, axis: int, start: int, end: int, name: str | None = None):
        super().__init__(name)
        self.axis, self.start, self.end = int(axis), int(start), int(end)

    def get_config(self) -> dict[str, Any]:
        config = {"axis": self.axis, "start": self.start, "end": self.end}
        return {**super().get_config(), **config}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "slice", inputs[0], axis=self.axis, start=self.start, end=self.end)


@register_layer
class OnnxBatchMatMul(Layer):
    """``a @ b`` of two run-time tensors (rank >= 2, leading axes broadcast).

    Example:
        >>> scores = OnnxBatchMatMul()([q, k_t])  # doctest: +SKIP
    """

    kind = "onnx_batch_matmul"
    num_inputs = 2

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "matmul", inputs[0], inputs[1])


@register_layer
class OnnxAttention(Layer):
    """``softmax(q k^T scale + causal mask) v`` of ``(N, H, T, D)`` inputs, fused.

    The importer uses it where a causal mask is built from a run-time sequence length,
    which no constant can hold.

    Args:
        causal: mask the keys after each query.
        scale: the factor of the scores (the exported graph scales q and k itself: 1).
        name: an explicit layer name.

    Example:
        >>> out = OnnxAttention(True, 1.0)([q, k, v])  # doctest: +SKIP
    """

    kind = "onnx_attention"
    num_inputs = 3

    def __init__(self, causal: bool = True, scale: float = 1.0, name: str | None = None):
        super().__init__(name)
        self.causal, self.scale = bool(causal), float(scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "causal": self.causal, "scale": self.scale}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "attention", *inputs, causal=self.causal, scale=self.scale)
