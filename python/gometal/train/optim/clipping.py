"""Gradient clipping as graph nodes, with ``torch.nn.utils``' formulas."""

from __future__ import annotations

from collections.abc import Mapping

from ... import _core
from ...graph.composites import const, op, reduce_sum

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
NORM_EPSILON = 1e-6


def global_norm(g: _core.Graph, grads: Mapping[str, int]) -> int:
    """The L2 norm of all gradients taken as one vector.

    Args:
        g: the graph to extend.
        grads: name -> gradient node id.

    Returns:
        A float32 scalar node.

    Example:
        >>> norm = global_norm(g, {"w": grad_w, "b": grad_b})  # doctest: +SKIP
    """
    total = None
    for grad in grads.values():
        squares = reduce_sum(g, op(g, "square", grad))
        total = squares if total is None else op(g, "add", total, squares)
    if total is None:
        raise ValueError("global_norm needs at least one gradient")
    return op(g, "sqrt", total)


def clip_by_global_norm(
    g: _core.Graph, grads: Mapping[str, int], max_norm: float
) -> dict[str, int]:
    """Scales every gradient by ``min(1, max_norm / (norm + 1e-6))``, ``norm`` the global norm.

    Args:
        g: the graph to extend.
        grads: name -> gradient node id.
        max_norm: the largest global norm let through (> 0).

    Returns:
        name -> clipped gradient node id.

    Example:
        >>> clipped = clip_by_global_norm(g, grads, 1.0)  # doctest: +SKIP
    """
    scale = op(
        g, "div", const(g, max_norm), op(g, "add", global_norm(g, grads), const(g, NORM_EPSILON))
    )
    scale = op(g, "minimum", scale, const(g, 1.0))
    return {name: op(g, "mul", grad, scale) for name, grad in grads.items()}


def clip_by_value(g: _core.Graph, grads: Mapping[str, int], limit: float) -> dict[str, int]:
    """Clamps every gradient element to ``[-limit, limit]``.

    Args:
        g: the graph to extend.
        grads: name -> gradient node id.
        limit: the bound (> 0).

    Returns:
        name -> clipped gradient node id.

    Example:
        >>> clipped = clip_by_value(g, grads, 0.5)  # doctest: +SKIP
    """
    low, high = const(g, -limit), const(g, limit)
    return {
        name: op(g, "minimum", op(g, "maximum", grad, low), high) for name, grad in grads.items()
    }


def clip_gradients(
    g: _core.Graph,
    grads: Mapping[str, int],
    max_norm: float | None,
    max_value: float | None,
) -> dict[str, int]:
    """Applies norm clipping, then value clipping, each only when its bound is set.

    Args:
        g: the graph to extend.
        grads: name -> gradient node id.
        max_norm: bound of the global L2 norm, or ``None``.
        max_value: bound of each element's magnitude, or ``None``.

    Returns:
        name -> gradient node id (the input nodes when nothing is clipped).

    Example:
        >>> grads = clip_gradients(g, grads, max_norm=1.0, max_value=None)  # doctest: +SKIP
    """
    out = dict(grads)
    if max_norm is not None:
        out = clip_by_global_norm(g, out, max_norm)
    if max_value is not None:
        out = clip_by_value(g, out, max_value)
    return out
