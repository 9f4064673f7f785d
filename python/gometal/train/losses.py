"""Loss functions, emitted as graph nodes; all are mean-reduced like PyTorch's defaults.

Pass a name (``loss="cross_entropy"``), an object (``loss=gm.losses.Huber(delta=2.0)``)
or a plain function of symbolic tensors (``loss=my_loss``, see ``FunctionLoss``). Each
loss also knows what labels it takes, how to turn outputs into probabilities and how to
measure accuracy, so the trainer can build the whole step from it; ``per_sample`` gives
each sample's loss before the batch reduction (see ``Loss``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _core
from ..graph.composites import clamped_log, const, op, reduce_mean
from .loss_base import Loss, elements_per_sample, mean_per_sample
from .loss_functions import FunctionLoss, register, registered_function, registered_names
from .losses_cross_entropy import CategoricalCrossEntropy, CrossEntropy, SparseCrossEntropy
from .metrics import BatchAccuracy, threshold_matches

__all__ = [
    "BCEWithLogits",
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "CrossEntropy",
    "FunctionLoss",
    "Huber",
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCrossEntropy",
    "available",
    "get",
    "loss_class",
    "register",
]


class ElementwiseLoss(Loss):
    """A loss that is the mean of a value computed per output element."""

    def elementwise(self, g: _core.Graph, output: int, target: int) -> int:
        """Emits the loss of every element, with the output's shape."""
        raise NotImplementedError

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        return reduce_mean(g, self.elementwise(g, output, target))

    def per_sample(self, g: _core.Graph, output: int, target: int) -> int:
        return mean_per_sample(g, self.elementwise(g, output, target))


# -- regression ------------------------------------------------------------------------------


class MeanSquaredError(ElementwiseLoss):
    """``mean((output - target) ** 2)`` (``torch.nn.MSELoss``).

    Accuracy for regression losses is go-metal's ``max(0, 1 - NMAE)`` per batch, with
    ``NMAE = sum|output - target| / sum|target|`` (see ``gometal.metrics.one_minus_nmae``).
    """

    name = "mse"

    def elementwise(self, g: _core.Graph, output: int, target: int) -> int:
        return op(g, "square", op(g, "sub", output, target))


class MeanAbsoluteError(ElementwiseLoss):
    """``mean(|output - target|)`` (``torch.nn.L1Loss``). Accuracy: ``1 - NMAE``."""

    name = "mae"

    def elementwise(self, g: _core.Graph, output: int, target: int) -> int:
        return op(g, "abs", op(g, "sub", output, target))


class Huber(ElementwiseLoss):
    """``torch.nn.HuberLoss``: ``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - delta/2)``.

    Args:
        delta: where the loss turns from quadratic to linear; must be positive.

    Example:
        >>> trainer = gm.Trainer(model, loss=gm.losses.Huber(delta=2.0))  # doctest: +SKIP
    """

    name = "huber"

    def __init__(self, delta: float = 1.0):
        if not delta > 0:
            raise ValueError(f"Huber delta must be positive, got {delta}")
        self.delta = float(delta)

    def elementwise(self, g: _core.Graph, output: int, target: int) -> int:
        diff = op(g, "sub", output, target)
        magnitude = op(g, "abs", diff)
        quadratic = op(g, "mul", op(g, "square", diff), const(g, 0.5))
        linear = op(
            g, "mul", op(g, "sub", magnitude, const(g, 0.5 * self.delta)), const(g, self.delta)
        )
        inside = op(g, "less", magnitude, const(g, self.delta))
        return op(g, "select", inside, quadratic, linear)

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta}

    def __repr__(self) -> str:
        return f"Huber(delta={self.delta:g})"


# -- binary ----------------------------------------------------------------------------------


def _in_unit_interval(g: _core.Graph, value: int, what: str) -> int:
    """A check node that fails the step, as torch's BCELoss does, when ``value`` leaves
    [0, 1] (NaN included)."""
    return op(
        g,
        "check_range",
        value,
        low=0.0,
        high=1.0,
        label=BinaryCrossEntropy.name,
        message=f"all elements of {what} should be between 0 and 1",
    )


