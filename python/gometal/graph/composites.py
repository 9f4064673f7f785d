"""Composite operations built from engine primitives, shared by layers, losses and metrics.

Each helper appends nodes to a ``_core.Graph`` and returns the id of the result, so the
gradient of a composite is whatever autodiff derives from its primitives.
"""

from __future__ import annotations

import math
from typing import Any

from .. import _core

# Smallest normal float32: clamping probabilities here keeps log() finite and its
# gradient 1/p bounded, without depending on how the CPU treats denormals.
SMALLEST_NORMAL_FLOAT32 = 1.1754944e-38


def op(g: _core.Graph, name: str, *inputs: int, **attrs: Any) -> int:
    """Appends primitive ``name`` applied to ``inputs`` with keyword ``attrs``.

    Args:
        g: the graph to extend.
        name: a primitive name from the engine contract, e.g. ``"matmul"``.
        *inputs: node ids.
        **attrs: the primitive's attributes.

    Returns:
        The new node id.

    Example:
        >>> h = op(g, "matmul", x, w, transpose_b=True)  # doctest: +SKIP
    """
    return g.op(name, list(inputs), attrs)


def const(g: _core.Graph, value: float) -> int:
    """Returns a float32 scalar constant node (broadcasts against any shape)."""
    return g.constant(float(value))


def reduce_sum(
    g: _core.Graph, x: int, axes: list[int] | None = None, keepdims: bool = False
) -> int:
    """Sums ``x`` over ``axes`` (all axes when ``None``)."""
    return op(g, "sum", x, axes=list(axes or []), keepdims=keepdims)


def reduce_mean(
    g: _core.Graph, x: int, axes: list[int] | None = None, keepdims: bool = False
) -> int:
    """Averages ``x`` over ``axes`` (all axes when ``None``)."""
    return op(g, "mean", x, axes=list(axes or []), keepdims=keepdims)


def log_softmax(g: _core.Graph, z: int, axis: int = -1) -> int:
    """Numerically stable ``z - logsumexp(z)`` along ``axis``.

    The max is shifted out first; it carries no gradient because softmax is shift invariant.
    """
    shift = op(g, "stop_gradient", op(g, "max", z, axes=[axis], keepdims=True))
    shifted = op(g, "sub", z, shift)
    total = reduce_sum(g, op(g, "exp", shifted), [axis], keepdims=True)
    return op(g, "sub", shifted, op(g, "log", total))


def softmax(g: _core.Graph, z: int, axis: int = -1) -> int:
    """Numerically stable softmax of ``z`` along ``axis``."""
    shift = op(g, "stop_gradient", op(g, "max", z, axes=[axis], keepdims=True))
    exps = op(g, "exp", op(g, "sub", z, shift))
    return op(g, "div", exps, reduce_sum(g, exps, [axis], keepdims=True))


def clamped_log(g: _core.Graph, p: int) -> int:
    """``log(max(p, tiny))``: finite for ``p == 0``, like PyTorch's clamp of the log."""
    return op(g, "log", op(g, "maximum", p, const(g, SMALLEST_NORMAL_FLOAT32)))


def gelu(g: _core.Graph, x: int) -> int:
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))`` (PyTorch's default form)."""
    scaled = op(g, "mul", x, const(g, 1.0 / math.sqrt(2.0)))
    gate = op(g, "add", const(g, 1.0), op(g, "erf", scaled))
    return op(g, "mul", op(g, "mul", x, const(g, 0.5)), gate)


def as_float(g: _core.Graph, x: int) -> int:
    """Casts ``x`` to float32 unless it already is."""
    if g.dtype(x) == "float32":
        return x
    return op(g, "cast", x, dtype="float32")
