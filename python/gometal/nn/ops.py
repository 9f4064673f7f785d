"""Functional helpers: ``concat`` on symbolic tensors, and the tensor functions a
``Lambda`` layer's function (or a custom loss) composes.

The tensor functions take ``TensorExpression`` values (what a ``Lambda`` hands its
function) and numbers; ``+ - * / **`` work on those values too. Each function here is
registered for ``Lambda`` by its name, so ``Lambda(gm.ops.square)`` saves and loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..graph.expressions import TensorExpression
from .layers.lambda_layer import register_function
from .layers.merge import Concatenate
from .tensor import SymbolicTensor

__all__ = [
    "abs",
    "clip",
    "concat",
    "erf",
    "exp",
    "log",
    "max",
    "maximum",
    "mean",
    "minimum",
    "relu",
    "reshape",
    "sigmoid",
    "softmax",
    "sqrt",
    "square",
    "sum",
    "tanh",
    "transpose",
]


def concat(tensors: Sequence[SymbolicTensor], axis: int = -1) -> SymbolicTensor:
    """Concatenates symbolic tensors along ``axis`` (a ``Concatenate`` layer).

    Args:
        tensors: two or more symbolic tensors whose shapes agree outside ``axis``.
        axis: the axis to join along; the batch axis is not allowed.

    Returns:
        The concatenated symbolic tensor.

    Example:
        >>> joined = gm.ops.concat([a, b])  # doctest: +SKIP
    """
    return Concatenate(axis=axis)(list(tensors))


def _tensor(x: Any, function: str) -> TensorExpression:
    if not isinstance(x, TensorExpression):
        raise TypeError(
            f"gm.ops.{function} takes the tensors a Lambda layer (or a custom loss) is given, "
            f"got {type(x).__name__}; to apply it to a model tensor, wrap it: "
            f"gm.layers.Lambda(gm.ops.{function})"
        )
    return x


def _unary(kind: str, formula: str) -> Callable[[TensorExpression], TensorExpression]:
    def function(x: TensorExpression) -> TensorExpression:
        return _tensor(x, kind).unary(kind)

    function.__name__ = function.__qualname__ = kind
    function.__doc__ = (
        f"Elementwise ``{formula}``.\n\n    Args:\n        x: a tensor.\n\n    Returns:\n"
        f"        A tensor of the same shape.\n\n    Example:\n"
        f"        >>> layer = gm.layers.Lambda(gm.ops.{kind})  # doctest: +SKIP\n    "
    )
    return function


exp = _unary("exp", "exp(x)")
log = _unary("log", "log(x)")
sqrt = _unary("sqrt", "sqrt(x)")
abs = _unary("abs", "|x|")
tanh = _unary("tanh", "tanh(x)")
sigmoid = _unary("sigmoid", "1 / (1 + exp(-x))")
relu = _unary("relu", "max(x, 0)")
erf = _unary("erf", "erf(x)")
square = _unary("square", "x * x")


def maximum(a: Any, b: Any) -> TensorExpression:
    """The elementwise maximum, with broadcasting.

    Args:
        a: a tensor (or a number, if ``b`` is a tensor).
        b: a tensor or a number.

    Returns:
        The broadcast maximum.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.maximum(x, 0.5))  # doctest: +SKIP
    """
    if isinstance(a, TensorExpression):
        return a.binary("maximum", b)
    return _tensor(b, "maximum").binary("maximum", a, reverse=True)


def minimum(a: Any, b: Any) -> TensorExpression:
    """The elementwise minimum, with broadcasting (as ``maximum``).

    Args:
        a: a tensor (or a number, if ``b`` is a tensor).
        b: a tensor or a number.

    Returns:
        The broadcast minimum.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.minimum(x, 6.0))  # doctest: +SKIP
    """
    if isinstance(a, TensorExpression):
        return a.binary("minimum", b)
    return _tensor(b, "minimum").binary("minimum", a, reverse=True)


def clip(x: TensorExpression, low: float, high: float) -> TensorExpression:
    """``min(max(x, low), high)``.

    Args:
        x: a tensor.
        low: the lower bound.
        high: the upper bound (>= ``low``).

    Returns:
        The clipped tensor.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.clip(x, 0.0, 6.0))  # doctest: +SKIP
    """
    if not float(low) <= float(high):
        raise ValueError(f"gm.ops.clip needs low <= high, got low={low!r}, high={high!r}")
    return _tensor(x, "clip").binary("maximum", low).binary("minimum", high)


def _axes(axis: int | Sequence[int] | None) -> list[int]:
    if axis is None:
        return []
    if isinstance(axis, int) and not isinstance(axis, bool):
        return [axis]
    return [int(a) for a in axis]


def sum(
    x: TensorExpression, axis: int | Sequence[int] | None = None, keepdims: bool = False
) -> TensorExpression:
    """The sum over ``axis`` (every axis when ``None``), as ``np.sum``.

    Args:
        x: a tensor.
        axis: an axis, a list of them, or ``None``.
        keepdims: keep the reduced axes with size 1.

    Returns:
        The sums.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.sum(x, axis=-1))  # doctest: +SKIP
    """
    return _tensor(x, "sum").reduce("sum", _axes(axis), bool(keepdims))


def mean(
    x: TensorExpression, axis: int | Sequence[int] | None = None, keepdims: bool = False
) -> TensorExpression:
    """The mean over ``axis`` (every axis when ``None``), as ``np.mean``.

    Args:
        x: a tensor.
        axis: an axis, a list of them, or ``None``.
        keepdims: keep the reduced axes with size 1.

    Returns:
        The means.

    Example:
        >>> loss = gm.ops.mean(gm.ops.square(y_pred - y_true))  # doctest: +SKIP
    """
    return _tensor(x, "mean").reduce("mean", _axes(axis), bool(keepdims))


def max(
    x: TensorExpression, axis: int | Sequence[int] | None = None, keepdims: bool = False
) -> TensorExpression:
    """The maximum over ``axis`` (every axis when ``None``), as ``np.max``.

    Args:
        x: a tensor.
        axis: an axis, a list of them, or ``None``.
        keepdims: keep the reduced axes with size 1.

    Returns:
        The maxima.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.max(x, axis=1))  # doctest: +SKIP
    """
    return _tensor(x, "max").reduce("max", _axes(axis), bool(keepdims))


def reshape(x: TensorExpression, shape: Sequence[int]) -> TensorExpression:
    """Reshapes ``x`` to ``shape``, whose first entry ``-1`` is the batch.

    Args:
        x: a tensor.
        shape: the full new shape, batch included.

    Returns:
        The reshaped tensor.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.reshape(x, (-1, 4, 4)))  # doctest: +SKIP
    """
    return _tensor(x, "reshape").reshape(shape)


def transpose(x: TensorExpression, perm: Sequence[int]) -> TensorExpression:
    """Permutes the axes of ``x`` (the batch axis stays first).

    Args:
        x: a tensor.
        perm: the permutation of all axes, batch included.

    Returns:
        The permuted tensor.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.transpose(x, (0, 2, 1)))  # doctest: +SKIP
    """
    return _tensor(x, "transpose").transpose(perm)


def softmax(x: TensorExpression, axis: int = -1) -> TensorExpression:
    """Softmax along ``axis``.

    Args:
        x: a tensor.
        axis: the axis to normalize.

    Returns:
        The probabilities.

    Example:
        >>> layer = gm.layers.Lambda(lambda x: gm.ops.softmax(x * 2.0))  # doctest: +SKIP
    """
    return _tensor(x, "softmax").softmax(axis)


# Lambda layers save these by name.
for _function in (exp, log, sqrt, abs, tanh, sigmoid, relu, erf, square):
    register_function(_function)
