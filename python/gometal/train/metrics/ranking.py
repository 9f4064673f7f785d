"""Threshold-free ranking metrics: area under the ROC curve and average precision.

Both walk the scores from the highest to the lowest and count true and false positives at
each distinct score, so tied scores move the curve in one step, as scikit-learn's
``roc_auc_score`` and ``average_precision_score`` do:

* ROC AUC is the trapezoid area under (false positive rate, true positive rate) through
  those points, starting at (0, 0);
* average precision is ``sum_n (R_n - R_{n-1}) P_n`` over them (a step function, no
  interpolation).

Scores: a binary model's single column is the score of class 1 (with ``pos_label=0`` its
order is reversed); an ``(N, 2)`` matrix is a binary problem scored by column
``pos_label``; an ``(N, C)`` matrix with ``C >= 3`` is scored one-vs-rest per class and
then averaged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._inputs import check_average, require_samples, score_batch, warn_undefined

_RANKING_AVERAGES = ("macro", "weighted", "micro", None)


def counts_at_thresholds(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative (true positives, false positives) at each distinct score, high to low.

    Args:
        positive: 0/1 labels (1: the positive class).
        score: scores, higher meaning more positive; ties enter the curve together.

    Returns:
        ``(true_pos, false_pos)``, int64 counts, one entry per distinct score.

    Example:
        >>> [c.tolist() for c in counts_at_thresholds(np.array([0, 1, 1]), np.array([.2, .9, .9]))]
        [[2, 2], [0, 1]]
    """
    order = np.argsort(-score, kind="stable")
    sorted_score = score[order]
    # The last position of each run of equal scores: ties enter the curve together.
    run_ends = np.flatnonzero(np.r_[sorted_score[1:] != sorted_score[:-1], True])
    true_pos = np.cumsum(positive[order], dtype=np.int64)[run_ends]
    false_pos = run_ends + 1 - true_pos
    return true_pos, false_pos


def _binary_roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    num_pos = int(positive.sum())
    num_neg = len(positive) - num_pos
    if num_pos == 0 or num_neg == 0:
        warn_undefined("only one class is present in y_true; ROC AUC is undefined and set to NaN")
        return float("nan")
    true_pos, false_pos = counts_at_thresholds(positive, score)
    tp = np.r_[0, true_pos].astype(np.float64)
    fp = np.r_[0, false_pos].astype(np.float64)
    # Trapezoids in counts, normalised once: exact for integer counts.
    area = np.sum(np.diff(fp) * (tp[1:] + tp[:-1])) / 2.0
    return float(area / (num_pos * num_neg))


def _binary_average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    num_pos = int(positive.sum())
    if num_pos == 0:
        warn_undefined(
            "no positive samples in y_true; recall is undefined and average precision is set to 0.0"
        )
        return 0.0
    true_pos, false_pos = counts_at_thresholds(positive, score)
    precision_at = true_pos / (true_pos + false_pos)
    recall_gain = np.diff(np.r_[0, true_pos]) / num_pos
    return float(np.sum(recall_gain * precision_at))


def check_binary_pos_label(pos_label: Any) -> int:
    """``pos_label`` of binary scores (0 or 1), or ``ValueError``."""
    if isinstance(pos_label, bool) or pos_label not in (0, 1):
        raise ValueError(f"pos_label must be 0 or 1 for binary scores; got {pos_label!r}")
    return int(pos_label)


def _ranking_score(
    binary_metric: Any,
    name: str,
    y_true: ArrayLike,
    y_score: ArrayLike,
    average: str | None,
    pos_label: Any,
) -> float | np.ndarray:
    check_average(average, _RANKING_AVERAGES)
    labels, scores = score_batch(y_true, y_score)
    require_samples(len(labels), name)
    if scores.ndim == 1 or scores.shape[1] == 2:
        pos_label = check_binary_pos_label(pos_label)
        if scores.ndim == 1:
            score = scores if pos_label == 1 else -scores
        else:
            score = scores[:, pos_label]
        return binary_metric(labels == pos_label, score)
    one_hot = labels[:, None] == np.arange(scores.shape[1])
    if average == "micro":
        return binary_metric(one_hot.reshape(-1), scores.reshape(-1))
    per_class = np.array(
        [binary_metric(one_hot[:, c], scores[:, c]) for c in range(scores.shape[1])]
    )
    if average is None:
        return per_class
    if average == "macro":
        return float(per_class.mean())
    support = one_hot.sum(axis=0)
    if support.sum() == 0:
        return 0.0
    # A class absent from y_true has weight 0; its NaN must not poison the mean.
    return float(np.average(np.where(support > 0, per_class, 0.0), weights=support))


def roc_auc(
    y_true: ArrayLike, y_score: ArrayLike, *, average: str | None = "macro", pos_label: int = 1
) -> float | np.ndarray:
    """Area under the ROC curve, as ``sklearn.metrics.roc_auc_score``.

    Args:
        y_true: true class indices ``(N,)`` or ``(N, 1)``.
        y_score: a binary model's class-1 scores ``(N,)``/``(N, 1)``, or class scores
            ``(N, C)`` (probabilities or logits; only their order matters).
        average: for ``C >= 3`` (one-vs-rest): ``"macro"``, ``"weighted"`` (by class count
            in ``y_true``), ``"micro"`` (all (sample, class) pairs as one binary problem)
            or ``None`` (one value per class). Ignored for binary scores.
        pos_label: the positive class (0 or 1) for binary scores.

    Returns:
        The AUC; NaN with an ``UndefinedMetricWarning`` when ``y_true`` holds only one
        class (for macro, when any class is absent). An empty input raises ``ValueError``.

    Example:
        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    return _ranking_score(_binary_roc_auc, "roc_auc", y_true, y_score, average, pos_label)


def average_precision(
    y_true: ArrayLike, y_score: ArrayLike, *, average: str | None = "macro", pos_label: int = 1
) -> float | np.ndarray:
    """Average precision (area under the precision-recall curve, step-wise).

    Matches ``sklearn.metrics.average_precision_score`` (for ``C >= 3``, on the one-hot
    ``y_true``).

    Args:
        y_true: true class indices ``(N,)`` or ``(N, 1)``.
        y_score: a binary model's class-1 scores ``(N,)``/``(N, 1)``, or class scores
            ``(N, C)``.
        average: for ``C >= 3``: ``"macro"``, ``"weighted"``, ``"micro"`` or ``None``.
        pos_label: the positive class (0 or 1) for binary scores.

    Returns:
        The average precision; 0.0 with an ``UndefinedMetricWarning`` for a class with no
        positive sample. An empty input raises ``ValueError``.

    Example:
        >>> average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.8333333333333333
    """
    return _ranking_score(
        _binary_average_precision, "average_precision", y_true, y_score, average, pos_label
    )
