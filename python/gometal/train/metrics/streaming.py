"""Metric objects that accumulate batch by batch, for evaluation loops.

A loop calls ``reset()``, then ``update(y_true, y_pred)`` once per batch with what the
model produced (class probabilities ``(N, C)``, a binary model's ``(N,)``/``(N, 1)``
probability, or regression predictions), then ``result()``. The result equals the
one-shot function of the same name on all the batches concatenated: the classification
metrics keep a confusion matrix (counts, not samples), the regression metrics keep
per-output sums, and only the AUC metrics, which rank every score, keep the scores.

``state()`` returns what a metric has accumulated as a dict of plain NumPy arrays and
ints, and ``merge_state(state)`` adds such a dict from another metric of the same kind:
the evaluation of a distributed job merges its ranks' states instead of their samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._inputs import (
    check_average,
    check_label_list,
    check_num_classes,
    check_threshold,
    check_zero_division,
    classification_batch,
    regression_pair,
    require_samples,
    score_batch,
)
from .classification import (
    accuracy_from_confusion,
    check_k,
    check_pos_label,
    confusion_from_counts,
    count_confusion,
    ratio_from_confusion,
    top_k_hits,
    warn_trivial_k,
)
from .metric_base import Metric, checked_state, tagged_state
from .ranking import average_precision, check_binary_pos_label, roc_auc
from .regression import RegressionSums, check_multioutput, regression_from_sums

# The per-output arrays of RegressionSums: every field but the count.
_REGRESSION_FIELDS = tuple(f.name for f in dataclasses.fields(RegressionSums) if f.name != "count")


class _ConfusionMetric(Metric):
    """Accumulates a confusion matrix; subclasses finish it into their score."""

    def __init__(
        self, *, threshold: float = 0.5, num_classes: int | None = None, name: str | None = None
    ) -> None:
        self.threshold = check_threshold(threshold)
        self.num_classes = check_num_classes(num_classes)
        super().__init__(name)

    def reset(self) -> None:
        self._counts: np.ndarray | None = None
        self._fixed = False

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        batch = classification_batch(y_true, y_pred, self.threshold, self.num_classes)
        self._add_counts(count_confusion(batch), batch.fixed, "this batch")

    def state(self) -> dict[str, Any]:
        """The accumulated counts: ``counts`` ``(K, K)`` int64 (``(0, 0)`` before any
        batch) and ``fixed``, 1 when ``K`` is the model's class count, not the largest
        class seen (as ``update`` grows the matrix).

        Example:
            >>> metric = Accuracy()
            >>> metric.update([0, 1], [[0.9, 0.1], [0.8, 0.2]])
            >>> metric.state()["counts"].tolist()
            [[1, 0], [1, 0]]
        """
        counts = np.zeros((0, 0), np.int64) if self._counts is None else self._counts.copy()
        return tagged_state(self, self._state_settings(), counts=counts, fixed=int(self._fixed))

    def merge_state(self, state: dict[str, Any]) -> None:
        """Adds another metric's ``state()``, as if its batches had been updated here.

        Raises:
            TypeError, ValueError: not the state of this class with the same threshold,
                or counts that are not a square matrix of non-negative integers, or that
                cover other classes than the model's.
        """
        state = checked_state(self, state, self._state_settings(), ("counts", "fixed"))
        counts = np.asarray(state["counts"])
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.dtype.kind not in "iu":
            raise ValueError(
                f"{self.name}.merge_state: counts must be a square integer matrix; got "
                f"{counts.dtype} of shape {counts.shape}"
            )
        if counts.size and counts.min() < 0:
            raise ValueError(f"{self.name}.merge_state: counts must be >= 0")
        if counts.size:
            self._add_counts(counts.astype(np.int64), bool(state["fixed"]), "this state")

    def _add_counts(self, counts: np.ndarray, fixed: bool, source: str) -> None:
        """Adds a confusion matrix, growing the total to the larger of the two sizes."""
        if self._counts is None:
            self._counts, self._fixed = counts.copy(), fixed
            return
        size, classes = len(self._counts), len(counts)
        if self._fixed and (fixed and classes != size or classes > size):
            raise ValueError(
                f"{self.name}: {source} covers {classes} classes but earlier batches had {size}"
            )
        if fixed and not self._fixed and size > classes:
            raise ValueError(
                f"{self.name}: earlier batches hold class {size - 1}, outside {source}'s "
                f"{classes} classes"
            )
        grown = max(size, classes)
        total = np.zeros((grown, grown), dtype=np.int64)
        total[:size, :size] += self._counts
        total[:classes, :classes] += counts
        self._counts, self._fixed = total, self._fixed or fixed

    def _state_settings(self) -> tuple:
        return (self.threshold, self.num_classes)

    def _accumulated(self) -> np.ndarray:
        total = 0 if self._counts is None else int(self._counts.sum())
        require_samples(total, f"{self.name}.result() (call update() first)")
        return self._counts


class Accuracy(_ConfusionMetric):
    """Streaming accuracy, equal to ``gometal.metrics.accuracy`` on all batches.

    Args:
        threshold: a single-column score above it predicts class 1.
        name: the recorded name; default ``"accuracy"``.

    Example:
        >>> metric = Accuracy()
        >>> metric.update([0, 1], [[0.9, 0.1], [0.8, 0.2]])
        >>> metric.update([1], [[0.3, 0.7]])
        >>> metric.result()
        0.6666666666666666
    """

    name = "accuracy"

    def __init__(self, *, threshold: float = 0.5, name: str | None = None) -> None:
        super().__init__(threshold=threshold, name=name)

    def result(self) -> float:
        return accuracy_from_confusion(self._accumulated())


class ConfusionMatrix(_ConfusionMetric):
    """Streaming confusion matrix, equal to ``gometal.metrics.confusion_matrix``.

    Args:
        labels: the classes of the rows and columns, in order.
        num_classes: the number of classes (taken from ``y_pred``'s width otherwise).
        threshold: a single-column score above it predicts class 1.
        name: the recorded name; default ``"confusion_matrix"``.

    Example:
        >>> metric = ConfusionMatrix()
        >>> metric.update([0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
        >>> metric.result().tolist()
        [[1, 0], [1, 1]]
    """

    name = "confusion_matrix"

    def __init__(
        self,
        *,
        labels: ArrayLike | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        name: str | None = None,
    ) -> None:
        self.labels = check_label_list(labels)
        super().__init__(threshold=threshold, num_classes=num_classes, name=name)

    def result(self) -> np.ndarray:
        return confusion_from_counts(self._accumulated(), self._fixed, self.labels)


class _RatioMetric(_ConfusionMetric):
    """Precision, recall, F1, specificity or NPV from the accumulated confusion matrix."""

    _metric = ""

    def __init__(
        self,
        *,
        average: str | None = "binary",
        threshold: float = 0.5,
        pos_label: int = 1,
        labels: ArrayLike | None = None,
        num_classes: int | None = None,
        zero_division: Any = "warn",
        name: str | None = None,
    ) -> None:
        check_average(average)
        check_zero_division(zero_division)
        self.average = average
        self.pos_label = check_pos_label(pos_label)
        self.labels = check_label_list(labels)
        self.zero_division = zero_division
        if name is None:
            suffix = {"binary": "", None: "_per_class"}.get(average, f"_{average}")
            name = self._metric + suffix
        super().__init__(threshold=threshold, num_classes=num_classes, name=name)

    def result(self) -> float | np.ndarray:
        return ratio_from_confusion(
            self._accumulated(),
            self._metric,
            average=self.average,
            pos_label=self.pos_label,
            labels=self.labels,
            zero_division=self.zero_division,
        )


_RATIO_DOC = """Streaming {what}, equal to ``gometal.metrics.{function}`` on all batches.

    Args:
        average: ``"binary"``, ``"macro"``, ``"micro"``, ``"weighted"`` or ``None``.
        threshold: a single-column score above it predicts class 1.
        pos_label: the class reported by ``average="binary"``.
        labels: class indices to average over; default: those present.
        num_classes: the number of classes, to validate labels against.
        zero_division: the value of a 0/0 ratio: ``"warn"``, 0.0, 1.0 or NaN.
        name: the recorded name; default ``"{metric}"`` plus ``"_<average>"`` unless binary.

    Example:
        >>> metric = {cls}(average="macro")
        >>> metric.update([0, 1], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
        >>> metric.update([2, 2], [[0.1, 0.2, 0.7], [0.1, 0.6, 0.3]])
        >>> round(metric.result(), 4)
        {value}
    """


class Precision(_RatioMetric):
    __doc__ = _RATIO_DOC.format(
        what="precision", function="precision", metric="precision", cls="Precision", value="0.8333"
    )
    _metric = "precision"


class Recall(_RatioMetric):
    __doc__ = _RATIO_DOC.format(
        what="recall", function="recall", metric="recall", cls="Recall", value="0.8333"
    )
    _metric = "recall"


class F1Score(_RatioMetric):
    __doc__ = _RATIO_DOC.format(
        what="F1", function="f1_score", metric="f1", cls="F1Score", value="0.7778"
    )
    _metric = "f1"


class Specificity(_RatioMetric):
    __doc__ = _RATIO_DOC.format(
        what="specificity",
        function="specificity",
        metric="specificity",
        cls="Specificity",
        value="0.8889",
    )
    _metric = "specificity"


class NPV(_RatioMetric):
    __doc__ = _RATIO_DOC.format(
        what="negative predictive value", function="npv", metric="npv", cls="NPV", value="0.8889"
    )
    _metric = "npv"


class TopKAccuracy(Metric):
    """Streaming top-k accuracy, equal to ``gometal.metrics.top_k_accuracy``.

    Keeps two counts (hits and samples).

    Args:
        k: how many of the best-scored classes count (an integer >= 1).
        threshold: the decision threshold for single-column scores (top-1).
        name: the recorded name; default ``"top_<k>_accuracy"``.

    Example:
        >>> metric = TopKAccuracy(2)
        >>> metric.update([2, 0], [[0.5, 0.3, 0.2], [0.3, 0.6, 0.1]])
        >>> metric.result()
        0.5
    """

    def __init__(self, k: int, *, threshold: float = 0.5, name: str | None = None) -> None:
        self.k = check_k(k)
        self.threshold = check_threshold(threshold)
        super().__init__(name if name is not None else f"top_{self.k}_accuracy")

    def reset(self) -> None:
        self._hits = self._count = 0
        self._warned = False

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        hits, count, num_classes = top_k_hits(y_true, y_pred, self.k, self.threshold)
        if count and not self._warned:
            warn_trivial_k(self.k, num_classes)
            self._warned = True
        self._hits += hits
        self._count += count

    def result(self) -> float:
        require_samples(self._count, f"{self.name}.result() (call update() first)")
        return self._hits / self._count

    def state(self) -> dict[str, Any]:
        """The two counts: ``hits`` and ``count`` (ints)."""
        return tagged_state(self, self._state_settings(), hits=self._hits, count=self._count)

    def merge_state(self, state: dict[str, Any]) -> None:
        """Adds another ``TopKAccuracy``'s ``state()`` (same ``k`` and threshold).

        Raises:
            TypeError, ValueError: another metric's state, or counts that are not
                integers with ``0 <= hits <= count``.
        """
        state = checked_state(self, state, self._state_settings(), ("hits", "count"))
        hits, count = state["hits"], state["count"]
        if (
            not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (hits, count)
            )
            or not 0 <= hits <= count
        ):
            raise ValueError(
                f"{self.name}.merge_state: hits and count must be integers with "
                f"0 <= hits <= count; got hits={hits!r}, count={count!r}"
            )
        self._hits += int(hits)
        self._count += int(count)

    def _state_settings(self) -> tuple:
        return (self.k, self.threshold)


def _score_columns(scores: np.ndarray) -> str:
    return "1 score column" if scores.ndim == 1 else f"{scores.shape[1]} score columns"


class _ScoreMetric(Metric):
    """Keeps every label and score: ranking metrics need the whole ordering."""

    _function: Any = None
    _base_name = ""

    def __init__(
        self, *, average: str | None = "macro", pos_label: int = 1, name: str | None = None
    ) -> None:
        check_average(average, ("macro", "weighted", "micro", None))
        self.average = average
        self.pos_label = check_binary_pos_label(pos_label)
        if name is None:
            suffix = {"macro": "", None: "_per_class"}.get(average, f"_{average}")
            name = self._base_name + suffix
        super().__init__(name)

    def reset(self) -> None:
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        labels, scores = score_batch(y_true, y_pred)
        if self._scores and self._scores[0].shape[1:] != scores.shape[1:]:
            raise ValueError(
                f"{self.name}: this batch has {_score_columns(scores)} but earlier batches "
                f"had {_score_columns(self._scores[0])}"
            )
        self._labels.append(labels)
        self._scores.append(scores)

    def state(self) -> dict[str, Any]:
        """Every label and score so far: ``labels`` int64 ``(N,)`` and ``scores`` float64
        ``(N,)`` or ``(N, C)`` (ranking needs them all)."""
        if not self._labels:
            return tagged_state(self, (), labels=np.zeros(0, np.int64), scores=np.zeros(0))
        return tagged_state(
            self, (), labels=np.concatenate(self._labels), scores=np.concatenate(self._scores)
        )

    def merge_state(self, state: dict[str, Any]) -> None:
        """Adds another metric's ``state()``, after the labels and scores held here.

        Raises:
            TypeError, ValueError: another metric's state, labels and scores of different
                lengths, or a score width other than the earlier batches'.
        """
        state = checked_state(self, state, (), ("labels", "scores"))
        labels, scores = np.asarray(state["labels"]), np.asarray(state["scores"])
        if labels.ndim != 1 or scores.ndim not in (1, 2) or len(scores) != len(labels):
            raise ValueError(
                f"{self.name}.merge_state: expected labels (N,) and scores (N,) or (N, C); "
                f"got labels {labels.shape} and scores {scores.shape}"
            )
        if len(labels):
            self.update(labels, scores)

    def result(self) -> float | np.ndarray:
        count = sum(len(labels) for labels in self._labels)
        require_samples(count, f"{self.name}.result() (call update() first)")
        return type(self)._function(
            np.concatenate(self._labels),
            np.concatenate(self._scores),
            average=self.average,
            pos_label=self.pos_label,
        )


class AUCROC(_ScoreMetric):
    """Streaming ROC AUC, equal to ``gometal.metrics.roc_auc`` on all batches.

    Args:
        average: for ``C >= 3`` classes: ``"macro"``, ``"weighted"``, ``"micro"`` or
            ``None``.
        pos_label: the positive class (0 or 1) for binary scores.
        name: the recorded name; default ``"auc_roc"`` (plus ``"_<average>"`` unless macro).

    Example:
        >>> metric = AUCROC()
        >>> metric.update([0, 0], [0.1, 0.4])
        >>> metric.update([1, 1], [0.35, 0.8])
        >>> metric.result()
        0.75
    """

    _function = staticmethod(roc_auc)
    _base_name = "auc_roc"


class AUCPR(_ScoreMetric):
    """Streaming average precision, equal to ``gometal.metrics.average_precision``.

    Args:
        average: for ``C >= 3`` classes: ``"macro"``, ``"weighted"``, ``"micro"`` or
            ``None``.
        pos_label: the positive class (0 or 1) for binary scores.
        name: the recorded name; default ``"auc_pr"`` (plus ``"_<average>"`` unless macro).

    Example:
        >>> metric = AUCPR()
        >>> metric.update([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        >>> metric.result()
        0.8333333333333333
    """

    _function = staticmethod(average_precision)
    _base_name = "auc_pr"


class _RegressionMetric(Metric):
    """Accumulates per-output sums; subclasses name the metric they finish."""

    _metric = ""

    def __init__(self, *, multioutput: str = "uniform_average", name: str | None = None) -> None:
        self.multioutput = check_multioutput(multioutput)
        super().__init__(name if name is not None else self._metric)

    def reset(self) -> None:
        self._sums: RegressionSums | None = None

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        batch = RegressionSums.of(*regression_pair(y_true, y_pred))
        self._sums = batch if self._sums is None else self._sums.merge(batch)

    def state(self) -> dict[str, Any]:
        """The per-output sums: ``count`` (an int) and float64 ``(D,)`` arrays
        ``abs_error``, ``sq_error``, ``mean_true``, ``sq_dev_true`` and ``abs_true``
        (``(0,)`` before any batch)."""
        sums = self._sums
        arrays = {
            k: np.zeros(0) if sums is None else getattr(sums, k).copy() for k in _REGRESSION_FIELDS
        }
        return tagged_state(self, (), count=0 if sums is None else sums.count, **arrays)

    def merge_state(self, state: dict[str, Any]) -> None:
        """Adds another metric's ``state()`` (Chan et al.'s update for the R² variance).

        Raises:
            TypeError, ValueError: another metric's state, arrays of unequal or other
                lengths than the earlier batches' outputs, or a negative count.
        """
        state = checked_state(self, state, (), ("count", *_REGRESSION_FIELDS))
        count = state["count"]
        arrays = {k: np.asarray(state[k], np.float64) for k in _REGRESSION_FIELDS}
        shapes = {a.shape for a in arrays.values()}
        width = None if self._sums is None else self._sums.abs_error.shape
        if not isinstance(count, (int, np.integer)) or count < 0 or len(shapes) != 1:
            raise ValueError(
                f"{self.name}.merge_state: expected a count >= 0 and equal-length sums; got "
                f"count={count!r} and sums of shapes {sorted(shapes)}"
            )
        if count == 0:
            return
        if width is not None and shapes != {width}:
            raise ValueError(
                f"{self.name}.merge_state: this state has {shapes.pop()} outputs per sample "
                f"but earlier batches had {width}"
            )
        sums = RegressionSums(count=int(count), **arrays)
        self._sums = sums if self._sums is None else self._sums.merge(sums)

    def result(self) -> float | np.ndarray:
        count = 0 if self._sums is None else self._sums.count
        require_samples(count, f"{self.name}.result() (call update() first)")
        return regression_from_sums(self._sums, self._metric, self.multioutput)


_REGRESSION_DOC = """Streaming {what}, equal to ``gometal.metrics.{function}`` on all batches.

    Args:
        multioutput: ``"uniform_average"`` or ``"raw_values"`` (ignored by NMAE).
        name: the recorded name; default ``"{metric}"``.

    Example:
        >>> metric = {cls}()
        >>> metric.update([1.0, 2.0], [1.5, 2.0])
        >>> metric.update([4.0], [3.0])
        >>> round(metric.result(), 6)
        {value}
    """


class MAE(_RegressionMetric):
    __doc__ = _REGRESSION_DOC.format(
        what="mean absolute error",
        function="mean_absolute_error",
        metric="mae",
        cls="MAE",
        value="0.5",
    )
    _metric = "mae"


class MSE(_RegressionMetric):
    __doc__ = _REGRESSION_DOC.format(
        what="mean squared error",
        function="mean_squared_error",
        metric="mse",
        cls="MSE",
        value="0.416667",
    )
    _metric = "mse"


class RMSE(_RegressionMetric):
    __doc__ = _REGRESSION_DOC.format(
        what="root mean squared error",
        function="root_mean_squared_error",
        metric="rmse",
        cls="RMSE",
        value="0.645497",
    )
    _metric = "rmse"


class R2(_RegressionMetric):
    __doc__ = _REGRESSION_DOC.format(
        what="R²", function="r2_score", metric="r2", cls="R2", value="0.732143"
    )
    _metric = "r2"


class NMAE(_RegressionMetric):
    __doc__ = _REGRESSION_DOC.format(
        what="NMAE (go-metal's sum |error| / sum |target|)",
        function="nmae",
        metric="nmae",
        cls="NMAE",
        value="0.214286",
    )
    _metric = "nmae"
