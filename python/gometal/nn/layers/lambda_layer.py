"""``Lambda``: a layer whose computation is a Python function of tensor expressions.

The function receives its input as a ``TensorExpression`` and composes ``gm.ops``
functions and ``+ - * / **`` on it; the same function writes the engine graph and, at
export, the ONNX graph. A model file stores the function by a registered name: every
``gm.ops`` function is registered under its own name, and ``register_function`` adds
a user's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...graph.expressions import GraphTensor, TensorExpression
from . import onnx_rules_reshaping
from .base import EmitContext, Layer
from .registry import register_layer

LambdaFunction = Callable[[TensorExpression], TensorExpression]

_FUNCTIONS: dict[str, LambdaFunction] = {}


def register_function(function: LambdaFunction, name: str | None = None) -> LambdaFunction:
    """Registers ``function`` so that a ``Lambda`` using it saves and loads by ``name``.

    Args:
        function: a function of one tensor expression, composed of ``gm.ops`` functions.
        name: the name a model file stores (default: the function's ``__name__``).

    Returns:
        ``function``, so this works as a decorator.

    Raises:
        ValueError: a lambda without a name, or the name taken by another function.

    Example:
        >>> @gm.layers.register_function
        ... def double(x):
        ...     return x * 2.0
    """
    if not callable(function):
        raise TypeError(f"register_function expects a function, got {function!r}")
    key = name if name is not None else getattr(function, "__name__", "")
    if not isinstance(key, str) or not key or key == "<lambda>":
        raise ValueError(
            f"register_function needs a name for {function!r}: pass name='...' or register a "
            "def-function"
        )
    known = _FUNCTIONS.get(key)
    if known is not None and known is not function:
        raise ValueError(f"a different function is already registered as {key!r} ({known!r})")
    _FUNCTIONS[key] = function
    return function


def registered_functions() -> dict[str, LambdaFunction]:
    """The functions a saved ``Lambda`` may name, by name (a copy).

    Example:
        >>> "square" in registered_functions()  # doctest: +SKIP
        True
    """
    return dict(_FUNCTIONS)


def _name_of(function: LambdaFunction) -> str | None:
    for key, known in _FUNCTIONS.items():
        if known is function:
            return key
    return None


@register_layer(onnx=onnx_rules_reshaping.lambda_rule)
class Lambda(Layer):
    """Applies ``function`` to its input, as Keras's ``Lambda``.

    The function takes one tensor expression and returns one, built from ``gm.ops``
    functions (``gm.ops.square``, ``gm.ops.mean`` ...) and ``+ - * / **`` with tensors
    and numbers; its gradient comes from autodiff like any layer's. A model holding a
    ``Lambda`` saves when its function is registered (``gm.ops`` functions are; see
    ``register_function``), and saving refuses an unregistered one by name.

    Args:
        function: the function, or the registered name of one.
        name: an explicit layer name.

    Example:
        >>> h = Lambda(lambda x: gm.ops.relu(x) * 2.0)(gm.Input((4,)))  # doctest: +SKIP
    """

    kind = "lambda"

    def __init__(self, function: LambdaFunction | str, name: str | None = None):
        super().__init__(name)
        if isinstance(function, str):
            if function not in _FUNCTIONS:
                raise ValueError(
                    f"Lambda function {function!r} is not registered; registered: "
                    f"{sorted(_FUNCTIONS)} (gm.layers.register_function adds one)"
                )
            function = _FUNCTIONS[function]
        if not callable(function):
            raise TypeError(
                f"Lambda function must be callable or a registered name, got {function!r}"
            )
        self.function = function

    def get_config(self) -> dict[str, Any]:
        key = _name_of(self.function)
        if key is None:
            label = self.name or "lambda"
            raise ValueError(
                f"layer {label!r} (Lambda) cannot be saved: its function "
                f"{getattr(self.function, '__name__', self.function)!r} is not registered; "
                "register it with gm.layers.register_function(fn, name='...') before saving "
                "and loading"
            )
        return {**super().get_config(), "function": key}

    def apply_function(self, x: TensorExpression) -> TensorExpression:
        """Calls the function on ``x`` and checks that it returned a tensor expression.

        Args:
            x: the input as a tensor expression.

        Returns:
            The function's result.

        Raises:
            TypeError: the function returned something else.
        """
        result = self.function(x)
        if not isinstance(result, TensorExpression):
            raise TypeError(
                f"Lambda function {getattr(self.function, '__name__', self.function)!r} must "
                f"return a tensor built from its input with gm.ops, got {type(result).__name__}"
            )
        return result

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        result = self.apply_function(GraphTensor(ctx.graph, inputs[0]))
        if not isinstance(result, GraphTensor) or result.graph is not ctx.graph:
            raise TypeError("Lambda function must return a tensor of the graph it was given")
        if result.node == inputs[0]:
            # An identity function: a reshape to the same shape gives the output its own node.
            return result.reshape(result.shape).node
        return result.node

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"Lambda({getattr(self.function, '__name__', self.function)!r}{name})"
