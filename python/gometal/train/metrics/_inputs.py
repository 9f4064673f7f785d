"""Validation and normalisation of the arrays the host-side metrics receive.

Classification inputs come in three forms, told apart by dtype and shape:

* integer (or bool) ``y_pred`` of shape ``(N,)`` or ``(N, 1)``: predicted class labels;
* float ``y_pred`` of shape ``(N,)`` or ``(N, 1)``: the probability (or logit) of class 1 of
  a binary model, turned into a label by ``y_pred > threshold``;
* float ``y_pred`` of shape ``(N, C)`` with ``C >= 2``: class scores, turned into a label by
  the argmax (the first maximum on ties).

``y_true`` holds class indices of shape ``(N,)`` or ``(N, 1)`` (integers, or floats with
integral values such as 0/1 targets), or one-hot / probability rows of shape ``(N, C)``
matching ``y_pred`` (their argmax is the label).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...base.arrays import check_real_dtype, format_shape, to_ndarray


class UndefinedMetricWarning(UserWarning):
    """Warned when a metric is undefined for the data and a fallback value is returned."""


ZeroDivision = Any  # "warn", 0.0, 1.0 or float("nan")

AVERAGES = ("binary", "macro", "micro", "weighted", None)
MAX_CLASSES = 10_000


def warn_undefined(message: str) -> None:
    """Emits an ``UndefinedMetricWarning`` attributed to the user's call site."""
    warnings.warn(message, UndefinedMetricWarning, stacklevel=4)


def check_zero_division(zero_division: ZeroDivision) -> float:
    """Returns the value that replaces an undefined ratio ("warn" means 0.0 plus a warning)."""
    if isinstance(zero_division, str) and zero_division == "warn":
        return 0.0
    is_number = isinstance(zero_division, (int, float, np.floating)) and not isinstance(
        zero_division, bool
    )
    if is_number and (np.isnan(zero_division) or zero_division in (0, 1)):
        return float(zero_division)
    raise ValueError(
        f"zero_division must be 'warn', 0.0, 1.0 or float('nan'); got {zero_division!r}"
    )


def check_average(average: Any, allowed: tuple[Any, ...] = AVERAGES) -> None:
    """Raises ``ValueError`` unless ``average`` is one of ``allowed``."""
    valid = (average is None and None in allowed) or (
        isinstance(average, str) and average in allowed
    )
    if not valid:
        raise ValueError(f"average must be one of {list(allowed)}; got {average!r}")


def check_num_classes(num_classes: Any) -> int | None:
    """Validates ``num_classes``: ``None`` or an integer >= 2."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int >= 2 or None; got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}")
    return int(num_classes)


def check_threshold(threshold: Any) -> float:
    """Validates a decision threshold: a finite real number."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise TypeError(f"threshold must be a real number; got {threshold!r}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite; got {threshold}")
    return float(threshold)


def check_label_list(labels: Any, name: str = "labels") -> np.ndarray | None:
    """Validates an optional list of class indices (non-negative, distinct, not empty)."""
    if labels is None:
        return None
    arr = to_ndarray(labels, name)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D list of class indices; got shape "
            f"{format_shape(arr.shape)}"
        )
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices; got dtype {arr.dtype}")
    if (arr < 0).any():
        raise ValueError(f"{name} must be non-negative class indices; got {arr.tolist()}")
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"{name} must not repeat a class; got {arr.tolist()}")
    return arr.astype(np.int64)


def _as_real(value: Any, name: str) -> np.ndarray:
    arr = to_ndarray(value, name)
    check_real_dtype(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")


def _is_column(arr: np.ndarray) -> bool:
    return arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)


def _check_same_length(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred must have the same number of samples; got y_true "
            f"{format_shape(y_true.shape)} and y_pred {format_shape(y_pred.shape)}"
        )


