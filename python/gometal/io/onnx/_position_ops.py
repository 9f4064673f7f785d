"""Importer handlers for a position table cut to a run-time length: ``Slice`` of the first
``T`` rows of a constant ``(max_length, D)`` table, ``T`` read with ``Shape`` from the
sequence, then ``Add`` to that sequence (gometal's own export of a ``PositionalEmbedding``
at a run-time length writes it so).

The rows have no value at import (``T`` is known at run time), so the ``Slice`` is kept as
``TableRows`` until the ``Add``, which becomes one ``PositionalEmbedding``: learned (the
table trainable) when the table is an initializer, sinusoidal when it holds gometal's
sinusoids, else learned with the table frozen. Used any other way, it is an error naming
the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...nn import layers as L
from ...nn.layers.attention_ops import sinusoidal_table
from ...nn.tensor import BATCH, SymbolicTensor
from ._shape_ops import ShapeOperators
from ._shape_values import SymbolicSize
from ._view_ops import ViewOperators

_USAGE = (
    "is the first rows of a table, as many as a run-time sequence length; gometal reads it "
    "only added to that sequence (a position embedding)"
)


@dataclass(frozen=True)
class TableRows:
    """The first ``length`` rows of the constant ``table`` (a position table).

    Attributes:
        table: the constant's name.
        length: the run-time number of rows.
    """

    table: str
    length: SymbolicSize
    usage: str = _USAGE


class PositionOperators(ViewOperators):
    """The handlers for position tables cut to a run-time length."""

    def op_slice_rows(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Slice``: ``TableRows`` for rows 0..T of a float table, else as
        ``ShapeOperators.op_slice``."""
        rows = self._table_rows(node, attrs)
        return rows if rows is not None else ShapeOperators.op_slice(self, node, attrs)

    def _table_rows(self, node: Any, attrs: dict[str, Any]) -> TableRows | None:
        names = list(node.input) + [""] * (5 - len(node.input))
        table = self.consts.get(names[0])
        if self.opset < 10 or table is None or table.dtype.kind != "f" or table.ndim != 2:
            return None
        end = self.shape_values.get(names[2])
        if end is None or len(end.entries) != 1 or not isinstance(end.entries[0], SymbolicSize):
            return None
        length = end.entries[0]
        if length.coefficient != 1 or len(length.symbols) != 1 or BATCH in length.symbols:
            self.fail(f"the rows of a table are cut at {length}; only a sequence length works")
        starts = self.int_list(names[1], "Slice starts")
        axes = self.int_list(names[3], "Slice axes") if names[3] else [0]
        steps = self.int_list(names[4], "Slice steps") if names[4] else [1]
        if starts != [0] or axes not in ([0], [-2]) or steps != [1]:
            self.fail(
                f"a table cut at a run-time length must start at row 0 of axis 0, step 1; got "
                f"starts {starts}, axes {axes}, steps {steps}"
            )
        return TableRows(names[0], length)

    def add_rows(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """``Add`` of a sequence (N, T, D) and ``TableRows`` of T: a ``PositionalEmbedding``."""
        names = list(node.input[:2])
        rows_name = next(name for name in names if isinstance(self.deferred.get(name), TableRows))
        other = next(name for name in names if name != rows_name)
        rows: TableRows = self.deferred[rows_name]
        if other in self.deferred or other in self.consts or other in self.shape_values:
            self.fail(f"{rows_name!r} {_USAGE}")
        x = self.runtime(other)
        table = self.consts[rows.table]
        shape = x.engine_shape
        if len(shape) != 3 or shape[1] != rows.length.symbols[0] or shape[2] != table.shape[1]:
            self.fail(
                f"{rows_name!r} ({rows.length}, {table.shape[1]}) is added to {other!r} of "
                f"shape {shape}; a position table is added to a sequence (N, T, D) of its T"
            )
        max_length, dim = table.shape
        sinusoids = rows.table not in self.parameters and np.allclose(
            table, sinusoidal_table(max_length, dim), rtol=0, atol=1e-6
        )
        kind = "sinusoidal" if sinusoids else "learned"
        layer = L.PositionalEmbedding(max_length, dim, kind=kind, name=self.layer_name())
        if kind == "sinusoidal":
            return self.call(layer, x)
        out = self.call(layer, x, {"weight": table})
        # A constant (not an initializer) stays constant while fine-tuning.
        layer.trainable = rows.table in self.parameters
        return out
