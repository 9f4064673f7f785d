"""One loss per model output, with its weight: ``Trainer(loss=..., loss_weights=...)``.

The training step minimizes ``sum(weight * loss)`` over the outputs (weights default to
1); each output's loss also sets the labels that output takes and its accuracy. This
module resolves the arguments into one ``OutputLoss`` per output, and checks and converts
the batches of a structured model (several inputs or outputs, or dicts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base.arrays import (
    as_class_labels,
    as_dense_targets,
    as_engine_rows,
    as_input_batch,
    check_input_batch,
)
from ..nn.inference import check_input_arrays
from ..nn.model import Model
from . import losses
from .metrics import AccuracyTotals
from .session import StepResult


@dataclass(frozen=True)
class OutputLoss:
    """The loss of one model output.

    Attributes:
        name: the output's name (``model.output_names``).
        loss: its ``gm.losses.Loss``.
        weight: its factor in the total loss (finite, ``>= 0``).
        sample_shape: the output's shape without the batch dimension.
    """

    name: str
    loss: losses.Loss
    weight: float
    sample_shape: tuple[int, ...]


def _per_output(model: Model, value: Any, argument: str) -> list[Any]:
    """``value`` spread over the outputs: a list in order or a dict by output name."""
    names = list(model.output_names)
    if isinstance(value, Mapping):
        unknown = [key for key in value if key not in names]
        if unknown:
            raise ValueError(
                f"{argument} names output(s) {unknown!r} that the model does not have; its "
                f"outputs are {names}"
            )
        return [value.get(name) for name in names]
    if len(value) != len(names):
        raise ValueError(
            f"{argument} must hold one entry per output: the model has {len(names)} "
            f"output(s) {names}, got a {type(value).__name__} of {len(value)}"
        )
    return list(value)


def _check_weight(value: Any, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argument} must be a number, got {value!r}")
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{argument} must be a finite number >= 0, got {value!r}")
    return weight


def resolve_output_losses(model: Model, loss: Any, loss_weights: Any = None) -> list[OutputLoss]:
    """One ``OutputLoss`` per model output, in the model's output order.

    Args:
        model: the model.
        loss: one loss (a name or a ``gm.losses.Loss``) for every output, a list with one
            per output, or a dict giving every output name its loss.
        loss_weights: ``None`` (every weight 1), a list with one number per output, or a
            dict from output names to numbers (outputs left out weigh 1).

    Returns:
        The outputs' losses and weights.

    Raises:
        TypeError: a loss or weight of the wrong type.
        ValueError: a list of the wrong length, a dict naming an unknown output, a loss
            dict leaving an output out, a negative or non-finite weight, or a loss that
            does not fit its output's shape (the output is named).

    Example:
        >>> resolve_output_losses(model, {"label": "cross_entropy", "box": "mse"},
        ...                       {"box": 0.5})  # doctest: +SKIP
    """
    names = model.output_names
    structured = model.output_signature.structured
    if isinstance(loss, (list, tuple, Mapping)):
        given = _per_output(model, loss, "loss")
        missing = [name for name, entry in zip(names, given) if entry is None]
        if missing:
            raise ValueError(
                f"loss gives no loss for output(s) {missing}; give every output one (a "
                "loss_weights entry of 0 leaves an output out of the total)"
            )
        resolved = [losses.get(entry) for entry in given]
    else:
        first = losses.get(loss)
        # One loss object for every output: each emits its own nodes, so sharing is safe.
        resolved = [first] * len(names)
    weights = [1.0] * len(names)
    if loss_weights is not None:
        if not isinstance(loss_weights, (list, tuple, Mapping)):
            raise TypeError(
                f"loss_weights must be a list (one number per output) or a dict keyed by "
                f"output name, got {type(loss_weights).__name__}"
            )
        for index, value in enumerate(_per_output(model, loss_weights, "loss_weights")):
            if value is not None:
                label = f"loss_weights[{names[index]!r}]"
                weights[index] = _check_weight(value, label)
    outputs = []
    for name, shape, output_loss, weight in zip(
        names, model.output_signature.sample_shapes, resolved, weights
    ):
        if structured:
            try:
                output_loss.check_output_shape(shape)
            except ValueError as err:
                raise ValueError(f"output {name!r}: {err}") from None
        else:
            output_loss.check_output_shape(shape)
        outputs.append(OutputLoss(name, output_loss, weight, shape))
    return outputs


def check_targets(
    output_losses: Sequence[OutputLoss],
    model: Model,
    y: Any,
    num_samples: int,
    argument: str = "y",
    check_finite: bool = True,
) -> list[np.ndarray]:
    """Checks and converts a structured model's targets, one array per output.

    Args:
        output_losses: the outputs' losses (they set each output's labels).
        model: the model.
        y: a list (output order) or dict (by output name) of labels or targets; a model
            with one output also takes its array as it is.
        num_samples: the number of input rows each target must match.
        argument: the argument's name for messages.
        check_finite: reject NaN and infinity in float targets here.

    Returns:
        int32 class indices or float32 targets, one per output, in order.

    Raises:
        TypeError, ValueError: a missing, unknown or misshapen target (named as
            ``y['label']``).

    Example:
        >>> ys = check_targets(output_losses, model, {"label": l, "box": b}, 32)  # doctest: +SKIP
    """
    signature = model.output_signature
    arrays = []
    for index, (value, output) in enumerate(zip(signature.arrange(y, argument), output_losses)):
        label = signature.label(argument, index)
        if output.loss.integer_labels:
            arrays.append(
                as_class_labels(
                    value,
                    num_samples,
                    output.sample_shape[-1],
                    label,
                    ignore_index=output.loss.ignore_index,
                    label_shape=output.sample_shape[:-1],
                )
            )
        else:
            arrays.append(
                as_dense_targets(value, num_samples, output.sample_shape, label, check_finite)
            )
    return arrays


class BatchPreparer:
    """Checks batches of one model and converts them to what the engine reads.

    What the checks need (the model's structure, shapes and label kinds) is read once,
    when it is made: a training step checks every batch.

    Args:
        output_losses: the outputs' losses.
        model: the model.

    Example:
        >>> inputs, rows = BatchPreparer(output_losses, model).engine_batch(x, y)  # doctest: +SKIP
    """

    def __init__(self, output_losses: Sequence[OutputLoss], model: Model):
        self.output_losses = list(output_losses)
        self.model = model
        self.structured = model.structured
        self.input_shape = None if self.structured else model.input_shape
        self.input_dtype = model.input_signature.dtype(0)
        self._output = self.output_losses[0]

    def __call__(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Returns ``(x, y)``: float32 inputs (a C-contiguous float32 array as it is) and
        int32 labels or float32 targets; for a structured model, two lists of them in the
        model's order (the engine itself rejects NaN and inf in them, naming the input).

        Raises:
            TypeError, ValueError: a wrong type, shape or label, named with what was
                expected.
        """
        if self.structured:
            xs = structured_inputs(self.model, x, "x", check_finite=False)
            ys = check_targets(self.output_losses, self.model, y, len(xs[0]), check_finite=False)
            signature = self.model.input_signature
            return [as_engine_rows(a, signature.dtype(i)) for i, a in enumerate(xs)], ys
        output = self._output
        x = as_input_batch(x, self.input_shape, "x", check_finite=False, dtype=self.input_dtype)
        if output.loss.integer_labels:
            y = as_class_labels(
                y,
                len(x),
                output.sample_shape[-1],
                "y",
                ignore_index=output.loss.ignore_index,
                label_shape=output.sample_shape[:-1],
            )
        else:
            y = as_dense_targets(y, len(x), output.sample_shape, "y", check_finite=False)
        return x, y

    def engine_batch(self, x: Any, y: Any) -> tuple[list[np.ndarray], int]:
        """A batch as the step's ``train`` and ``eval`` take it (the inputs, then the
        targets), and its rows."""
        x, y = self(x, y)
        if self.structured:
            return [*x, *y], len(x[0])
        return [x, y], len(x)


def read_step(
    values: Sequence[Any],
    output_losses: Sequence[OutputLoss],
    accuracy_kinds: Sequence[str],
    num_samples: int,
    per_output: bool,
) -> StepResult:
    """What a step's ``train`` or ``eval`` function gave, as a ``StepResult``.

    Args:
        values: ``[loss, accuracy]``, or ``[total, loss per output..., accuracy per
            output...]`` when ``per_output``.
        output_losses: the outputs' losses, in order.
        accuracy_kinds: each output's accuracy kind.
        num_samples: the batch's rows.
        per_output: whether the function reports each output.

    Returns:
        The result; for several outputs ``accuracy`` is the first output's.

    Example:
        >>> read_step(engine.run("train", inputs), outs, kinds, 32, False)  # doctest: +SKIP
    """
    if not per_output:
        loss, accuracy = values
        totals = AccuracyTotals.from_output(accuracy_kinds[0], accuracy, num_samples)
        return StepResult(loss=float(loss), accuracy=totals.value, totals=totals)
    total, losses, per_totals = per_output_values(
        values, output_losses, accuracy_kinds, num_samples
    )
    first = per_totals[output_losses[0].name]
    return StepResult(
        loss=total,
        accuracy=first.value,
        totals=first,
        losses=losses,
        accuracies={name: totals.value for name, totals in per_totals.items()},
        output_totals=per_totals,
    )


def structured_inputs(model: Model, x: Any, argument: str, check_finite: bool) -> list[np.ndarray]:
    """A structured model's inputs checked (not converted), one array per input.

    Args:
        model: the model.
        x: a list or dict of input arrays, or one array when the model has one input.
        argument: the argument's name for messages.
        check_finite: reject NaN and infinity here.

    Returns:
        The arrays in the model's input order, all with the same number of rows.

    Example:
        >>> xs = structured_inputs(model, {"image": i, "meta": m}, "x", True)  # doctest: +SKIP
    """
    if model.input_signature.structured:
        return check_input_arrays(model.input_signature, x, argument, check_finite)
    dtype = model.input_signature.dtype(0)
    return [
        check_input_batch(x, model.input_shape, argument, check_finite=check_finite, dtype=dtype)
    ]


def structured_rows(model: Model, x: Any) -> int:
    """The number of samples in a batch of ``model``'s inputs (list, dict or array).

    Example:
        >>> structured_rows(model, {"image": np.zeros((4, 3)), "meta": np.zeros((4, 2))})
        4
    """
    if not model.input_signature.structured:
        return len(x)
    return len(model.input_signature.arrange(x, "x")[0])


def per_output_values(
    values: Sequence[Any],
    output_losses: Sequence[OutputLoss],
    accuracy_kinds: Sequence[str],
    num_samples: int,
) -> tuple[float, dict[str, float], dict[str, AccuracyTotals]]:
    """Reads what a structured step's ``train`` or ``eval`` function gives.

    Args:
        values: ``[total loss, loss per output..., accuracy per output...]``.
        output_losses: the outputs' losses, in order.
        accuracy_kinds: each output's accuracy kind.
        num_samples: the batch's rows.

    Returns:
        ``(total, losses by output name, accuracy totals by output name)``.

    Example:
        >>> total, losses, totals = per_output_values(values, outs, kinds, 32)  # doctest: +SKIP
    """
    count = len(output_losses)
    names = [output.name for output in output_losses]
    losses = {name: float(value) for name, value in zip(names, values[1 : 1 + count])}
    totals = {
        name: AccuracyTotals.from_output(kind, value, num_samples)
        for name, kind, value in zip(names, accuracy_kinds, values[1 + count :])
    }
    return float(values[0]), losses, totals
