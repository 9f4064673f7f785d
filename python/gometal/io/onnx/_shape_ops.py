"""Importer handlers for shape arithmetic (``Shape``, ``Gather``, ``Slice``, ``Unsqueeze``,
``Squeeze``, integer ``Concat`` and ``Add``/``Sub``/``Mul``/``Div``) and ``ReduceMean``.

Integer tensors computed from shapes are evaluated at import with ``_shape_values``; a
result without the batch size is an ordinary constant, one holding it is kept as a
``ShapeValue`` until a ``Reshape`` consumes it. ``Unsqueeze`` and ``Squeeze`` of data
are reshapes that keep the batch axis in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...nn.tensor import BATCH, SymbolicTensor
from . import _layers as X
from ._reader import GraphReader, show_shape
from ._shape_values import (
    BATCH_SIZE,
    MAX_SHAPE_ELEMENTS,
    Entry,
    ShapeValue,
    SymbolicSize,
    arithmetic,
    concat,
    from_array,
    gather,
    shape_of,
    slice_array,
    slice_value,
    squeeze,
    unsqueeze,
)
from ._views import onnx_dims


def normalized_axes(axes: list[int], rank: int, what: str) -> list[int]:
    """``axes`` made non-negative and sorted, or ``ValueError`` naming ``what``.

    Example:
        >>> normalized_axes([-1, 0], 3, "axes")
        [0, 2]
    """
    normalized = [a + rank if a < 0 else a for a in axes]
    if any(not 0 <= a < rank for a in normalized) or len(set(normalized)) != len(normalized):
        raise ValueError(f"{what} {axes} must be distinct axes in [-{rank}, {rank})")
    return sorted(normalized)


class ShapeOperators(GraphReader):
    """The handlers for shape arithmetic and ``ReduceMean`` (see the module docstring)."""

    # -- operands ---------------------------------------------------------------------------
    def is_integer_operand(self, name: str) -> bool:
        """Whether ``name`` is an integer tensor known at import (a shape or a constant)."""
        if name in self.shape_values:
            return True
        return name in self.consts and self.consts[name].dtype.kind in "iu"

    def shape_operand(self, name: str, what: str) -> ShapeValue:
        """Input ``name`` as a ``ShapeValue``, or an error naming ``what`` it is."""
        if name in self.shape_values:
            return self.shape_values[name]
        if name not in self.consts:
            self.fail(
                f"{what} ({name!r}) must be known at import: a constant or computed from "
                "shapes, not from the input's values"
            )
        return from_array(self.consts[name], f"{what} ({name!r})")

    def int_list(self, name: str, what: str) -> list[int]:
        """The constant integer scalar or vector ``name`` as a list."""
        value = self.shape_operand(name, what)
        if value.has_batch:
            self.fail(f"{what} ({name!r}) must be a constant, got {value}")
        return [int(e) for e in value.entries]  # type: ignore[arg-type]

    def _axes(self, node: Any, attrs: dict[str, Any], what: str) -> list[int] | None:
        # Axes moved from an attribute to input 1 in opset 13 (Squeeze, Unsqueeze).
        if self.opset < 13:
            axes = None if "axes" not in attrs else [int(a) for a in attrs["axes"]]
        else:
            name = node.input[1] if len(node.input) > 1 else ""
            axes = self.int_list(name, what) if name else None
        # Unsqueeze adds one axis per entry: the bound keeps the result's rank sane.
        if axes is not None and len(axes) > MAX_SHAPE_ELEMENTS:
            self.fail(f"{what} has {len(axes)} entries; at most {MAX_SHAPE_ELEMENTS} are supported")
        return axes

    # -- shape arithmetic -------------------------------------------------------------------
    def op_shape(self, node: Any, attrs: dict[str, Any]) -> ShapeValue:
        """ONNX ``Shape`` (with ``start``/``end`` since opset 15)."""
        name = node.input[0]
        if name in self.views:
            engine_shape: Sequence[Entry] = onnx_dims(
                self.values[name].engine_shape, self.views[name]
            )
        elif name in self.values:
            engine_shape = self.values[name].engine_shape
        elif name in self.shape_values:
            value = self.shape_values[name]
            engine_shape = () if value.scalar else (len(value.entries),)
        else:
            engine_shape = tuple(self.const(name, "Shape input").shape)
        end = attrs.get("end")
        return shape_of(engine_shape, int(attrs.get("start", 0)), None if end is None else int(end))

    def op_gather(self, node: Any, attrs: dict[str, Any]) -> ShapeValue:
        """ONNX ``Gather`` of a shape tensor with constant indices."""
        if not self.is_integer_operand(node.input[0]):
            self.fail(
                "Gather is supported on shape tensors (computed from Shape) only, not on float data"
            )
        if int(attrs.get("axis", 0)) not in (0, -1):
            self.fail(f"axis {attrs['axis']} is out of range for a 1-D shape tensor")
        data = self.shape_operand(node.input[0], "Gather data")
        return gather(data, self.shape_operand(node.input[1], "Gather indices"))

    def op_slice(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Slice`` of a shape tensor or of a constant, such as a learned position
        table cut to a fixed length (bounds as attributes before opset 10)."""
        data = self.consts.get(node.input[0])
        folded = data is not None and (data.dtype.kind not in "iu" or data.ndim > 1)
        if not folded and not self.is_integer_operand(node.input[0]):
            self.fail(
                "Slice is supported on shape tensors (computed from Shape) and constants "
                "only, not on run-time data"
            )
        starts, ends, axes, steps = self.slice_bounds(node, attrs)
        if folded:
            assert data is not None
            return slice_array(data, starts, ends, axes, steps)
        value = self.shape_operand(node.input[0], "Slice data")
        return slice_value(value, starts, ends, axes, steps)

    def slice_bounds(self, node: Any, attrs: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
        """A ``Slice`` node's constant starts, ends, axes and steps (``None`` if absent)."""
        if self.opset < 10:
            starts, ends = list(attrs.get("starts", [])), list(attrs.get("ends", []))
            return starts, ends, attrs.get("axes"), None
        bounds = []
        for index, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
            name = node.input[index] if len(node.input) > index else ""
            bounds.append(self.int_list(name, f"Slice {what}") if name else None)
        starts, ends, axes, steps = bounds
        return starts or [], ends or [], axes, steps

    def integer_binary(self, node: Any) -> ShapeValue:
        """``Add``/``Sub``/``Mul``/``Div`` of two integer tensors known at import."""
        a = self.shape_operand(node.input[0], "operand A")
        b = self.shape_operand(node.input[1], "operand B")
        result = arithmetic(node.op_type, a, b, symbolic=True)
        for entry in result.entries:
            # A product of run-time sizes is valid only as long as views keep it apart;
            # errors about it name where it was made.
            if isinstance(entry, SymbolicSize) and entry is not BATCH_SIZE:
                self.product_origins.setdefault(entry, self.where())
        return result

    def integer_concat(self, node: Any, attrs: dict[str, Any]) -> ShapeValue:
        """``Concat`` of integer tensors known at import."""
        parts = [self.shape_operand(name, "a Concat input") for name in node.input if name]
        return concat(parts, int(attrs.get("axis", 0)))

    # -- Unsqueeze and Squeeze ---------------------------------------------------------------
    def op_unsqueeze(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Unsqueeze`` of a shape tensor, a float constant or data."""
        name, axes = node.input[0], self._axes(node, attrs, "Unsqueeze axes")
        if axes is None:
            self.fail("axes are required")
        if self.is_integer_operand(name):
            return unsqueeze(self.shape_operand(name, "Unsqueeze input"), axes)
        if name in self.consts:
            value = self.float_const(name, "Unsqueeze input")
            out_axes = normalized_axes(axes, value.ndim + len(axes), "axes")
            return np.expand_dims(value, tuple(out_axes))
        x = self.runtime(name)
        shape = list(x.engine_shape)
        out_axes = normalized_axes(axes, len(shape) + len(axes), "axes")
        if shape[:1] == [BATCH] and out_axes[0] == 0:
            self.fail(f"axes {axes} would move the dynamic batch axis from dimension 0")
        for axis in out_axes:
            shape.insert(axis, 1)
        return self.reshape_to(x, shape)

    def op_squeeze(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Squeeze`` of a shape tensor, a float constant or data."""
        name, axes = node.input[0], self._axes(node, attrs, "Squeeze axes")
        if self.is_integer_operand(name):
            return squeeze(self.shape_operand(name, "Squeeze input"), axes)
        if name in self.consts:
            value = self.float_const(name, "Squeeze input")
            dropped = None if axes is None else tuple(normalized_axes(axes, value.ndim, "axes"))
            return np.squeeze(value, dropped)
        x = self.runtime(name)
        shape = list(x.engine_shape)
        dynamic = shape[:1] == [BATCH]
        if axes is None:
            if dynamic:
                # ONNX would squeeze the batch too whenever it is 1 at run time.
                self.fail("Squeeze without axes is ambiguous with a dynamic batch; give axes")
            dropped_axes = [axis for axis, size in enumerate(shape) if size == 1]
        else:
            dropped_axes = normalized_axes(axes, len(shape), "axes")
        if dynamic and 0 in dropped_axes:
            self.fail(f"axes {axes} would squeeze the dynamic batch axis")
        if any(shape[axis] != 1 for axis in dropped_axes):
            self.fail(f"axes {axes} must have size 1 in {show_shape(shape)}")
        target = [size for axis, size in enumerate(shape) if axis not in dropped_axes]
        return self.reshape_to(x, target)

    # -- ReduceMean -------------------------------------------------------------------------
    def op_reduce_mean(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``ReduceMean``: axes as an attribute before opset 18, as input 1 since."""
        x = self.runtime(node.input[0])
        rank = len(x.engine_shape)
        if self.opset < 18:
            axes = None if "axes" not in attrs else [int(a) for a in attrs["axes"]]
        else:
            name = node.input[1] if len(node.input) > 1 else ""
            axes = self.int_list(name, "ReduceMean axes") if name else None
            if not axes and int(attrs.get("noop_with_empty_axes", 0)):
                return self.call(X.OnnxUnary("identity", name=self.layer_name()), x)
        # No axes (or an empty list) averages over all of them.
        reduced = normalized_axes(axes, rank, "axes") if axes else list(range(rank))
        if x.engine_shape[:1] == (BATCH,) and 0 in reduced:
            self.fail(
                f"the mean over axes {reduced} includes the dynamic batch axis 0, which mixes "
                "the samples of a batch; not supported"
            )
        keepdims = bool(int(attrs.get("keepdims", 1)))
        return self.call(X.OnnxReduceMean(reduced, keepdims, name=self.layer_name()), x)
