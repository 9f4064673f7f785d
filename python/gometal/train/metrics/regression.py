"""Regression metrics: MAE, MSE, RMSE, R² and go-metal's NMAE.

Each is computed from per-output sums (``RegressionSums``) that batches merge exactly, so
the streaming metrics give the one-shot numbers. Targets of shape ``(N, D)`` (or more
trailing dimensions, flattened) have ``D`` outputs; ``multioutput="uniform_average"``
averages the per-output scores as scikit-learn does (for RMSE, the mean of the per-output
roots), and ``"raw_values"`` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._inputs import regression_pair, require_samples, warn_undefined

_MULTIOUTPUT = ("uniform_average", "raw_values")


@dataclass
class RegressionSums:
    """Per-output sufficient statistics of a set of (target, prediction) pairs.

    Attributes:
        count: number of samples.
        abs_error: ``sum |pred - true|`` per output.
        sq_error: ``sum (pred - true)^2`` per output.
        mean_true: mean target per output.
        sq_dev_true: ``sum (true - mean_true)^2`` per output (for R²).
        abs_true: ``sum |true|`` per output (for NMAE).
    """

    count: int
    abs_error: np.ndarray
    sq_error: np.ndarray
    mean_true: np.ndarray
    sq_dev_true: np.ndarray
    abs_true: np.ndarray

    @classmethod
    def of(cls, y_true: np.ndarray, y_pred: np.ndarray) -> RegressionSums:
        """Sums of one validated float64 ``(N, D)`` pair."""
        error = y_pred - y_true
        count = len(y_true)
        mean = y_true.mean(axis=0) if count else np.zeros(y_true.shape[1])
        return cls(
            count=count,
            abs_error=np.abs(error).sum(axis=0),
            sq_error=np.square(error).sum(axis=0),
            mean_true=mean,
            sq_dev_true=np.square(y_true - mean).sum(axis=0),
            abs_true=np.abs(y_true).sum(axis=0),
        )

    def merge(self, other: RegressionSums) -> RegressionSums:
        """The sums of both sets together (Chan et al.'s pairwise update for the variance)."""
        if other.abs_error.shape != self.abs_error.shape:
            raise ValueError(
                f"this batch has {other.abs_error.shape[0]} outputs per sample but earlier "
                f"batches had {self.abs_error.shape[0]}"
            )
        count = self.count + other.count
        if count == 0:
            return self
        delta = other.mean_true - self.mean_true
        return RegressionSums(
            count=count,
            abs_error=self.abs_error + other.abs_error,
            sq_error=self.sq_error + other.sq_error,
            mean_true=self.mean_true + delta * (other.count / count),
            sq_dev_true=self.sq_dev_true
            + other.sq_dev_true
            + np.square(delta) * (self.count * other.count / count),
            abs_true=self.abs_true + other.abs_true,
        )


def check_multioutput(multioutput: Any) -> str:
    """Validates ``multioutput``: ``"uniform_average"`` or ``"raw_values"``."""
    if not isinstance(multioutput, str) or multioutput not in _MULTIOUTPUT:
        raise ValueError(f"multioutput must be one of {list(_MULTIOUTPUT)}; got {multioutput!r}")
    return multioutput


def _reduce(per_output: np.ndarray, multioutput: str) -> float | np.ndarray:
    return per_output if multioutput == "raw_values" else float(per_output.mean())


def regression_from_sums(
    sums: RegressionSums, metric: str, multioutput: str = "uniform_average"
) -> float | np.ndarray:
    """Finishes ``"mae"``, ``"mse"``, ``"rmse"``, ``"r2"`` or ``"nmae"`` from the sums.

    Args:
        sums: the accumulated statistics.
        metric: which metric.
        multioutput: ``"uniform_average"`` or ``"raw_values"`` (NMAE pools all outputs).

    Returns:
        The score, or one score per output for ``"raw_values"``.
    """
    require_samples(sums.count, metric)
    if metric == "mae":
        return _reduce(sums.abs_error / sums.count, multioutput)
    if metric == "mse":
        return _reduce(sums.sq_error / sums.count, multioutput)
    if metric == "rmse":
        return _reduce(np.sqrt(sums.sq_error / sums.count), multioutput)
    if metric == "nmae":
        scale = sums.abs_true.sum()
        if scale == 0:
            warn_undefined("NMAE is undefined when every target is 0 (sum |y| = 0); set to NaN")
            return float("nan")
        return float(sums.abs_error.sum() / scale)
    if sums.count < 2:
        warn_undefined("R^2 is undefined with fewer than two samples; set to NaN")
        return float("nan")
    # scikit-learn's force_finite rule: a constant target scores 1.0 if predicted exactly.
    constant = sums.sq_dev_true == 0
    ratio = sums.sq_error / np.where(constant, 1.0, sums.sq_dev_true)
    per_output = np.where(constant, np.where(sums.sq_error == 0, 1.0, 0.0), 1.0 - ratio)
    return _reduce(per_output, multioutput)


def _regression(
    metric: str, y_true: ArrayLike, y_pred: ArrayLike, multioutput: Any = "uniform_average"
) -> float | np.ndarray:
    multioutput = check_multioutput(multioutput)
    true, pred = regression_pair(y_true, y_pred)
    require_samples(len(true), metric)
    return regression_from_sums(RegressionSums.of(true, pred), metric, multioutput)


def mean_absolute_error(
    y_true: ArrayLike, y_pred: ArrayLike, *, multioutput: str = "uniform_average"
) -> float | np.ndarray:
    """Mean absolute error ``mean |y_pred - y_true|``.

    Args:
        y_true: targets ``(N,)`` or ``(N, D, ...)``.
        y_pred: predictions of the same shape (``(N,)`` and ``(N, 1)`` are interchangeable).
        multioutput: ``"uniform_average"`` (mean over outputs) or ``"raw_values"``.

    Returns:
        The MAE, as ``sklearn.metrics.mean_absolute_error``.

    Example:
        >>> mean_absolute_error([1.0, 2.0, 4.0], [1.5, 2.0, 3.0])
        0.5
    """
    return _regression("mae", y_true, y_pred, multioutput)


def mean_squared_error(
    y_true: ArrayLike, y_pred: ArrayLike, *, multioutput: str = "uniform_average"
) -> float | np.ndarray:
    """Mean squared error ``mean (y_pred - y_true)^2``.

    Args:
        y_true: targets ``(N,)`` or ``(N, D, ...)``.
        y_pred: predictions of the same shape.
        multioutput: ``"uniform_average"`` or ``"raw_values"``.

    Returns:
        The MSE, as ``sklearn.metrics.mean_squared_error``.

    Example:
        >>> mean_squared_error([1.0, 2.0, 4.0], [1.5, 2.0, 3.0])
        0.4166666666666667
    """
    return _regression("mse", y_true, y_pred, multioutput)


def root_mean_squared_error(
    y_true: ArrayLike, y_pred: ArrayLike, *, multioutput: str = "uniform_average"
) -> float | np.ndarray:
    """Root mean squared error, per output, then averaged over outputs.

    Args:
        y_true: targets ``(N,)`` or ``(N, D, ...)``.
        y_pred: predictions of the same shape.
        multioutput: ``"uniform_average"`` (the mean of the per-output RMSEs, as
            scikit-learn) or ``"raw_values"``.

    Returns:
        The RMSE, as ``sklearn.metrics.root_mean_squared_error``.

    Example:
        >>> root_mean_squared_error([0.0, 0.0], [3.0, 4.0])
        3.5355339059327378
    """
    return _regression("rmse", y_true, y_pred, multioutput)


def r2_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, multioutput: str = "uniform_average"
) -> float | np.ndarray:
    """Coefficient of determination ``1 - SS_res / SS_tot`` per output.

    Args:
        y_true: targets ``(N,)`` or ``(N, D, ...)``.
        y_pred: predictions of the same shape.
        multioutput: ``"uniform_average"`` or ``"raw_values"``.

    Returns:
        R², as ``sklearn.metrics.r2_score``: an output with a constant target scores 1.0
        when predicted exactly and 0.0 otherwise; fewer than two samples give NaN with an
        ``UndefinedMetricWarning``.

    Example:
        >>> r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
        0.5
    """
    return _regression("r2", y_true, y_pred, multioutput)


def nmae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Normalised mean absolute error ``sum |y_pred - y_true| / sum |y_true|``.

    This is go-metal's definition (its regression "accuracy" is ``1 - NMAE``), pooled
    over every element of every output; it is not scikit-learn's. When every target is 0
    the ratio is undefined: NaN with an ``UndefinedMetricWarning``.

    Args:
        y_true: targets ``(N,)`` or ``(N, D, ...)``.
        y_pred: predictions of the same shape.

    Returns:
        The NMAE (0 is perfect).

    Example:
        >>> nmae([1.0, -2.0, 1.0], [1.5, -2.0, 0.5])
        0.25
    """
    return _regression("nmae", y_true, y_pred)