def _integral_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """Column of class indices -> int64 ``(N,)``; floats must hold whole numbers."""
    flat = arr.reshape(-1)
    if flat.dtype.kind == "f":
        _check_finite(flat, name)
        if (flat != np.round(flat)).any():
            raise ValueError(f"{name} must hold integer class labels; got non-integral values")
    labels = flat.astype(np.int64)
    if (labels < 0).any():
        raise ValueError(f"{name} must hold class indices >= 0; got {int(labels.min())}")
    return labels


def true_labels(y_true: Any, num_columns: int | None, name: str = "y_true") -> np.ndarray:
    """Class indices ``(N,)`` from labels or from one-hot/probability rows.

    Args:
        y_true: labels ``(N,)``/``(N, 1)``, or rows of shape ``(N, num_columns)``.
        num_columns: the width of the score matrix, when ``y_pred`` is one; rows of
            ``y_true`` are accepted only with this width.
        name: the argument's name for error messages.

    Returns:
        An int64 array of class indices.
    """
    arr = _as_real(y_true, name)
    if _is_column(arr):
        return _integral_labels(arr, name)
    if arr.ndim == 2 and num_columns is not None and arr.shape[1] == num_columns:
        _check_finite(arr, name)
        return np.argmax(arr, axis=1).astype(np.int64)
    expected = "(N,) or (N, 1)" + (f" or (N, {num_columns})" if num_columns else "")
    raise ValueError(f"{name} must have shape {expected}; got {format_shape(arr.shape)}")


@dataclass(frozen=True)
class ClassificationBatch:
    """A batch reduced to class indices.

    Attributes:
        true: int64 ``(N,)`` true class indices.
        pred: int64 ``(N,)`` predicted class indices.
        num_classes: the size of the class index space the batch lives in.
        fixed: ``True`` when ``num_classes`` comes from the output width or the caller
            (a score matrix has one column per class), ``False`` when it was inferred
            from the largest label seen.
    """

    true: np.ndarray
    pred: np.ndarray
    num_classes: int
    fixed: bool


def classification_batch(
    y_true: Any, y_pred: Any, threshold: float, num_classes: int | None
) -> ClassificationBatch:
    """Reduces ``(y_true, y_pred)`` to class indices (see the module docstring for forms).

    Args:
        y_true: true labels.
        y_pred: predicted labels, binary scores or class scores.
        threshold: the decision threshold for single-column float scores.
        num_classes: the number of classes, or ``None`` to take it from the data.

    Returns:
        The batch as class indices.
    """
    pred_arr = _as_real(y_pred, "y_pred")
    if pred_arr.ndim == 0 or pred_arr.ndim > 2:
        raise ValueError(
            f"y_pred must have shape (N,), (N, 1) or (N, C); got {format_shape(pred_arr.shape)}"
        )
    columns = pred_arr.shape[1] if pred_arr.ndim == 2 and pred_arr.shape[1] >= 2 else None
    true = true_labels(y_true, columns)
    _check_same_length(true, pred_arr)
    if columns is not None:
        if pred_arr.dtype.kind != "f":
            raise TypeError(
                f"y_pred of shape {format_shape(pred_arr.shape)} must hold float class "
                f"scores; got dtype {pred_arr.dtype}"
            )
        _check_finite(pred_arr, "y_pred")
        if num_classes is not None and num_classes != columns:
            raise ValueError(
                f"y_pred has {columns} columns but num_classes={num_classes}; they must match"
            )
        pred = np.argmax(pred_arr, axis=1).astype(np.int64)
        size, fixed, source = columns, True, f"the {columns} columns of y_pred"
    elif pred_arr.dtype.kind == "f":
        _check_finite(pred_arr, "y_pred")
        pred = (pred_arr.reshape(-1) > threshold).astype(np.int64)
        if num_classes is not None and num_classes != 2:
            raise ValueError(
                "single-column float y_pred holds binary scores, so num_classes must be 2 "
                f"or None; got {num_classes}"
            )
        size, fixed, source = 2, True, "binary scores in y_pred (labels must be 0 or 1)"
    else:
        pred = _integral_labels(pred_arr, "y_pred")
        seen = int(max(true.max(initial=0), pred.max(initial=0))) + 1
        size, fixed = (num_classes, True) if num_classes is not None else (max(seen, 2), False)
        source = f"num_classes={size}" if fixed else "the largest label in y_true and y_pred"
        if pred.size and pred.max() >= size:
            raise ValueError(
                f"y_pred holds class {int(pred.max())}, outside [0, {size}) set by {source}"
            )
    if true.size and true.max() >= size:
        raise ValueError(
            f"y_true holds class {int(true.max())}, outside [0, {size}) set by {source}"
        )
    if size > MAX_CLASSES:
        # The counts live in a dense size x size matrix.
        raise ValueError(
            f"{size} classes (from {source}) exceed the supported {MAX_CLASSES}; class labels "
            "must be indices 0..C-1"
        )
    return ClassificationBatch(true, pred, size, fixed)


