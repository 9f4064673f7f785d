"""A custom loss written as a plain function of symbolic tensors.

``def loss(y_pred, y_true): return gm.ops.mean(gm.ops.square(y_pred - y_true))`` runs on
graph tensors (``gm.ops`` functions and ``+ - * / **``), so it compiles into the
training step like a built-in loss, with its gradient from autodiff. ``register`` names a
function so that trainers using it save and load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .. import _core
from ..graph.expressions import GraphTensor, TensorExpression
from ..nn.tensor import BATCH
from .loss_base import Loss, elements_per_sample
from .metrics import BatchAccuracy, argmax_agreement, one_minus_nmae, threshold_matches

LossFunction = Callable[[Any, Any], Any]
FunctionType = TypeVar("FunctionType", bound=LossFunction)

# How a function loss's accuracy reads its outputs and (float) targets.
ACCURACIES = ("nmae", "argmax", "binary", "binary_logits")
# Names the built-in losses take; a registered function may not shadow them.
RESERVED_NAMES = (
    "function",
    "mse",
    "mae",
    "huber",
    "cross_entropy",
    "sparse_cross_entropy",
    "categorical_cross_entropy",
    "binary_cross_entropy",
    "bce_with_logits",
)

_REGISTERED: dict[str, tuple[LossFunction, str]] = {}


def _check_accuracy(accuracy: Any) -> str:
    if accuracy not in ACCURACIES:
        raise ValueError(
            f"a function loss's accuracy must be one of {list(ACCURACIES)}, got {accuracy!r}"
        )
    return str(accuracy)


def _describe(function: Any) -> str:
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    return repr(name) if name else repr(function)


def register(name: str, accuracy: str = "nmae") -> Callable[[FunctionType], FunctionType]:
    """A decorator naming a loss function, so trainers using it can be saved and loaded.

    Register the function under the same name before loading a checkpoint that uses it.
    The name also works as ``Trainer(loss="name")``.

    Args:
        name: the name saved in checkpoints; not a built-in loss's name.
        accuracy: what the trainer reports as accuracy: ``"nmae"`` (default, the
            regression ``1 - NMAE``), ``"argmax"`` (argmax of outputs against argmax of
            one-hot or probability targets), ``"binary"`` (``output > 0.5`` against
            ``target >= 0.5``) or ``"binary_logits"`` (``output > 0``).

    Returns:
        The decorator; it returns the function unchanged.

    Raises:
        ValueError: an empty or built-in name, a name taken by another function, or an
            unknown accuracy.

    Example:
        >>> @gm.losses.register("mean_fourth_power")
        ... def mean_fourth_power(y_pred, y_true):
        ...     return gm.ops.mean(gm.ops.square(gm.ops.square(y_pred - y_true)))
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"gm.losses.register needs a non-empty name, got {name!r}")
    if name in RESERVED_NAMES:
        raise ValueError(f"gm.losses.register: {name!r} is a built-in loss's name; choose another")
    kind = _check_accuracy(accuracy)

    def decorate(function: FunctionType) -> FunctionType:
        if not callable(function):
            raise TypeError(f"gm.losses.register({name!r}) decorates a function, got {function!r}")
        held = _REGISTERED.get(name)
        if held is not None and _qualified(held[0]) != _qualified(function):
            raise ValueError(
                f"gm.losses.register: the name {name!r} is already taken by the function "
                f"{_describe(held[0])}; choose another name"
            )
        _REGISTERED[name] = (function, kind)
        return function

    return decorate


def _qualified(function: Any) -> tuple[Any, Any]:
    # A function defined again (a module or notebook cell run twice) may take its name back.
    return getattr(function, "__module__", None), getattr(function, "__qualname__", None)


def registered_function(name: str) -> LossFunction | None:
    """The function registered as ``name``, or ``None``."""
    held = _REGISTERED.get(name)
    return None if held is None else held[0]


def registered_names() -> list[str]:
    """The names given with ``gm.losses.register``, in registration order."""
    return list(_REGISTERED)


def _name_of(function: LossFunction) -> str | None:
    for name, (held, _) in _REGISTERED.items():
        if held is function:
            return name
    return None


