"""Importer handlers for the small tensors exporters compute from shapes and constants
(``Cast``, ``Sqrt``, ``Mod``, ``Expand``, ``Trilu``, ``Equal``, ``Where``): attention's
scale ``1 / sqrt(head_dim)`` and its causal mask.

With fixed sizes they are evaluated at import (bounded like any constant). A causal
mask built from a run-time sequence length has no constant value: it is kept as a
``Triangle`` until it is added to attention scores (a ``MatMul`` of two run-time
tensors), and the ``Softmax`` and ``MatMul`` after it import as one fused causal
attention. Used any other way, it is an error naming the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import _layers as X
from ._safety import MAX_TENSOR_BYTES
from ._shape_values import Entry
from ._view_layers import OnnxAttention, OnnxRelayout
from ._view_ops import ViewOperators
from ._views import View, onnx_dims

MASK_OPS = frozenset({"Cast", "Sqrt", "Mod", "Expand", "Trilu", "Equal", "Where"})
_USAGE = (
    "is a mask built from a run-time sequence length; gometal supports it only as the "
    "additive causal mask of attention scores (MatMul, Add, Softmax, MatMul)"
)
# An additive mask value at or below this hides a key (torch writes -inf or float32 min).
_HIDDEN = -1e30


@dataclass(frozen=True)
class Triangle:
    """A ``(rows, cols)`` matrix of run-time size: ``inside`` on and below diagonal ``k``
    (above it when ``lower`` is false), ``outside`` elsewhere.

    Attributes:
        rows: the run-time number of rows.
        cols: the run-time number of columns.
        lower: whether ``inside`` is the lower triangle.
        k: the diagonal (ONNX ``Trilu``'s ``k``).
        inside: the value in the triangle.
        outside: the value elsewhere.
        triangular: whether ``Trilu`` made it (else it is one value everywhere).
    """

    rows: Entry
    cols: Entry
    lower: bool
    k: int
    inside: float
    outside: float
    triangular: bool = False
    usage: str = _USAGE


@dataclass(frozen=True)
class CausalScores:
    """Attention scores (a ``MatMul`` output) with the causal mask added; ``probabilities``
    once a ``Softmax`` over the keys has run."""

    scores: str
    probabilities: bool = False
    usage: str = _USAGE


@dataclass(frozen=True)
class ZeroFill:
    """Zeros of a shape that holds a run-time size (``ConstantOfShape`` or ``Expand`` of 0,
    and layout operators of it): read only as the initial state of a recurrent node, where
    it means no initial state.

    Attributes:
        entries: the shape, where known (``()`` after a layout operator).
    """

    entries: tuple[Any, ...]
    usage: str = (
        "is a tensor of zeros of a run-time shape; gometal reads it only as the initial "
        "state of an RNN, GRU or LSTM node (torch's dynamo exporter writes nn.RNN as one "
        "MatMul per step: export it with dynamo=False for an ONNX RNN node)"
    )


def bounded(shape: tuple[int, ...], itemsize: int, where: str) -> None:
    count = math.prod(shape)
    if count * itemsize > MAX_TENSOR_BYTES:
        raise ValueError(
            f"{where}: the result of shape {shape} would take {count * itemsize} bytes, more "
            f"than the {MAX_TENSOR_BYTES} allowed"
        )


def _causal_values(mask: Triangle) -> tuple[float, float] | None:
    """The values on and below the diagonal and above it, for a triangle split there
    (``tril(k=0)``, or ``triu(k=1)`` as ``generate_square_subsequent_mask`` writes)."""
    if mask.triangular and mask.lower and mask.k == 0:
        return mask.inside, mask.outside
    if mask.triangular and not mask.lower and mask.k == 1:
        return mask.outside, mask.inside
    return None


class MaskOperators(ViewOperators):
    """The handlers for constants computed at import and run-time causal masks."""

    def _folded(self, name: str) -> Any:
        """A constant input as an array, a ``Triangle``, or ``None`` for run-time data."""
        if name in self.deferred:
            return self.deferred[name]
        if name in self.shape_values:
            return None
        return self.consts.get(name)

    def _scalar(self, value: Any, what: str) -> float:
        if not isinstance(value, np.ndarray) or value.size != 1:
            self.fail(f"{what} must be a constant scalar to combine with a run-time mask")
        return value.reshape(()).item()

    def op_cast(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Cast``: of constants and shape tensors at import; float data stays."""
        import onnx

        to = int(attrs.get("to", 0))
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))
        except (KeyError, ValueError, TypeError):
            self.fail(f"unknown target type to={to}")
        name = node.input[0]
        if name in self.shape_values:
            value = self.shape_values[name]
            if dtype.kind in "iu":
                return value
            self.fail(f"cannot cast the run-time size {value} to {dtype}")
        folded = self._folded(name)
        if isinstance(folded, np.ndarray):
            return folded.astype(dtype)
        if isinstance(folded, Triangle):
            return replace(
                folded, inside=dtype.type(folded.inside), outside=dtype.type(folded.outside)
            )
        if dtype != np.float32:
            self.fail(f"run-time data casts only to float32 (to=1), got to={to}")
        if name in self.views:
            return View(self.values[name], self.views[name])
        return self.runtime(name)

    def op_sqrt(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Sqrt``: at import for a constant, else elementwise."""
        folded = self._folded(node.input[0])
        if isinstance(folded, np.ndarray):
            return np.sqrt(folded.astype(np.float32) if folded.dtype.kind != "f" else folded)
        return self.call(X.OnnxUnary("sqrt", name=self.layer_name()), self.runtime(node.input[0]))

    def op_mod(self, node: Any, attrs: dict[str, Any]) -> np.ndarray:
        """ONNX ``Mod`` of constants (``fmod=0``: the divisor's sign, as Python's ``%``)."""
        a, b = (self.const(name, f"Mod input {name!r}") for name in node.input[:2])
        if a.dtype != b.dtype:
            self.fail(f"Mod needs inputs of one type, got {a.dtype} and {b.dtype}")
        if b.dtype.kind in "iu" and (b == 0).any():
            self.fail("Mod divides by zero")
        bounded(np.broadcast_shapes(a.shape, b.shape), a.itemsize, self.where())
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.fmod(a, b) if int(attrs.get("fmod", 0)) else np.mod(a, b)

    def op_expand(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Expand`` of a constant to a shape known at import or holding run-time
        lengths (a ``Triangle`` of one value)."""
        value = self._folded(node.input[0])
        if not isinstance(value, np.ndarray):
            self.fail("Expand is supported on constants only")
        shape = self.shape_operand(node.input[1], "Expand shape")
        if shape.has_batch:
            if value.size == 1 and len(shape.entries) != 2 and not value.any():
                return ZeroFill(tuple(shape.entries))
            if len(shape.entries) != 2 or value.size != 1:
                self.fail(f"a run-time shape {shape} is supported for a 2-D mask of one value")
            rows, cols = shape.entries
            v = value.reshape(()).item()
            return Triangle(rows, cols, True, 0, v, v)
        target = tuple(int(e) for e in shape.entries)  # type: ignore[arg-type]
        try:
            full = np.broadcast_shapes(value.shape, target)
        except ValueError:
            self.fail(f"cannot expand shape {value.shape} to {target}")
        bounded(full, value.itemsize, self.where())
        return np.ascontiguousarray(np.broadcast_to(value, full))

    def op_trilu(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Trilu`` of a constant or of a one-value run-time mask."""
        value = self._folded(node.input[0])
        k_name = node.input[1] if len(node.input) > 1 else ""
        k = int(self.int_list(k_name, "Trilu k")[0]) if k_name else 0
        lower = not int(attrs.get("upper", 1))
        if isinstance(value, np.ndarray):
            if value.ndim < 2:
                self.fail(f"input must have rank >= 2, got shape {value.shape}")
            return np.tril(value, k) if lower else np.triu(value, k)
        if isinstance(value, Triangle) and not value.triangular:
            zero = type(value.inside)(0)
            return replace(value, lower=lower, k=k, outside=zero, triangular=True)
        self.fail("Trilu is supported on constants and on masks built from shapes")
        raise AssertionError  # unreachable

    def op_equal(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Equal`` of constants, or of a run-time mask and a constant scalar."""
        a, b = (self._folded(name) for name in node.input[:2])
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            bounded(np.broadcast_shapes(a.shape, b.shape), 1, self.where())
            return np.equal(a, b)
        if isinstance(b, Triangle):
            a, b = b, a
        if isinstance(a, Triangle):
            c = self._scalar(b, "the other operand")
            return replace(a, inside=bool(a.inside == c), outside=bool(a.outside == c))
        self.fail("Equal is supported on constants and on masks built from shapes")
        raise AssertionError  # unreachable

    def op_where(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Where`` of constants, or choosing constant scalars by a run-time mask."""
        cond, a, b = (self._folded(name) for name in node.input[:3])
        if all(isinstance(v, np.ndarray) for v in (cond, a, b)):
            bounded(np.broadcast_shapes(cond.shape, a.shape, b.shape), 8, self.where())
            return np.where(cond.astype(bool), a, b)
        if isinstance(cond, Triangle):
            x, y = self._scalar(a, "input X"), self._scalar(b, "input Y")
            return replace(cond, inside=x if cond.inside else y, outside=x if cond.outside else y)
        self.fail("Where is supported on constants and on masks built from shapes")
        raise AssertionError  # unreachable

    # -- attention with a run-time causal mask --------------------------------------------------
    def deferred_handler(self, node: Any) -> Any:
        """The handler for a node that reads a ``Triangle`` or ``CausalScores``."""
        kind = node.op_type
        zeros = [n for n in node.input if isinstance(self.deferred.get(n), ZeroFill)]
        if zeros and kind in ("Slice", "Transpose", "Reshape", "Squeeze", "Unsqueeze"):
            return lambda owner, n, a: ZeroFill(())
        if kind in ("Cast", "Trilu", "Equal", "Where"):
            return self._HANDLERS[kind]
        if zeros:
            self.fail(f"{zeros[0]!r} {self.deferred[zeros[0]].usage}")
        if kind == "Add":
            return MaskOperators.masked_scores
        if kind == "Softmax":
            return MaskOperators.masked_softmax
        if kind == "MatMul":
            return MaskOperators.causal_attention
        used = next(name for name in node.input if name in self.deferred)
        self.fail(f"{used!r} {self.deferred[used].usage}")
        raise AssertionError  # unreachable

    def masked_scores(self, node: Any, attrs: dict[str, Any]) -> CausalScores:
        """``Add`` of attention scores and a run-time causal mask."""
        names = list(node.input[:2])
        mask_name = next(name for name in names if name in self.deferred)
        scores = next(name for name in names if name != mask_name)
        mask = self.deferred[mask_name]
        values = _causal_values(mask) if isinstance(mask, Triangle) else None
        causal = values is not None and values[0] == 0 and values[1] <= _HIDDEN
        if not causal or scores not in self.products:
            self.fail(
                f"{mask_name!r} {_USAGE}; here it is added to {scores!r} (a causal mask "
                "adds 0 on and below the diagonal and -inf above it, to a MatMul's scores)"
            )
        view = self.view_of(scores)
        dims = onnx_dims(view.tensor.engine_shape, view.groups)
        if [mask.rows, mask.cols] != dims[-2:]:
            self.fail(f"the mask ({mask.rows}, {mask.cols}) does not match the scores {dims}")
        return CausalScores(scores)

    def masked_softmax(self, node: Any, attrs: dict[str, Any]) -> CausalScores:
        """``Softmax`` over the keys of masked scores."""
        scores = self.deferred[node.input[0]]
        if not isinstance(scores, CausalScores) or scores.probabilities:
            self.fail(f"{node.input[0]!r} {_USAGE}")
        if int(attrs.get("axis", -1)) not in (-1, 3) or self.opset < 13:
            self.fail("the softmax of masked attention scores must run over the last axis")
        return replace(scores, probabilities=True)

    def causal_attention(self, node: Any, attrs: dict[str, Any]) -> View:
        """``MatMul`` of masked attention probabilities and the values: one fused causal
        attention of the scores' two operands and the values."""
        probabilities = self.deferred.get(node.input[0])
        if not isinstance(probabilities, CausalScores) or not probabilities.probabilities:
            self.fail(f"{node.input[0]!r} {_USAGE}")
        q, k_transposed, lead, scale = self.products[probabilities.scores]
        values = self.view_of(node.input[1])
        if len(q.engine_shape) != 4 or len(values.groups) != 4:
            self.fail("causal attention with a run-time length needs (N, H, T, D) operands")
        perm = [0, 1, 3, 2]
        k = self.call(
            OnnxRelayout(perm, None, name=self.name(f"{self.node.name}_keys")), k_transposed
        )
        arranged = self.arranged_operand(values, "V").tensor
        out = self.call(OnnxAttention(True, scale, name=self.layer_name()), [q, k, arranged])
        return View(out, (*lead, (2,), (3,)))

    def track_scores(self, node: Any) -> None:
        """Attention scores times (or over) a constant scalar stay scores, with the scale."""
        if node.op_type not in ("Mul", "Div") or len(node.input) < 2:
            return
        a, b = node.input[:2]
        if node.op_type == "Mul" and b in self.products:
            a, b = b, a
        factor = self.consts.get(b)
        if a not in self.products or factor is None or factor.size != 1:
            return
        value = float(factor.reshape(()))
        if node.op_type == "Div":
            if value == 0:
                return
            value = 1.0 / value
        q, k, lead, scale = self.products[a]
        self.products[node.output[0]] = (q, k, lead, scale * value)

    def float_fold(self, node: Any) -> np.ndarray | None:
        """``Add``/``Sub``/``Mul``/``Div`` of two float constants at import, else ``None``."""
        a, b = (self.consts.get(name) for name in node.input[:2])
        if a is None or b is None or "f" not in (a.dtype.kind, b.dtype.kind):
            return None
        bounded(np.broadcast_shapes(a.shape, b.shape), 4, self.where())
        ops = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
        return ops[node.op_type](a.astype(np.float32), b.astype(np.float32)).astype(np.float32)
