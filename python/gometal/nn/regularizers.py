"""Weight penalties added to the training loss (Keras's ``kernel_regularizer=``).

A layer given a regularizer emits ``penalty(weight)`` as a scalar node in the training
pass and hands it to ``EmitContext.add_loss``; the training step adds the sum of those
nodes to the loss it minimizes, so the penalty's gradient comes from autodiff like the
rest of the step. As in Keras, ``l2(c)`` is ``c * sum(w ** 2)`` without a factor 1/2: its
gradient ``2 c w`` equals torch's ``weight_decay=2 c`` for plain SGD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from .. import _core
from ..graph.composites import const, op

__all__ = ["L1L2", "Regularizer", "get", "l1", "l1_l2", "l2"]


def _factor(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value < math.inf:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


class Regularizer:
    """A penalty on one weight: ``__call__(graph, weight) -> scalar node``."""

    def __call__(self, g: _core.Graph, weight: int) -> int:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The arguments that rebuild this regularizer, as JSON values."""
        raise NotImplementedError


class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w ** 2)`` (Keras's ``L1L2``).

    Args:
        l1: the factor of the absolute values (>= 0).
        l2: the factor of the squares (>= 0).

    Example:
        >>> L1L2(l1=0.0, l2=1e-4).get_config()
        {'l1': 0.0, 'l2': 0.0001}
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _factor(l1, "regularizer l1")
        self.l2 = _factor(l2, "regularizer l2")

    def __call__(self, g: _core.Graph, weight: int) -> int:
        """Emits the penalty of ``weight`` into ``g``.

        Args:
            g: the graph being built.
            weight: the weight's node id.

        Returns:
            The id of a scalar node.

        Example:
            >>> penalty = l2(1e-4)(g, w)  # doctest: +SKIP
        """
        terms = []
        if self.l1:
            terms.append(
                op(g, "mul", op(g, "sum", op(g, "abs", weight), axes=[]), const(g, self.l1))
            )
        if self.l2:
            squares = op(g, "sum", op(g, "square", weight), axes=[])
            terms.append(op(g, "mul", squares, const(g, self.l2)))
        if not terms:
            return op(g, "mul", op(g, "sum", weight, axes=[]), const(g, 0.0))
        return terms[0] if len(terms) == 1 else op(g, "add", terms[0], terms[1])

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, L1L2) and (self.l1, self.l2) == (other.l1, other.l2)

    def __hash__(self) -> int:
        return hash((self.l1, self.l2))

    def __repr__(self) -> str:
        return f"L1L2(l1={self.l1:g}, l2={self.l2:g})"


def l1(l1: float = 0.01) -> L1L2:
    """``l1 * sum(|w|)``.

    Args:
        l1: the factor (>= 0); Keras's default is 0.01.

    Returns:
        The regularizer.

    Example:
        >>> gm.layers.Dense(10, kernel_regularizer=gm.regularizers.l1(1e-5))  # doctest: +SKIP
    """
    return L1L2(l1=l1)


def l2(l2: float = 0.01) -> L1L2:
    """``l2 * sum(w ** 2)`` (no factor 1/2, as Keras).

    Args:
        l2: the factor (>= 0); Keras's default is 0.01.

    Returns:
        The regularizer.

    Example:
        >>> gm.layers.Dense(10, kernel_regularizer=gm.regularizers.l2(1e-4))  # doctest: +SKIP
    """
    return L1L2(l2=l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``.

    Args:
        l1: the factor of the absolute values (>= 0).
        l2: the factor of the squares (>= 0).

    Returns:
        The regularizer.

    Example:
        >>> reg = gm.regularizers.l1_l2(1e-5, 1e-4)  # doctest: +SKIP
    """
    return L1L2(l1=l1, l2=l2)


def get(value: Any, what: str = "regularizer") -> L1L2 | None:
    """A regularizer from ``None``, a regularizer, or its config dict (as saved).

    Args:
        value: ``None``, an ``L1L2``, or ``{"l1": ..., "l2": ...}``.
        what: how errors name the argument, e.g. ``"Dense kernel_regularizer"``.

    Returns:
        The regularizer, or ``None``.

    Raises:
        TypeError: any other value.

    Example:
        >>> get({"l1": 0.0, "l2": 0.5})
        L1L2(l1=0, l2=0.5)
    """
    if value is None or isinstance(value, L1L2):
        return value
    if isinstance(value, Mapping) and set(value) <= {"l1", "l2"}:
        return L1L2(**value)
    raise TypeError(
        f"{what} must be None or a regularizer (gm.regularizers.l1, l2 or l1_l2), got {value!r}"
    )