class BinaryCrossEntropy(Loss):
    """``torch.nn.BCELoss`` on probabilities: ``-(t log p + (1 - t) log(1 - p))``.

    The log is clamped so that ``p`` of exactly 0 or 1 gives a finite loss. Targets have the
    output's shape (``(N,)`` is accepted for an ``(N, 1)`` output). Accuracy: ``p > 0.5``
    against ``target >= 0.5`` (per element for several outputs). As torch's, a prediction
    or target outside ``[0, 1]`` (or NaN) is an error: the step raises ``ValueError``
    naming the value and its index, and changes nothing, so the trainer stays usable.
    """

    name = "binary_cross_entropy"
    task = "binary"

    def _log_likelihood(self, g: _core.Graph, output: int, target: int) -> int:
        one = const(g, 1.0)
        positive = op(g, "mul", target, clamped_log(g, output))
        negative = op(
            g, "mul", op(g, "sub", one, target), clamped_log(g, op(g, "sub", one, output))
        )
        return op(g, "add", positive, negative)

    def _with_checks(self, g: _core.Graph, loss: int, output: int, target: int) -> int:
        # The checks yield 0; adding them makes the loss depend on them, and the engine
        # runs every check before any variable is written.
        checks = op(
            g,
            "add",
            _in_unit_interval(
                g,
                output,
                "the model's outputs (probabilities; end the model "
                "in a sigmoid, or use loss='bce_with_logits' on logits)",
            ),
            _in_unit_interval(g, target, "the targets"),
        )
        return op(g, "add", loss, checks)

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        loss = op(g, "neg", reduce_mean(g, self._log_likelihood(g, output, target)))
        return self._with_checks(g, loss, output, target)

    def per_sample(self, g: _core.Graph, output: int, target: int) -> int:
        per_sample = mean_per_sample(g, self._log_likelihood(g, output, target))
        return self._with_checks(g, op(g, "neg", per_sample), output, target)

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        return threshold_matches(g, output, target, 0.5, elements_per_sample(g, output))

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return output


def _pos_weight(value: Any) -> float | tuple[float, ...] | None:
    """``pos_weight`` checked: ``None``, a number or a sequence of finite numbers >= 0."""
    if value is None:
        return None
    scalar = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if scalar:
        values: list[Any] = [value]
    elif isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        values = list(np.asarray(value, dtype=object).reshape(-1))
        if not values:
            raise ValueError("BCEWithLogits pos_weight must not be empty")
    else:
        raise TypeError(
            f"BCEWithLogits pos_weight must be a number or a sequence of numbers (one per "
            f"output), got {type(value).__name__} ({value!r})"
        )
    checked = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, float, np.integer, np.floating)):
            raise TypeError(f"BCEWithLogits pos_weight must hold numbers, got {item!r}")
        if not math.isfinite(float(item)) or float(item) < 0:
            raise ValueError(
                f"BCEWithLogits pos_weight must be finite and >= 0, got {float(item)!r}"
            )
        checked.append(float(item))
    return checked[0] if scalar else tuple(checked)


