"""Classification metrics computed on the host from labels, binary scores or class scores.

Every function here reduces its input to a confusion matrix first (see ``_inputs`` for the
accepted forms), so the streaming metrics can keep counts instead of samples and give the
same numbers. Definitions and edge cases follow scikit-learn's ``sklearn.metrics``:

* the classes taking part in an average are those present in ``y_true`` or in the
  predictions, unless ``labels`` names them;
* ``average="binary"`` reports the class ``pos_label`` and rejects data with more than two
  classes present;
* a ratio whose denominator is 0 (for example precision when nothing is predicted positive)
  is replaced by ``zero_division``: ``"warn"`` (the default) gives 0.0 and an
  ``UndefinedMetricWarning``; ``0.0`` or ``1.0`` give that value silently; ``float("nan")``
  gives NaN, and NaN classes are left out of the macro and weighted averages;
* an empty input raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._inputs import (
    ClassificationBatch,
    ZeroDivision,
    check_average,
    check_label_list,
    check_num_classes,
    check_threshold,
    check_zero_division,
    classification_batch,
    require_samples,
    score_batch,
    warn_undefined,
)

# metric -> (numerator, denominator, what an empty denominator lacks), in per-class counts.
_RATIOS = {
    "precision": ("tp", ("tp", "fp"), "predicted"),
    "recall": ("tp", ("tp", "fn"), "true"),
    "f1": ("2tp", ("2tp", "fp", "fn"), "true nor predicted"),
    "specificity": ("tn", ("tn", "fp"), "negative"),
    "npv": ("tn", ("tn", "fn"), "predicted negative"),
}
_DISPLAY = {
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "specificity": "Specificity",
    "npv": "NPV",
}


def count_confusion(batch: ClassificationBatch) -> np.ndarray:
    """Counts a batch into a ``(K, K)`` int64 matrix (rows: true class, columns: predicted)."""
    k = batch.num_classes
    flat = np.bincount(batch.true * k + batch.pred, minlength=k * k)
    return flat.reshape(k, k).astype(np.int64)


def _padded(cm: np.ndarray, size: int) -> np.ndarray:
    """Grows a confusion matrix with zero rows/columns for classes never seen."""
    if size <= len(cm):
        return cm
    grown = np.zeros((size, size), dtype=cm.dtype)
    grown[: len(cm), : len(cm)] = cm
    return grown


def _present(cm: np.ndarray) -> np.ndarray:
    """Classes seen in y_true or in the predictions, ascending."""
    return np.flatnonzero(cm.sum(axis=0) + cm.sum(axis=1))


def check_pos_label(pos_label: Any) -> int:
    """``pos_label`` as a class index (an int >= 0), or ``TypeError``/``ValueError``."""
    if isinstance(pos_label, bool) or not isinstance(pos_label, (int, np.integer)):
        raise TypeError(f"pos_label must be a class index (int); got {pos_label!r}")
    if pos_label < 0:
        raise ValueError(f"pos_label must be >= 0; got {pos_label}")
    return int(pos_label)


def _classes_for(
    cm: np.ndarray, average: str | None, pos_label: int, labels: np.ndarray | None
) -> np.ndarray:
    """The classes a ratio is computed for, chosen as scikit-learn chooses them."""
    present = _present(cm)
    if average == "binary":
        if len(present) > 2:
            raise ValueError(
                f"the data has {len(present)} classes ({present.tolist()}) but average="
                "'binary'; choose average='macro', 'micro', 'weighted' or None"
            )
        if pos_label not in present and len(present) == 2:
            raise ValueError(
                f"pos_label={pos_label} is not a valid label; it should be one of "
                f"{present.tolist()}"
            )
        return np.array([pos_label], dtype=np.int64)
    return labels if labels is not None else present


def _per_class_counts(cm: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    cm = _padded(cm, int(classes.max()) + 1)
    tp = np.diag(cm)[classes].astype(np.float64)
    predicted = cm.sum(axis=0)[classes].astype(np.float64)
    support = cm.sum(axis=1)[classes].astype(np.float64)
    fp, fn = predicted - tp, support - tp
    tn = float(cm.sum()) - tp - fp - fn
    return {"tp": tp, "2tp": 2.0 * tp, "fp": fp, "fn": fn, "tn": tn, "support": support}


def nan_average(values: np.ndarray, weights: np.ndarray | None) -> float:
    """Mean of ``values`` ignoring NaN; weighted unless every remaining weight is 0."""
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan")
    if weights is None or weights[keep].sum() == 0:
        return float(values[keep].mean())
    return float(np.average(values[keep], weights=weights[keep]))


def ratio_from_confusion(
    cm: np.ndarray,
    metric: str,
    *,
    average: str | None = "binary",
    pos_label: int = 1,
    labels: np.ndarray | None = None,
    zero_division: ZeroDivision = "warn",
) -> float | np.ndarray:
    """Precision, recall, F1, specificity or NPV from a confusion matrix.

    Args:
        cm: ``(K, K)`` counts, rows true class and columns predicted class.
        metric: ``"precision"``, ``"recall"``, ``"f1"``, ``"specificity"`` or ``"npv"``.
        average: ``"binary"``, ``"macro"``, ``"micro"``, ``"weighted"`` or ``None``.
        pos_label: the reported class for ``average="binary"``.
        labels: validated class indices to average over, or ``None`` for those present.
        zero_division: the value for a 0/0 ratio (see the module docstring).

    Returns:
        A float, or one value per class in ``labels`` order when ``average`` is ``None``.
    """
    fallback = check_zero_division(zero_division)
    numerator_key, denominator_keys, lacking = _RATIOS[metric]
    classes = _classes_for(cm, average, pos_label, labels)
    counts = _per_class_counts(cm, classes)
    numerator = counts[numerator_key]
    denominator = sum(counts[key] for key in denominator_keys)
    if average == "micro":
        numerator, denominator = numerator.sum(keepdims=True), denominator.sum(keepdims=True)
    undefined = denominator == 0
    values = np.divide(numerator, np.where(undefined, 1.0, denominator))
    values[undefined] = fallback
    if undefined.any() and zero_division == "warn":
        which = "" if average == "micro" else f" for classes {classes[undefined].tolist()}"
        warn_undefined(
            f"{_DISPLAY[metric]} is ill-defined{which} (no {lacking} samples) and set to 0.0; "
            "use the zero_division argument to choose the value"
        )
    if average is None:
        return values
    weights = counts["support"] if average == "weighted" else None
    return nan_average(values, weights)


def _ratio(
    metric: str,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    average: str | None,
    threshold: float,
    pos_label: int,
    labels: ArrayLike | None,
    num_classes: int | None,
    zero_division: ZeroDivision,
) -> float | np.ndarray:
    check_average(average)
    check_zero_division(zero_division)
    label_list = check_label_list(labels)
    batch = classification_batch(
        y_true, y_pred, check_threshold(threshold), check_num_classes(num_classes)
    )
    require_samples(len(batch.true), metric)
    return ratio_from_confusion(
        count_confusion(batch),
        metric,
        average=average,
        pos_label=check_pos_label(pos_label),
        labels=label_list,
        zero_division=zero_division,
    )


_SHARED_ARGS = """
    Args:
        y_true: true class indices ``(N,)`` or ``(N, 1)`` (or one-hot rows of ``y_pred``'s
            shape).
        y_pred: predicted labels (integers), binary scores ``(N,)``/``(N, 1)`` compared with
            ``threshold``, or class scores ``(N, C)`` reduced by argmax.
        average: ``"binary"`` (the class ``pos_label``), ``"macro"`` (unweighted mean over
            classes), ``"micro"`` (from counts summed over classes), ``"weighted"`` (mean
            weighted by each class's count in ``y_true``) or ``None`` (one value per class).
        threshold: a single-column score above it predicts class 1.
        pos_label: the class reported by ``average="binary"``.
        labels: class indices to average over; default: those present in the data.
        num_classes: the number of classes, to validate labels against.
        zero_division: the value of a 0/0 ratio: ``"warn"`` (0.0 and a warning), 0.0, 1.0
            or NaN.

    Returns:
        The score, or an array of one score per class when ``average`` is ``None``.
"""


def precision(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    average: str | None = "binary",
    threshold: float = 0.5,
    pos_label: int = 1,
    labels: ArrayLike | None = None,
    num_classes: int | None = None,
    zero_division: ZeroDivision = "warn",
) -> float | np.ndarray:
    """Precision ``tp / (tp + fp)``, as ``sklearn.metrics.precision_score``.
    {args}
    Example:
        >>> precision([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.7])
        0.5
    """
    return _ratio(
        "precision",
        y_true,
        y_pred,
        average,
        threshold,
        pos_label,
        labels,
        num_classes,
        zero_division,
    )


def recall(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    average: str | None = "binary",
    threshold: float = 0.5,
    pos_label: int = 1,
    labels: ArrayLike | None = None,
    num_classes: int | None = None,
    zero_division: ZeroDivision = "warn",
) -> float | np.ndarray:
    """Recall (sensitivity) ``tp / (tp + fn)``, as ``sklearn.metrics.recall_score``.
    {args}
    Example:
        >>> recall([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.7])
        0.5
    """
    return _ratio(
        "recall", y_true, y_pred, average, threshold, pos_label, labels, num_classes, zero_division
    )


def f1_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    average: str | None = "binary",
    threshold: float = 0.5,
    pos_label: int = 1,
    labels: ArrayLike | None = None,
    num_classes: int | None = None,
    zero_division: ZeroDivision = "warn",
) -> float | np.ndarray:
    """F1 ``2 tp / (2 tp + fp + fn)``, as ``sklearn.metrics.f1_score``.
    {args}
    Example:
        >>> f1_score([0, 1, 2, 2], [0, 2, 2, 2], average="macro")
        0.6
    """
    return _ratio(
        "f1", y_true, y_pred, average, threshold, pos_label, labels, num_classes, zero_division
    )


def specificity(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    average: str | None = "binary",
    threshold: float = 0.5,
    pos_label: int = 1,
    labels: ArrayLike | None = None,
    num_classes: int | None = None,
    zero_division: ZeroDivision = "warn",
) -> float | np.ndarray:
    """Specificity (true negative rate) ``tn / (tn + fp)``, per class one-vs-rest.

    For a binary problem it equals the recall of the other class. ``"weighted"`` weighs
    each class by its count in ``y_true``, as for the other metrics.
    {args}
    Example:
        >>> specificity([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.7])
        0.5
    """
    return _ratio(
        "specificity",
        y_true,
        y_pred,
        average,
        threshold,
        pos_label,
        labels,
        num_classes,
        zero_division,
    )


def npv(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    average: str | None = "binary",
    threshold: float = 0.5,
    pos_label: int = 1,
    labels: ArrayLike | None = None,
    num_classes: int | None = None,
    zero_division: ZeroDivision = "warn",
) -> float | np.ndarray:
    """Negative predictive value ``tn / (tn + fn)``, per class one-vs-rest.

    For a binary problem it equals the precision of the other class.
    {args}
    Example:
        >>> npv([0, 1, 1, 0], [0.2, 0.9, 0.1, 0.3])
        0.6666666666666666
    """
    return _ratio(
        "npv", y_true, y_pred, average, threshold, pos_label, labels, num_classes, zero_division
    )


# The five ratio metrics share their arguments; their docstrings hold a placeholder for them.
for _function in (precision, recall, f1_score, specificity, npv):
    if _function.__doc__:  # None under python -OO
        _function.__doc__ = _function.__doc__.replace("    {args}", _SHARED_ARGS.rstrip())
del _function


def accuracy(y_true: ArrayLike, y_pred: ArrayLike, *, threshold: float = 0.5) -> float:
    """The fraction of samples whose predicted class is the true class.

    Args:
        y_true: true class indices ``(N,)`` or ``(N, 1)``.
        y_pred: predicted labels, binary scores (compared with ``threshold``) or class
            scores ``(N, C)`` (argmax).
        threshold: a single-column score above it predicts class 1.

    Returns:
        The accuracy in ``[0, 1]``, as ``sklearn.metrics.accuracy_score``.

    Example:
        >>> accuracy([0, 1, 2], [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.5, 0.2, 0.3]])
        0.6666666666666666
    """
    batch = classification_batch(y_true, y_pred, check_threshold(threshold), None)
    require_samples(len(batch.true), "accuracy")
    return accuracy_from_confusion(count_confusion(batch))


def accuracy_from_confusion(cm: np.ndarray) -> float:
    """``trace / total`` of a confusion matrix."""
    return float(np.trace(cm) / cm.sum())


def confusion_from_counts(
    cm: np.ndarray, fixed: bool, labels: np.ndarray | None = None
) -> np.ndarray:
    """The reported confusion matrix: for ``labels``, for every class, or for those present.

    Args:
        cm: ``(K, K)`` counts.
        fixed: ``True`` when ``K`` is the known number of classes (report all of them).
        labels: validated class indices giving the rows/columns and their order.

    Returns:
        An int64 square matrix.
    """
    if labels is not None:
        cm = _padded(cm, int(labels.max()) + 1)
        if cm.sum(axis=1)[labels].sum() == 0:
            raise ValueError(
                f"none of labels={labels.tolist()} occurs in y_true; at least one must"
            )
        return cm[np.ix_(labels, labels)]
    if fixed:
        return cm.copy()
    present = _present(cm)
    return cm[np.ix_(present, present)]


def confusion_matrix(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    num_classes: int | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Args:
        y_true: true class indices ``(N,)`` or ``(N, 1)``.
        y_pred: predicted labels, binary scores or class scores ``(N, C)``.
        labels: the classes of the rows and columns, in order; samples of other classes
            are left out (as scikit-learn does).
        num_classes: the number of classes.
        threshold: a single-column score above it predicts class 1.

    Returns:
        An int64 matrix, rows the true class and columns the predicted class. Its classes:
        ``labels`` if given, else ``range(num_classes)``, ``range(C)`` for class scores,
        ``[0, 1]`` for binary scores, or the classes present (scikit-learn's default) when
        both arguments are label arrays.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 1, 0]).tolist()
        [[1, 0], [1, 1]]
    """
    label_list = check_label_list(labels)
    batch = classification_batch(
        y_true, y_pred, check_threshold(threshold), check_num_classes(num_classes)
    )
    require_samples(len(batch.true), "confusion_matrix")
    return confusion_from_counts(count_confusion(batch), batch.fixed, label_list)


