"""Accuracy computed inside the engine graph, so a training step stays one native call.

Each function returns a ``BatchAccuracy``: a node holding sums from which the accuracy
follows, so that batches add up to the accuracy of a whole set whatever the batch size:
the count of correct samples (``"count"``), or for regression ``sum |y_pred - y|`` and
``sum |y|`` (``"error_ratio"``, go-metal's ``1 - NMAE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import _core
from ...graph.composites import as_float, const, op, reduce_sum

COUNT = "count"
ERROR_RATIO = "error_ratio"


@dataclass(frozen=True)
class BatchAccuracy:
    """A graph node holding a batch's accuracy sums.

    Attributes:
        node: the node id: a scalar count of correct samples (``kind="count"``), or a
            ``(2,)`` vector ``[sum |y_pred - y|, sum |y|]`` (``kind="error_ratio"``).
        kind: ``"count"`` or ``"error_ratio"``.
    """

    node: int
    kind: str


@dataclass(frozen=True)
class AccuracyTotals:
    """Accuracy sums over some batches; ``+`` pools them, ``value`` is their accuracy.

    Attributes:
        kind: ``"count"`` or ``"error_ratio"``.
        numerator: correct samples, or ``sum |y_pred - y|``.
        denominator: samples, or ``sum |y|``.

    Example:
        >>> (AccuracyTotals("count", 3, 4) + AccuracyTotals("count", 1, 4)).value
        0.5
    """

    kind: str
    numerator: float = 0.0
    denominator: float = 0.0

    @classmethod
    def from_output(cls, kind: str, output: Any, num_samples: int) -> AccuracyTotals:
        """The totals of one batch from the engine's accuracy output.

        Args:
            kind: the ``BatchAccuracy`` kind.
            output: the engine's value of the accuracy node.
            num_samples: the batch size.

        Returns:
            The batch's totals.
        """
        if kind == COUNT:
            return cls(kind, float(output), float(num_samples))
        error, scale = np.asarray(output, dtype=np.float64).reshape(2)
        return cls(kind, float(error), float(scale))

    def __add__(self, other: AccuracyTotals) -> AccuracyTotals:
        if other.kind != self.kind:
            raise ValueError(f"cannot pool {self.kind} and {other.kind} accuracies")
        return AccuracyTotals(
            self.kind, self.numerator + other.numerator, self.denominator + other.denominator
        )

    @property
    def value(self) -> float:
        """The accuracy in ``[0, 1]``: correct / samples, or ``max(0, 1 - NMAE)`` (0 when
        every target is 0, where NMAE is undefined)."""
        if self.denominator <= 0:
            return 0.0
        if self.kind == COUNT:
            return self.numerator / self.denominator
        return max(0.0, 1.0 - self.numerator / self.denominator)


def argmax_matches(g: _core.Graph, logits: int, labels: int) -> BatchAccuracy:
    """Counts rows whose argmax equals the integer label.

    Args:
        g: the graph.
        logits: ``(batch, classes)`` scores (logits or probabilities).
        labels: ``(batch,)`` int32 class indices.

    Returns:
        The count of correct rows.

    Example:
        >>> acc = argmax_matches(g, logits, y)  # doctest: +SKIP
    """
    predicted = op(g, "argmax", logits, axis=-1)
    hits = op(g, "equal", predicted, as_float(g, labels))
    return BatchAccuracy(reduce_sum(g, hits), COUNT)


def argmax_agreement(g: _core.Graph, logits: int, targets: int) -> BatchAccuracy:
    """Counts rows whose argmax matches the argmax of one-hot or probability targets."""
    predicted = op(g, "argmax", logits, axis=-1)
    expected = op(g, "argmax", targets, axis=-1)
    return BatchAccuracy(reduce_sum(g, op(g, "equal", predicted, expected)), COUNT)


def threshold_matches(
    g: _core.Graph, output: int, targets: int, threshold: float, elements_per_sample: int
) -> BatchAccuracy:
    """Binary accuracy: ``output > threshold`` against ``targets >= 0.5``.

    With several outputs per sample (multi-label) this is the fraction of correct labels,
    expressed in samples (the element count is divided by ``elements_per_sample``).

    Args:
        g: the graph.
        output: probabilities (threshold 0.5) or logits (threshold 0).
        targets: 0/1 (or soft) targets with the output's shape.
        threshold: the decision threshold on ``output``.
        elements_per_sample: outputs per sample.

    Returns:
        The count of correct samples.
    """
    predicted = op(g, "greater", output, const(g, threshold))
    expected = op(g, "greater_equal", targets, const(g, 0.5))
    hits = reduce_sum(g, op(g, "equal", predicted, expected))
    if elements_per_sample != 1:
        hits = op(g, "div", hits, const(g, float(elements_per_sample)))
    return BatchAccuracy(hits, COUNT)


def one_minus_nmae(g: _core.Graph, output: int, targets: int) -> BatchAccuracy:
    """Regression accuracy as go-metal defines it: ``max(0, 1 - NMAE)``.

    ``NMAE = sum(|output - target|) / sum(|target|)`` over every element (go-metal's
    ``CalculateRegressionMetric``). The node holds both sums, so batches pool into the
    NMAE of the whole set (``gm.metrics.nmae``) instead of a mean of per-batch ratios.

    Args:
        g: the graph.
        output: predictions.
        targets: targets with the output's shape.

    Returns:
        The ``(2,)`` node ``[sum |output - target|, sum |target|]``.
    """
    abs_error = reduce_sum(g, op(g, "abs", op(g, "sub", output, targets)))
    abs_target = reduce_sum(g, op(g, "abs", targets))
    sums = [op(g, "reshape", node, shape=[1]) for node in (abs_error, abs_target)]
    return BatchAccuracy(op(g, "concat", *sums, axis=0), ERROR_RATIO)
