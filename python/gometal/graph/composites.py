"""Composite operations built from engine primitives, shared by layers, losses and metrics.

Each helper appends nodes to a ``_core.Graph`` and returns the id of the result, so the
gradient of a composite is whatever autodiff derives from its primitives.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


def gelu(g: _core.Graph, x: int, approximate: str = "none") -> int:
    """GELU as PyTorch computes it: exact, ``0.5 * x * (1 + erf(x / sqrt(2)))`` (the default),
    or with ``approximate="tanh"``, ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``.

    Args:
        g: the graph to extend.
        x: the input node.
        approximate: ``"none"`` or ``"tanh"``, as ``torch.nn.functional.gelu``.

    Returns:
        The activation's node (its elementwise chain fuses into one kernel).

    Example:
        >>> h = gelu(g, x, approximate="tanh")  # doctest: +SKIP
    """
    if approximate == "none":
        scaled = op(g, "mul", x, const(g, 1.0 / math.sqrt(2.0)))
        gate = op(g, "add", const(g, 1.0), op(g, "erf", scaled))
    elif approximate == "tanh":
        cubic = op(g, "mul", op(g, "mul", op(g, "square", x), x), const(g, 0.044715))
        inner = op(g, "mul", op(g, "add", x, cubic), const(g, math.sqrt(2.0 / math.pi)))
        gate = op(g, "add", const(g, 1.0), op(g, "tanh", inner))
    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return op(g, "mul", op(g, "mul", x, const(g, 0.5)), gate)


def matmul(
    g: _core.Graph, a: int, b: int, transpose_a: bool = False, transpose_b: bool = False
) -> int:
    """Matrix product of the last two axes, as ``torch.matmul`` for operands of rank >= 2:
    leading (batch) axes broadcast, and the gradient sums over the broadcast ones.

    Args:
        g: the graph to extend.
        a: a node of shape (..., M, K) ((..., K, M) with ``transpose_a``).
        b: a node of shape (..., K, N) ((..., N, K) with ``transpose_b``).
        transpose_a: use the transpose of ``a``'s last two axes.
        transpose_b: use the transpose of ``b``'s last two axes.

    Returns:
        The product, of shape broadcast(batch axes) + (M, N).

    Example:
        >>> scores = matmul(g, q, k, transpose_b=True)  # (N, H, T, D) x (N, H, T, D)^T
    """
    return op(g, "matmul", a, b, transpose_a=transpose_a, transpose_b=transpose_b)


def gather(g: _core.Graph, table: int, indices: int) -> int:
    """Rows of ``table`` picked by ``indices`` (an embedding lookup, as
    ``torch.nn.functional.embedding``); the table's gradient is a scatter-add of the rows'
    gradients, without a one-hot matrix.

    Args:
        g: the graph to extend.
        table: a float node of shape (rows, dim).
        indices: an int32 node of any shape (batch, seq, ...); an index outside [0, rows)
            raises ``ValueError`` when the step runs, naming it.

    Returns:
        A node of shape indices' shape + (dim,).

    Example:
        >>> vectors = gather(g, embedding_weight, token_ids)  # doctest: +SKIP
    """
    return op(g, "gather", table, indices)


# torch.nn.functional.rms_norm's eps when it is None: float32's machine epsilon.
FLOAT32_EPSILON = 1.1920928955078125e-07


def layer_norm(
    g: _core.Graph,
    x: int,
    weight: int | None = None,
    bias: int | None = None,
    eps: float = 1e-5,
) -> int:
    """Layer normalization over the last axis, fused (one pass forward, one backward), as
    ``torch.nn.functional.layer_norm(x, (D,), weight, bias, eps)``.

    Args:
        g: the graph to extend.
        x: a float node of shape (..., D), D known.
        weight: an optional node of shape (D,).
        bias: an optional node of shape (D,).
        eps: added to the variance.

    Returns:
        The normalized node, of x's shape.

    Example:
        >>> h = layer_norm(g, x, gamma, beta)  # doctest: +SKIP
    """
    if bias is not None and weight is None:
        # The op takes its bias after a weight: a weight of ones leaves the rows as they are.
        weight = g.constant(np.ones(g.shape(x)[-1], dtype=np.float32))
    inputs = [x] + [node for node in (weight, bias) if node is not None]
    return op(g, "layer_norm", *inputs, eps=float(eps))


def rms_norm(g: _core.Graph, x: int, weight: int | None = None, eps: float | None = None) -> int:
    """RMS normalization over the last axis, fused, as ``torch.nn.functional.rms_norm(x,
    (D,), weight, eps)``: ``x / sqrt(mean(x^2) + eps) * weight``.

    Args:
        g: the graph to extend.
        x: a float node of shape (..., D), D known.
        weight: an optional node of shape (D,).
        eps: added to the mean square; ``None`` is float32's machine epsilon, as torch's.

    Returns:
        The normalized node, of x's shape.

    Example:
        >>> h = rms_norm(g, x, gamma, eps=1e-6)  # doctest: +SKIP
    """
    inputs = [x] + ([weight] if weight is not None else [])
    return op(g, "rms_norm", *inputs, eps=FLOAT32_EPSILON if eps is None else float(eps))


def as_float(g: _core.Graph, x: int) -> int:
    """Casts ``x`` to float32 unless it already is."""
    if g.dtype(x) == "float32":
        return x
    return op(g, "cast", x, dtype="float32")