def score_batch(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates labels and float scores for the ranking metrics.

    Args:
        y_true: class indices ``(N,)``/``(N, 1)`` (or one-hot rows matching ``y_score``).
        y_score: float scores: ``(N,)``/``(N, 1)`` for class 1 of a binary model, or
            ``(N, C)`` with one column per class.

    Returns:
        ``(labels, scores)``: int64 ``(N,)`` and float64 ``(N,)`` or ``(N, C)``.
    """
    scores = _as_real(y_score, "y_score")
    if scores.ndim == 0 or scores.ndim > 2:
        raise ValueError(
            f"y_score must have shape (N,), (N, 1) or (N, C); got {format_shape(scores.shape)}"
        )
    columns = scores.shape[1] if scores.ndim == 2 and scores.shape[1] >= 2 else None
    labels = true_labels(y_true, columns)
    _check_same_length(labels, scores)
    scores = scores.astype(np.float64).reshape(len(scores), columns or 1)
    _check_finite(scores, "y_score")
    limit = columns if columns is not None else 2
    if labels.size and labels.max() >= limit:
        raise ValueError(
            f"y_true holds class {int(labels.max())}, but y_score has scores for classes "
            f"[0, {limit})"
        )
    return labels, (scores[:, 0] if columns is None else scores)


def regression_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates regression targets and predictions; returns float64 ``(N, D)`` arrays.

    ``(N,)`` and ``(N, 1)`` are interchangeable; trailing dimensions are flattened into
    ``D`` outputs.
    """
    true = _as_real(y_true, "y_true")
    pred = _as_real(y_pred, "y_pred")
    if true.ndim == 0 or pred.ndim == 0:
        raise ValueError(
            "y_true and y_pred must have a sample dimension; got shapes "
            f"{format_shape(true.shape)} and {format_shape(pred.shape)}"
        )
    same = true.shape == pred.shape or (_is_column(true) and _is_column(pred))
    if not same or len(true) != len(pred):
        raise ValueError(
            "y_true and y_pred must have the same shape; got y_true "
            f"{format_shape(true.shape)} and y_pred {format_shape(pred.shape)}"
        )
    outputs = int(np.prod(true.shape[1:], dtype=np.int64))
    if outputs == 0:
        raise ValueError(f"y_true has no outputs per sample; got shape {format_shape(true.shape)}")
    true = true.astype(np.float64).reshape(len(true), outputs)
    pred = pred.astype(np.float64).reshape(len(pred), outputs)
    _check_finite(true, "y_true")
    _check_finite(pred, "y_pred")
    return true, pred


def require_samples(count: int, what: str) -> None:
    """Raises ``ValueError`` for an empty input, as scikit-learn does."""
    if count == 0:
        raise ValueError(f"{what}: found empty input (0 samples); at least 1 is required")