def check_k(k: Any) -> int:
    """Validates the ``k`` of top-k accuracy: an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    return int(k)


def top_k_hits(
    y_true: ArrayLike, y_score: ArrayLike, k: int, threshold: float
) -> tuple[int, int, int]:
    """Counts samples whose true class is among the ``k`` highest scores.

    Ties rank the higher class index first, which is the order scikit-learn's
    ``top_k_accuracy_score`` gives them.

    Returns:
        ``(hits, samples, num_classes)``.
    """
    labels, scores = score_batch(y_true, y_score)
    if scores.ndim == 1:
        # One probability column: top-1 is the thresholded prediction, top-2 covers both.
        hits = (scores > threshold) == labels if k == 1 else np.ones(len(labels), dtype=bool)
        return int(hits.sum()), len(labels), 2
    num_classes = scores.shape[1]
    true_score = scores[np.arange(len(labels)), labels][:, None]
    above = (scores > true_score).sum(axis=1)
    tied_ahead = ((scores == true_score) & (np.arange(num_classes) > labels[:, None])).sum(axis=1)
    return int((above + tied_ahead < k).sum()), len(labels), num_classes


def warn_trivial_k(k: int, num_classes: int) -> None:
    """Warns that ``k >= num_classes`` makes every sample a hit."""
    if k >= num_classes:
        warn_undefined(
            f"k={k} is >= the number of classes ({num_classes}), so every sample counts as "
            "a hit and the score is 1.0"
        )


def top_k_accuracy(
    y_true: ArrayLike, y_score: ArrayLike, k: int = 5, *, threshold: float = 0.5
) -> float:
    """The fraction of samples whose true class is among the ``k`` best-scored classes.

    Args:
        y_true: true class indices ``(N,)`` or ``(N, 1)``.
        y_score: class scores ``(N, C)``, or a binary model's class-1 score ``(N,)`` /
            ``(N, 1)`` (then top-1 is ``score > threshold``).
        k: how many of the best-scored classes count; ``k >= C`` warns and gives 1.0.
        threshold: the decision threshold for single-column scores.

    Returns:
        The top-k accuracy, as ``sklearn.metrics.top_k_accuracy_score``. Tied scores rank
        the higher class index first (scikit-learn's order), so on exact ties top-1 can
        differ from ``accuracy``, whose argmax takes the first maximum.

    Example:
        >>> top_k_accuracy([2, 0], [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], k=2)
        0.0
    """
    k = check_k(k)
    hits, samples, num_classes = top_k_hits(y_true, y_score, k, check_threshold(threshold))
    require_samples(samples, "top_k_accuracy")
    warn_trivial_k(k, num_classes)
    return hits / samples
