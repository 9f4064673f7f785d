"""Accuracy computed inside the engine graph, so a training step stays one native call.

Each function returns a ``BatchAccuracy``: either a count of correct samples (the trainer
divides by the batch size) or, for regression, the batch's accuracy as a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _core
from .._composites import as_float, const, op, reduce_sum


@dataclass(frozen=True)
class BatchAccuracy:
    """A graph node holding a batch's accuracy.

    Attributes:
        node: a scalar node id.
        is_count: ``True`` when ``node`` counts correct samples (divide by N for the
            accuracy); ``False`` when it already is the batch's accuracy in ``[0, 1]``.
    """

    node: int
    is_count: bool


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
    return BatchAccuracy(reduce_sum(g, hits), is_count=True)


def argmax_agreement(g: _core.Graph, logits: int, targets: int) -> BatchAccuracy:
    """Counts rows whose argmax matches the argmax of one-hot or probability targets."""
    predicted = op(g, "argmax", logits, axis=-1)
    expected = op(g, "argmax", targets, axis=-1)
    return BatchAccuracy(reduce_sum(g, op(g, "equal", predicted, expected)), is_count=True)


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
    return BatchAccuracy(hits, is_count=True)


def one_minus_nmae(g: _core.Graph, output: int, targets: int) -> BatchAccuracy:
    """Regression accuracy as go-metal defines it: ``max(0, 1 - NMAE)`` per batch.

    ``NMAE = sum(|output - target|) / sum(|target|)`` over every element of the batch
    (go-metal's ``CalculateRegressionMetric``); when ``sum(|target|) == 0`` the accuracy is 0.

    Args:
        g: the graph.
        output: predictions.
        targets: targets with the output's shape.

    Returns:
        The batch accuracy as a fraction.
    """
    abs_error = reduce_sum(g, op(g, "abs", op(g, "sub", output, targets)))
    abs_target = reduce_sum(g, op(g, "abs", targets))
    # The max() keeps the unselected branch finite when every target is zero.
    ratio = op(g, "div", abs_error, op(g, "maximum", abs_target, const(g, 1e-30)))
    accuracy = op(g, "maximum", op(g, "sub", const(g, 1.0), ratio), const(g, 0.0))
    has_scale = op(g, "greater", abs_target, const(g, 0.0))
    return BatchAccuracy(op(g, "select", has_scale, accuracy, const(g, 0.0)), is_count=False)
