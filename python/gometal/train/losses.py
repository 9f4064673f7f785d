"""Loss functions, emitted as graph nodes; all are mean-reduced like PyTorch's defaults.

Pass a name (``loss="cross_entropy"``) or an object (``loss=gm.losses.Huber(delta=2.0)``).
Each loss also knows what labels it takes, how to turn outputs into probabilities and how
to measure accuracy, so the trainer can build the whole step from it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .. import _core
from ..graph.composites import clamped_log, const, log_softmax, op, reduce_mean, reduce_sum, softmax
from .metrics import (
    BatchAccuracy,
    argmax_agreement,
    argmax_matches,
    one_minus_nmae,
    threshold_matches,
)


class Loss:
    """Base class: ``loss(g, output, target) -> scalar node``.

    Class attributes:
        name: the string name accepted by ``Trainer(loss=...)``.
        integer_labels: ``True`` when targets are class indices of shape ``(N,)``.
        task: ``"multiclass"``, ``"binary"`` or ``"regression"``.
    """

    name: ClassVar[str] = ""
    integer_labels: ClassVar[bool] = False
    task: ClassVar[str] = "regression"

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        """Emits the mean loss of ``output`` against ``target``; returns a scalar node."""
        raise NotImplementedError

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        """Raises ``ValueError`` when the model's per-sample output shape does not fit."""

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        """Emits the batch accuracy node matching this loss."""
        return one_minus_nmae(g, output, target)

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        """Emits probabilities from raw outputs, or returns ``None`` for regression losses."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_class_scores(loss: Loss, output_shape: tuple[int, ...]) -> None:
    if len(output_shape) != 1:
        raise ValueError(
            f"loss '{loss.name}' expects model outputs of shape (N, classes), got "
            f"(N, {', '.join(map(str, output_shape))})"
        )
    if output_shape[0] < 2:
        # A softmax over one class is always 1: the loss is 0 and nothing would train.
        raise ValueError(
            f"loss '{loss.name}' needs at least 2 classes, but the model has "
            f"{output_shape[0]} output; for two classes with one output use "
            "loss='bce_with_logits' (or 'binary_cross_entropy' after a sigmoid), or give "
            "the last layer one output per class"
        )


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


# -- regression ------------------------------------------------------------------------------


class MeanSquaredError(Loss):
    """``mean((output - target) ** 2)`` (``torch.nn.MSELoss``).

    Accuracy for regression losses is go-metal's ``max(0, 1 - NMAE)`` per batch, with
    ``NMAE = sum|output - target| / sum|target|`` (see ``gometal.metrics.one_minus_nmae``).
    """

    name = "mse"

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        return reduce_mean(g, op(g, "square", op(g, "sub", output, target)))


class MeanAbsoluteError(Loss):
    """``mean(|output - target|)`` (``torch.nn.L1Loss``). Accuracy: ``1 - NMAE``."""

    name = "mae"

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        return reduce_mean(g, op(g, "abs", op(g, "sub", output, target)))


class Huber(Loss):
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

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        diff = op(g, "sub", output, target)
        magnitude = op(g, "abs", diff)
        quadratic = op(g, "mul", op(g, "square", diff), const(g, 0.5))
        linear = op(
            g, "mul", op(g, "sub", magnitude, const(g, 0.5 * self.delta)), const(g, self.delta)
        )
        inside = op(g, "less", magnitude, const(g, self.delta))
        return reduce_mean(g, op(g, "select", inside, quadratic, linear))

    def __repr__(self) -> str:
        return f"Huber(delta={self.delta:g})"


# -- multi-class -----------------------------------------------------------------------------


class CrossEntropy(Loss):
    """Softmax cross entropy from logits with integer labels (``torch.nn.CrossEntropyLoss``).

    Targets: class indices of shape ``(N,)``. Accuracy: argmax match.
    """

    name = "cross_entropy"
    integer_labels = True
    task = "multiclass"

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        classes = g.shape(output)[-1]
        one_hot = op(g, "one_hot", target, depth=classes)
        picked = reduce_sum(g, op(g, "mul", one_hot, log_softmax(g, output, -1)), [-1])
        return op(g, "neg", reduce_mean(g, picked))

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        _check_class_scores(self, output_shape)

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        return argmax_matches(g, output, target)

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return softmax(g, output, -1)


class SparseCrossEntropy(CrossEntropy):
    """The same loss as ``CrossEntropy`` under its Keras name."""

    name = "sparse_cross_entropy"


class CategoricalCrossEntropy(Loss):
    """Cross entropy against one-hot or probability targets of shape ``(N, classes)``.

    Args:
        from_logits: ``True`` (default) when the model outputs logits; ``False`` when it
            already outputs probabilities (e.g. ends in softmax), whose log is clamped
            like PyTorch's.

    Example:
        >>> loss = gm.losses.CategoricalCrossEntropy(from_logits=False)
    """

    name = "categorical_cross_entropy"
    task = "multiclass"

    def __init__(self, from_logits: bool = True):
        self.from_logits = bool(from_logits)

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        log_p = log_softmax(g, output, -1) if self.from_logits else clamped_log(g, output)
        per_sample = reduce_sum(g, op(g, "mul", target, log_p), [-1])
        return op(g, "neg", reduce_mean(g, per_sample))

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        _check_class_scores(self, output_shape)

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        return argmax_agreement(g, output, target)

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return softmax(g, output, -1) if self.from_logits else output

    def __repr__(self) -> str:
        return f"CategoricalCrossEntropy(from_logits={self.from_logits})"


# -- binary ----------------------------------------------------------------------------------


def _elements_per_sample(g: _core.Graph, output: int) -> int:
    count = 1
    for d in g.shape(output)[1:]:
        count *= d
    return count


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

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        one = const(g, 1.0)
        positive = op(g, "mul", target, clamped_log(g, output))
        negative = op(
            g, "mul", op(g, "sub", one, target), clamped_log(g, op(g, "sub", one, output))
        )
        loss = op(g, "neg", reduce_mean(g, op(g, "add", positive, negative)))
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

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        return threshold_matches(g, output, target, 0.5, _elements_per_sample(g, output))

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return output


class BCEWithLogits(Loss):
    """``torch.nn.BCEWithLogitsLoss`` in the stable form ``max(z, 0) - z t + log(1 + exp(-|z|))``.

    Accuracy: ``logit > 0`` against ``target >= 0.5``.
    """

    name = "bce_with_logits"
    task = "binary"

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        positive_part = op(g, "relu", output)
        softplus_tail = op(
            g, "log", op(g, "add", const(g, 1.0), op(g, "exp", op(g, "neg", op(g, "abs", output))))
        )
        per_element = op(
            g, "add", op(g, "sub", positive_part, op(g, "mul", output, target)), softplus_tail
        )
        return reduce_mean(g, per_element)

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        return threshold_matches(g, output, target, 0.0, _elements_per_sample(g, output))

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return op(g, "sigmoid", output)


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
    """Resolves a loss name or object.

    Args:
        identifier: a ``Loss`` instance, or one of the names in ``available()``.

    Returns:
        A ``Loss`` instance (a new one with default arguments for a name).

    Raises:
        ValueError: for an unknown name, listing the valid ones.

    Example:
        >>> get("mse")
        MeanSquaredError()
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]()
        except KeyError:
            raise ValueError(
                f"unknown loss {identifier!r}; valid losses: {', '.join(available())}"
            ) from None
    raise TypeError(f"loss must be a name or a gm.losses.Loss instance, got {identifier!r}")


def available() -> list[str]:
    """The loss names accepted by ``Trainer(loss=...)``."""
    return list(_BY_NAME)