class FunctionLoss(Loss):
    """A loss given as a function ``loss(y_pred, y_true) -> scalar`` of symbolic tensors.

    The function composes ``gm.ops`` functions and ``+ - * / **``; ``y_pred`` is the
    model's output and ``y_true`` the float targets, of the output's shape. It is traced
    into the training step, so the step stays one native call and autodiff gives its
    gradient. ``Trainer(loss=function)`` (or a dict of them per output) wraps it in this
    class. Saving a trainer needs the function registered (``gm.losses.register``).

    Args:
        function: the function, or the name it was registered under.
        accuracy: how accuracy is reported (see ``register``); ``None`` takes the
            registered one, else ``"nmae"``.

    Raises:
        TypeError: ``function`` is not callable.
        ValueError: an unregistered name, or an unknown accuracy.

    Example:
        >>> def mse(y_pred, y_true):
        ...     return gm.ops.mean(gm.ops.square(y_pred - y_true))
        >>> trainer = gm.Trainer(model, loss=mse)  # doctest: +SKIP
    """

    name = "function"

    def __init__(self, function: LossFunction | str, accuracy: str | None = None):
        registered_accuracy = None
        if isinstance(function, str):
            held = _REGISTERED.get(function)
            if held is None:
                raise ValueError(
                    f"no loss function is registered as {function!r}; registered: "
                    f"{registered_names()} (decorate it with @gm.losses.register({function!r}) "
                    "before loading)"
                )
            function, registered_accuracy = held
        elif not callable(function):
            raise TypeError(f"FunctionLoss takes a function or a registered name, got {function!r}")
        else:
            key = _name_of(function)
            registered_accuracy = None if key is None else _REGISTERED[key][1]
        self.function = function
        self.accuracy_kind = _check_accuracy(accuracy or registered_accuracy or "nmae")
        self.task = {"argmax": "multiclass", "nmae": "regression"}.get(self.accuracy_kind, "binary")

    def trace(self, g: _core.Graph, output: int, target: int) -> int:
        """Calls the function on ``output`` and ``target`` as graph tensors.

        Returns:
            The scalar node it returned.

        Raises:
            ValueError: the function raised, or returned a tensor that is not a scalar.
            TypeError: it returned something other than a tensor of this graph.
        """
        label = _describe(self.function)
        try:
            result = self.function(GraphTensor(g, output), GraphTensor(g, target))
        except Exception as err:
            raise ValueError(
                f"custom loss function {label} raised {type(err).__name__}: {err}"
            ) from err
        if not isinstance(result, GraphTensor) or result.graph is not g:
            kind = (
                "a tensor of another graph"
                if isinstance(result, TensorExpression)
                else (type(result).__name__)
            )
            raise TypeError(
                f"custom loss function {label} must return a scalar tensor built from y_pred "
                f"and y_true with gm.ops (e.g. gm.ops.mean(...)), got {kind}"
            )
        if result.shape != ():
            shape = "(" + ", ".join("N" if d < 0 else str(d) for d in result.shape) + ")"
            raise ValueError(
                f"custom loss function {label} must return a scalar (reduce it, e.g. with "
                f"gm.ops.mean), got a tensor of shape {shape}"
            )
        return result.node

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        return self.trace(g, output, target)

    def per_sample(self, g: _core.Graph, output: int, target: int) -> int:
        raise NotImplementedError(
            f"the custom loss function {_describe(self.function)} gives one value per batch, "
            "not one per sample, so sample or class weights cannot scale it; write it as a "
            "gm.losses.Loss subclass with per_sample() to weigh samples"
        )

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        # Traced once on a scratch graph, so a function that fails does so when the
        # trainer is made, naming the function (and the output, for several outputs).
        g = _core.Graph()
        output = g.input("y_pred", (BATCH, *output_shape), "float32")
        target = g.input("y_true", (BATCH, *output_shape), "float32")
        self.trace(g, output, target)

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        if self.accuracy_kind == "argmax":
            return argmax_agreement(g, output, target)
        if self.accuracy_kind in ("binary", "binary_logits"):
            threshold = 0.5 if self.accuracy_kind == "binary" else 0.0
            return threshold_matches(g, output, target, threshold, elements_per_sample(g, output))
        return one_minus_nmae(g, output, target)

    def get_config(self) -> dict[str, Any]:
        """``{"function": registered name, "accuracy": kind}``.

        Raises:
            TypeError: the function is not registered (it cannot be saved then).
        """
        key = _name_of(self.function)
        if key is None:
            raise TypeError(
                f"cannot save the custom loss function {_describe(self.function)}: it is not "
                "registered; decorate it with @gm.losses.register('some_name') (and register "
                "it the same way before loading)"
            )
        return {"function": key, "accuracy": self.accuracy_kind}

    def __repr__(self) -> str:
        return f"FunctionLoss({_describe(self.function)})"
