"""Tensor expressions: Python operators and ``gm.ops`` functions over graph nodes.

A ``TensorExpression`` stands for one tensor of a graph being built. ``GraphTensor``
appends engine primitives to a ``_core.Graph``; other subclasses (the ONNX export of a
``Lambda`` layer) write the same operations elsewhere. A user's function written with
``+ - * /`` and ``gm.ops`` runs unchanged on any of them, so one function is both the
layer's computation and its export.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _core
from .composites import const, op, softmax

UNARY = ("exp", "log", "sqrt", "abs", "neg", "tanh", "sigmoid", "relu", "erf", "square")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow")
REDUCTIONS = ("sum", "mean", "max")


class TensorExpression:
    """One tensor of a graph being built; subclasses say where the operations go."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape (``-1`` for the batch)."""
        raise NotImplementedError

    def unary(self, kind: str) -> TensorExpression:
        """Applies an elementwise function from ``UNARY``."""
        raise NotImplementedError

    def binary(self, kind: str, other: Any, reverse: bool = False) -> TensorExpression:
        """Applies a broadcasting function from ``BINARY`` (``other`` may be a number)."""
        raise NotImplementedError

    def reduce(self, kind: str, axes: Sequence[int], keepdims: bool) -> TensorExpression:
        """Reduces over ``axes`` (all when empty) with a function from ``REDUCTIONS``."""
        raise NotImplementedError

    def reshape(self, shape: Sequence[int]) -> TensorExpression:
        """Reshapes (``-1`` first keeps the batch)."""
        raise NotImplementedError

    def transpose(self, perm: Sequence[int]) -> TensorExpression:
        """Permutes the axes."""
        raise NotImplementedError

    def softmax(self, axis: int) -> TensorExpression:
        """Softmax along ``axis``."""
        raise NotImplementedError

    def __add__(self, other: Any) -> TensorExpression:
        return self.binary("add", other)

    def __radd__(self, other: Any) -> TensorExpression:
        return self.binary("add", other, reverse=True)

    def __sub__(self, other: Any) -> TensorExpression:
        return self.binary("sub", other)

    def __rsub__(self, other: Any) -> TensorExpression:
        return self.binary("sub", other, reverse=True)

    def __mul__(self, other: Any) -> TensorExpression:
        return self.binary("mul", other)

    def __rmul__(self, other: Any) -> TensorExpression:
        return self.binary("mul", other, reverse=True)

    def __truediv__(self, other: Any) -> TensorExpression:
        return self.binary("div", other)

    def __rtruediv__(self, other: Any) -> TensorExpression:
        return self.binary("div", other, reverse=True)

    def __pow__(self, other: Any) -> TensorExpression:
        return self.binary("pow", other)

    def __neg__(self) -> TensorExpression:
        return self.unary("neg")


def check_kind(kind: str, allowed: Sequence[str], what: str) -> None:
    """Raises ``ValueError`` unless ``kind`` is one of ``allowed``."""
    if kind not in allowed:
        raise ValueError(f"unknown {what} {kind!r}; expected one of {list(allowed)}")


def number(value: Any, what: str) -> float:
    """``value`` as a float, or ``TypeError`` naming ``what`` and the value's type."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} takes tensors and numbers, got {type(value).__name__} ({value!r})")
    return float(value)


class GraphTensor(TensorExpression):
    """A node of an engine graph (``_core.Graph``) as a tensor expression.

    Args:
        graph: the graph being built.
        node: the node's id.

    Example:
        >>> y = GraphTensor(g, x) * 2.0 + 1.0  # doctest: +SKIP
        >>> y.node  # doctest: +SKIP
        5
    """

    def __init__(self, graph: _core.Graph, node: int):
        self.graph = graph
        self.node = int(node)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.graph.shape(self.node))

    def _wrap(self, node: int) -> GraphTensor:
        return GraphTensor(self.graph, node)

    def _operand(self, other: Any) -> int:
        if isinstance(other, GraphTensor):
            if other.graph is not self.graph:
                raise ValueError("tensors from different graphs cannot be combined")
            return other.node
        return const(self.graph, number(other, "a tensor operation"))

    def unary(self, kind: str) -> GraphTensor:
        check_kind(kind, UNARY, "elementwise function")
        return self._wrap(op(self.graph, kind, self.node))

    def binary(self, kind: str, other: Any, reverse: bool = False) -> GraphTensor:
        check_kind(kind, BINARY, "binary function")
        a, b = self.node, self._operand(other)
        if reverse:
            a, b = b, a
        return self._wrap(op(self.graph, kind, a, b))

    def reduce(self, kind: str, axes: Sequence[int], keepdims: bool) -> GraphTensor:
        check_kind(kind, REDUCTIONS, "reduction")
        node = op(self.graph, kind, self.node, axes=[int(a) for a in axes], keepdims=keepdims)
        return self._wrap(node)

    def reshape(self, shape: Sequence[int]) -> GraphTensor:
        return self._wrap(op(self.graph, "reshape", self.node, shape=[int(d) for d in shape]))

    def transpose(self, perm: Sequence[int]) -> GraphTensor:
        return self._wrap(op(self.graph, "transpose", self.node, perm=[int(p) for p in perm]))

    def softmax(self, axis: int) -> GraphTensor:
        return self._wrap(softmax(self.graph, self.node, int(axis)))