class BCEWithLogits(ElementwiseLoss):
    """``torch.nn.BCEWithLogitsLoss`` in the stable form ``max(z, 0) - z t + log(1 + exp(-|z|))``.

    Accuracy: ``logit > 0`` against ``target >= 0.5``.

    Args:
        pos_weight: as torch's: the weight of the positive term, ``-(w t log s(z) + (1 - t)
            log(1 - s(z)))``; a number for every output, or one number per output (the
            last axis), each finite and ``>= 0``. ``None`` (default) weighs both terms 1.

    Example:
        >>> loss = gm.losses.BCEWithLogits(pos_weight=[3.0, 1.0, 0.5])
    """

    name = "bce_with_logits"
    task = "binary"

    def __init__(self, pos_weight: float | Sequence[float] | None = None):
        self.pos_weight = _pos_weight(pos_weight)

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        if isinstance(self.pos_weight, tuple):
            outputs = output_shape[-1] if output_shape else 1
            if len(self.pos_weight) not in (1, outputs):
                raise ValueError(
                    f"BCEWithLogits pos_weight has {len(self.pos_weight)} values, but the "
                    f"model's output has {outputs} along its last axis (shape "
                    f"(N, {', '.join(map(str, output_shape))})); give one value per output"
                )

    def elementwise(self, g: _core.Graph, output: int, target: int) -> int:
        positive_part = op(g, "relu", output)
        softplus_tail = op(
            g, "log", op(g, "add", const(g, 1.0), op(g, "exp", op(g, "neg", op(g, "abs", output))))
        )
        if self.pos_weight is None:
            return op(
                g, "add", op(g, "sub", positive_part, op(g, "mul", output, target)), softplus_tail
            )
        # softplus(z) (1 + (w - 1) t) - w t z: torch's formula, rearranged to use softplus(z)
        weight = g.constant(np.asarray(self.pos_weight, dtype=np.float32))
        weighted_target = op(g, "mul", target, weight)
        softplus = op(g, "add", positive_part, softplus_tail)
        factor = op(g, "add", const(g, 1.0), op(g, "sub", weighted_target, target))
        return op(g, "sub", op(g, "mul", softplus, factor), op(g, "mul", weighted_target, output))

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        return threshold_matches(g, output, target, 0.0, elements_per_sample(g, output))

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return op(g, "sigmoid", output)

    def get_config(self) -> dict[str, Any]:
        weight = self.pos_weight
        return {"pos_weight": list(weight) if isinstance(weight, tuple) else weight}

    def __repr__(self) -> str:
        if self.pos_weight is None:
            return "BCEWithLogits()"
        return f"BCEWithLogits(pos_weight={self.get_config()['pos_weight']!r})"


mse = MeanSquaredError()
mae = MeanAbsoluteError()
huber = Huber()
cross_entropy = CrossEntropy()
sparse_cross_entropy = SparseCrossEntropy()
categorical_cross_entropy = CategoricalCrossEntropy()
binary_cross_entropy = BinaryCrossEntropy()
bce_with_logits = BCEWithLogits()

_BY_NAME: dict[str, type[Loss]] = {
    cls.name: cls
    for cls in (
        MeanSquaredError,
        MeanAbsoluteError,
        Huber,
        CrossEntropy,
        SparseCrossEntropy,
        CategoricalCrossEntropy,
        BinaryCrossEntropy,
        BCEWithLogits,
    )
}


def get(identifier: Any) -> Loss:
    """Resolves a loss name, object or function.

    Args:
        identifier: a ``Loss`` instance, one of the names in ``available()`` (built-in
            losses, then functions registered with ``gm.losses.register``), or a function
            ``loss(y_pred, y_true)`` of symbolic tensors returning a scalar (wrapped in a
            ``FunctionLoss``).

    Returns:
        A ``Loss`` instance (a new one with default arguments for a name).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
        TypeError: for anything else (a ``Loss`` class rather than an instance, say).

    Example:
        >>> get("mse")
        MeanSquaredError()
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        if identifier in _BY_NAME:
            return _BY_NAME[identifier]()
        if registered_function(identifier) is not None:
            return FunctionLoss(identifier)
        raise ValueError(f"unknown loss {identifier!r}; valid losses: {', '.join(available())}")
    if isinstance(identifier, type):
        raise TypeError(
            f"loss must be a name, a gm.losses.Loss instance or a function, got the class "
            f"{identifier.__name__}; pass an instance, e.g. {identifier.__name__}()"
        )
    if callable(identifier):
        return FunctionLoss(identifier)
    raise TypeError(
        f"loss must be a name, a gm.losses.Loss instance or a function "
        f"loss(y_pred, y_true), got {identifier!r}"
    )


def loss_class(name: str) -> type[Loss] | None:
    """The class a saved loss ``name`` rebuilds with: a built-in loss's, ``FunctionLoss``
    for ``"function"``, or ``None`` for an unknown name.

    Example:
        >>> loss_class("huber")
        <class 'gometal.train.losses.Huber'>
    """
    if name == FunctionLoss.name:
        return FunctionLoss
    return _BY_NAME.get(name) if isinstance(name, str) else None


def available() -> list[str]:
    """The loss names accepted by ``Trainer(loss=...)``: the built-in losses, then the
    functions registered with ``gm.losses.register``."""
    return [*_BY_NAME, *registered_names()]
