"""Layers that change shape without changing values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from ..tensor import BATCH
from . import onnx_rules_reshaping
from ._spatial import show_shape
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return value


@register_layer(onnx=onnx_rules_reshaping.flatten_dims)
class Flatten(Layer):
    """Merges axes ``start_dim`` to ``end_dim`` into one, as ``torch.nn.Flatten``.

    Axis 0 is the batch, so the default ``Flatten()`` reshapes ``(batch, d1, d2, ...)`` to
    ``(batch, d1 * d2 * ...)``; ``Flatten(2)`` turns ``(batch, C, H, W)`` into ``(batch, C,
    H * W)``. Negative axes count from the end; the batch axis cannot be merged.

    Args:
        start_dim: the first axis merged (>= 1 once counted from the front).
        end_dim: the last axis merged.
        name: an explicit layer name.

    Example:
        >>> Flatten(2)(gm.Input((3, 4, 5))).shape  # doctest: +SKIP
        (None, 3, 20)
    """

    kind = "flatten"

    def __init__(self, start_dim: int = 1, end_dim: int = -1, name: str | None = None):
        super().__init__(name)
        self.start_dim = _check_int(start_dim, "Flatten start_dim")
        self.end_dim = _check_int(end_dim, "Flatten end_dim")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        # The defaults stay out, so configs written before the arguments existed match.
        if self.start_dim != 1:
            config["start_dim"] = self.start_dim
        if self.end_dim != -1:
            config["end_dim"] = self.end_dim
        return config

    def merged_axes(self, rank: int) -> tuple[int, int]:
        """``(start, end)`` for an input of ``rank`` axes, counted from the front.

        Raises:
            ValueError: an axis out of range, the batch axis, or ``end < start``.
        """
        start = self.start_dim + rank if self.start_dim < 0 else self.start_dim
        end = self.end_dim + rank if self.end_dim < 0 else self.end_dim
        for what, value, axis in (
            ("start_dim", self.start_dim, start),
            ("end_dim", self.end_dim, end),
        ):
            if not 0 <= axis < rank:
                raise ValueError(f"{what}={value} is out of range for an input of rank {rank}")
        if start == 0:
            raise ValueError(
                f"start_dim={self.start_dim} would merge the batch axis 0; use start_dim >= 1"
            )
        if end < start:
            raise ValueError(
                f"end_dim={self.end_dim} (axis {end}) comes before start_dim={self.start_dim} "
                f"(axis {start})"
            )
        return start, end

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        self.merged_axes(len(shape))
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        shape = tuple(g.shape(x))
        start, end = self.merged_axes(len(shape))
        if start == end:
            return x
        merged = 1
        for d in shape[start : end + 1]:
            merged *= d
        return op(g, "reshape", x, shape=[*shape[:start], merged, *shape[end + 1 :]])

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}{name})"


@register_layer(onnx=onnx_rules_reshaping.reshape)
class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (the batch axis excluded), as Keras's
    ``Reshape``; one entry may be ``-1``, inferred from the sample's size.

    Args:
        target_shape: the new shape of one sample.
        name: an explicit layer name.

    Example:
        >>> Reshape((4, -1))(gm.Input((2, 8))).shape  # doctest: +SKIP
        (None, 4, 4)
    """

    kind = "reshape"

    def __init__(self, target_shape: Sequence[int], name: str | None = None):
        super().__init__(name)
        try:
            dims = tuple(target_shape)
        except TypeError:
            raise TypeError(
                f"Reshape target_shape must be a tuple of ints, got {target_shape!r}"
            ) from None
        if (
            not dims
            or any(
                isinstance(d, bool) or not isinstance(d, int) or (d < 1 and d != -1) for d in dims
            )
            or dims.count(-1) > 1
        ):
            raise ValueError(
                "Reshape target_shape must be a non-empty tuple of positive ints with at most "
                f"one -1 (the batch axis excluded), got {target_shape!r}"
            )
        self.target_shape = dims

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}

    def sample_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output's sample shape for ``input_shape`` (batch first), ``-1`` resolved.

        Raises:
            ValueError: the sizes do not match.
        """
        if BATCH in input_shape[1:] or any(d < 0 for d in input_shape[1:]):
            raise ValueError(
                f"Reshape needs fixed sample sizes, got shape {show_shape(input_shape)}"
            )
        size = 1
        for d in input_shape[1:]:
            size *= d
        known = 1
        for d in self.target_shape:
            known *= d if d != -1 else 1
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(
                    f"cannot reshape samples of shape {input_shape[1:]} ({size} values) to "
                    f"{self.target_shape}: {size} is not a multiple of {known}"
                )
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if known != size:
            raise ValueError(
                f"cannot reshape samples of shape {input_shape[1:]} ({size} values) to "
                f"{self.target_shape} ({known} values)"
            )
        return self.target_shape

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        self.sample_shape(input_shapes[0])
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        target = self.sample_shape(tuple(g.shape(x)))
        return op(g, "reshape", x, shape=[BATCH, *target])

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"Reshape({self.target_shape}{name})"


@register_layer(onnx=onnx_rules_reshaping.permute)
class Permute(Layer):
    """Permutes the axes of each sample, as Keras's ``Permute``: ``dims`` numbers the
    sample's axes from 1 (the batch axis 0 stays first), so ``Permute((2, 1))`` swaps the
    two axes of ``(batch, steps, features)``.

    Args:
        dims: a permutation of ``1 .. rank - 1``.
        name: an explicit layer name.

    Example:
        >>> Permute((2, 1))(gm.Input((3, 5))).shape  # doctest: +SKIP
        (None, 5, 3)
    """

    kind = "permute"

    def __init__(self, dims: Sequence[int], name: str | None = None):
        super().__init__(name)
        try:
            values = tuple(dims)
        except TypeError:
            raise TypeError(f"Permute dims must be a tuple of ints, got {dims!r}") from None
        if any(isinstance(d, bool) or not isinstance(d, int) for d in values) or sorted(
            values
        ) != list(range(1, len(values) + 1)):
            raise ValueError(
                f"Permute dims must be a permutation of 1 .. n (the batch axis 0 excluded), "
                f"got {dims!r}"
            )
        self.dims = values

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dims": list(self.dims)}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) != len(self.dims) + 1:
            raise ValueError(
                f"dims {self.dims} permute {len(self.dims)} axes, but the input "
                f"{show_shape(shape)} has {len(shape) - 1} besides the batch"
            )
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "transpose", inputs[0], perm=[0, *self.dims])

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"Permute({self.dims}{name})"
