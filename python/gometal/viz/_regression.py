"""Regression and model-selection plot builders: scatter, residuals, Q-Q, learning and
validation curves, prediction intervals (re-exported by ``plots.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import ndtri

from ._checks import as_1d, as_finite_1d, check_same_length
from .payload import make_payload, point, series


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    truth, pred = as_finite_1d(y_true, "y_true"), as_finite_1d(y_pred, "y_pred")
    check_same_length(("y_true", truth), ("y_pred", pred))
    return truth, pred


def _regression_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    residual = truth - pred
    total = float(np.sum((truth - truth.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 0.0
    return {
        "r2": r2,
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "mae": float(np.mean(np.abs(residual))),
        "n": len(truth),
    }


def regression_scatter(
    y_true: Any, y_pred: Any, *, title: str = "Predicted vs true", model_name: str = "model"
) -> dict:
    """Predicted against true values with the identity line.

    Args:
        y_true: the targets.
        y_pred: the predictions.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``regression_scatter`` payload; ``metrics`` hold ``r2``, ``rmse``, ``mae``, ``n``.

    Example:
        >>> regression_scatter([1, 2, 3], [1, 2, 3])["metrics"]["r2"]
        1.0
    """
    truth, pred = _pair(y_true, y_pred)
    lo, hi = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
    return make_payload(
        "regression_scatter",
        title,
        [
            series("predictions", "scatter", [point(a, b) for a, b in zip(truth, pred)]),
            series("ideal (y = x)", "line", [point(lo, lo), point(hi, hi)], {"dash": "dash"}),
        ],
        model_name=model_name,
        config={"x_label": "true value", "y_label": "predicted value"},
        metrics=_regression_metrics(truth, pred),
    )


def residual_plot(
    y_true: Any, y_pred: Any, *, title: str = "Residuals", model_name: str = "model"
) -> dict:
    """Residuals (true - predicted) against the predictions, with the zero line.

    Args:
        y_true: the targets.
        y_pred: the predictions.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``residual_plot`` payload; ``metrics`` hold the residuals' ``mean`` and ``std``
        and the regression metrics.

    Example:
        >>> residual_plot([1, 2], [0, 2])["metrics"]["residual_mean"]
        0.5
    """
    truth, pred = _pair(y_true, y_pred)
    residual = truth - pred
    lo, hi = float(pred.min()), float(pred.max())
    metrics = {"residual_mean": float(residual.mean()), "residual_std": float(residual.std())}
    metrics.update(_regression_metrics(truth, pred))
    return make_payload(
        "residual_plot",
        title,
        [
            series("residuals", "scatter", [point(a, b) for a, b in zip(pred, residual)]),
            series("zero", "line", [point(lo, 0.0), point(hi, 0.0)], {"dash": "dash"}),
        ],
        model_name=model_name,
        config={"x_label": "predicted value", "y_label": "residual (true - predicted)"},
        metrics=metrics,
    )


def qq_points(values: Any) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Normal Q-Q points and their least-squares line.

    Theoretical quantiles are the normal quantiles of Filliben's estimates of the uniform
    order-statistic medians: ``m_n = 0.5 ** (1/n)``, ``m_1 = 1 - m_n`` and
    ``m_i = (i - 0.3175) / (n + 0.365)`` otherwise.

    Args:
        values: the sample (e.g. residuals), at least 2 values.

    Returns:
        ``(theoretical, ordered, slope, intercept, r)``: the line ``ordered ≈ slope *
        theoretical + intercept`` and its correlation ``r``.

    Example:
        >>> round(qq_points([-1.0, 0.0, 1.0])[4], 6)
        1.0
    """
    ordered = np.sort(as_finite_1d(values, "values"))
    n = len(ordered)
    if n < 2:
        raise ValueError(f"values must hold at least 2 numbers for a Q-Q plot, got {n}")
    medians = (np.arange(1, n + 1) - 0.3175) / (n + 0.365)
    medians[-1] = 0.5 ** (1.0 / n)
    medians[0] = 1.0 - medians[-1]
    theoretical = ndtri(medians)
    slope, intercept = np.polyfit(theoretical, ordered, 1)
    spread = ordered.std()
    r = float(np.corrcoef(theoretical, ordered)[0, 1]) if spread > 0 else 0.0
    return theoretical, ordered, float(slope), float(intercept), r


def qq_plot(
    residuals: Any, *, title: str = "Normal Q-Q plot of residuals", model_name: str = "model"
) -> dict:
    """A normal Q-Q plot: ordered values against normal quantiles, with the fitted line.

    Args:
        residuals: the sample, typically ``y_true - y_pred``.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``qq_plot`` payload (see :func:`qq_points`); ``metrics`` hold ``slope``,
        ``intercept`` and ``r`` (near 1 for normal residuals).

    Example:
        >>> qq_plot([0.1, -0.3, 0.2, 0.0])["plot_type"]
        'qq_plot'
    """
    theoretical, ordered, slope, intercept, r = qq_points(residuals)
    ends = [theoretical[0], theoretical[-1]]
    line = [point(t, slope * t + intercept) for t in ends]
    return make_payload(
        "qq_plot",
        title,
        [
            series("sample", "scatter", [point(a, b) for a, b in zip(theoretical, ordered)]),
            series("fit", "line", line, {"dash": "dash"}),
        ],
        model_name=model_name,
        config={"x_label": "theoretical normal quantile", "y_label": "ordered residual"},
        metrics={"slope": slope, "intercept": intercept, "r": r},
    )


def _score_table(scores: Any, name: str, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and std per row of a (points, folds) table; a 1-D table has no std."""
    table = np.asarray(scores, dtype=np.float64)
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2 or table.shape[0] != count:
        raise ValueError(
            f"{name} must have shape ({count},) or ({count}, folds), got {table.shape}"
        )
    if not np.isfinite(table).all():
        raise ValueError(f"{name} must be finite")
    std = table.std(axis=1) if table.shape[1] > 1 else None
    return table.mean(axis=1), std


def _curve_series(name: str, xs: Sequence[Any], mean: np.ndarray, std: np.ndarray | None):
    out = [series(name, "line", [point(x, m) for x, m in zip(xs, mean)], {"mode": "lines+markers"})]
    if std is not None:
        band = [point(x, m, lower=m - s, upper=m + s) for x, m, s in zip(xs, mean, std)]
        out.append(series(f"{name} ± 1 std", "band", band, {"opacity": 0.2}))
    return out


def diagnose_learning_curve(
    train_score: float,
    validation_score: float,
    higher_is_better: bool = True,
    target: float | None = None,
    gap_tolerance: float = 0.1,
) -> dict[str, Any]:
    """Classifies the end of a learning curve as over-, under- or well fitted.

    The rule, on the scores at the largest training size (oriented so higher is better;
    losses are negated): the relative gap is ``(train - validation) / max(|train|, 1e-12)``.
    A gap above ``gap_tolerance`` means ``"overfitting"``; otherwise a training score below
    ``target`` means ``"underfitting"`` (the model cannot even fit its training data);
    otherwise ``"good_fit"``.

    Args:
        train_score: the final mean training score (or loss).
        validation_score: the final mean validation score (or loss).
        higher_is_better: ``False`` for losses and errors.
        target: the training score counted as good enough; ``None`` uses 0.9 for scores
            (accuracy, R²) and skips the underfitting test for losses.
        gap_tolerance: the largest relative train-validation gap counted as a good fit.

    Returns:
        ``{"diagnosis", "relative_gap", "rule"}``.

    Example:
        >>> diagnose_learning_curve(1.0, 0.7)["diagnosis"]
        'overfitting'
    """
    sign = 1.0 if higher_is_better else -1.0
    train, val = sign * float(train_score), sign * float(validation_score)
    gap = (train - val) / max(abs(train), 1e-12)
    if target is None and higher_is_better:
        target = 0.9
    if gap > gap_tolerance:
        diagnosis = "overfitting"
    elif target is not None and train < sign * target:
        diagnosis = "underfitting"
    else:
        diagnosis = "good_fit"
    rule = (
        f"overfitting if relative train-validation gap > {gap_tolerance}; else underfitting if "
        f"the training score is worse than target={target}; else good_fit"
    )
    return {"diagnosis": diagnosis, "relative_gap": float(gap), "rule": rule}


def learning_curve(
    train_sizes: Any,
    train_scores: Any,
    validation_scores: Any,
    higher_is_better: bool = True,
    score_name: str = "score",
    target: float | None = None,
    gap_tolerance: float = 0.1,
    *,
    title: str = "Learning curve",
    model_name: str = "model",
) -> dict:
    """Training and validation score against the training-set size, with a diagnosis.

    Args:
        train_sizes: the training-set sizes.
        train_scores: ``(sizes,)`` or ``(sizes, folds)`` training scores.
        validation_scores: same shape, validation scores.
        higher_is_better: ``False`` for losses.
        score_name: the y-axis title.
        target: see :func:`diagnose_learning_curve`.
        gap_tolerance: see :func:`diagnose_learning_curve`.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``learning_curve`` payload: mean lines (and ± std bands with folds);
        ``metrics.diagnosis`` is ``"overfitting"``, ``"underfitting"`` or ``"good_fit"``.

    Example:
        >>> learning_curve([10, 20], [1.0, 0.99], [0.6, 0.7])["metrics"]["diagnosis"]
        'overfitting'
    """
    sizes = as_finite_1d(train_sizes, "train_sizes")
    train_mean, train_std = _score_table(train_scores, "train_scores", len(sizes))
    val_mean, val_std = _score_table(validation_scores, "validation_scores", len(sizes))
    verdict = diagnose_learning_curve(
        train_mean[-1], val_mean[-1], higher_is_better, target, gap_tolerance
    )
    out = _curve_series("training", sizes, train_mean, train_std)
    out += _curve_series("validation", sizes, val_mean, val_std)
    metrics = {
        "final_train_score": float(train_mean[-1]),
        "final_validation_score": float(val_mean[-1]),
        **verdict,
    }
    return make_payload(
        "learning_curve",
        title,
        out,
        model_name=model_name,
        config={"x_label": "training examples", "y_label": score_name},
        metrics=metrics,
    )


def validation_curve(
    param_values: Sequence[Any],
    train_scores: Any,
    validation_scores: Any,
    param_name: str = "parameter",
    higher_is_better: bool = True,
    *,
    title: str = "Validation curve",
    model_name: str = "model",
) -> dict:
    """Training and validation score against one hyperparameter's values.

    Args:
        param_values: the hyperparameter values (numbers or names).
        train_scores: ``(values,)`` or ``(values, folds)`` training scores.
        validation_scores: same shape, validation scores.
        param_name: the x-axis title.
        higher_is_better: ``False`` for losses; picks the best value.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``validation_curve`` payload; ``metrics`` hold ``best_param`` and ``best_score``
        (by mean validation score); ``config.x_log`` is set for positive numeric values
        spanning more than two decades.

    Example:
        >>> validation_curve([0.1, 1, 10], [0.9, 0.8, 0.7], [0.6, 0.75, 0.7])["metrics"]["best_param"]
        1
    """
    values = list(param_values)
    if not values:
        raise ValueError("param_values must not be empty")
    train_mean, train_std = _score_table(train_scores, "train_scores", len(values))
    val_mean, val_std = _score_table(validation_scores, "validation_scores", len(values))
    best = int(np.argmax(val_mean) if higher_is_better else np.argmin(val_mean))
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in values)
    xs = [v.item() if isinstance(v, np.generic) else (v if numeric else str(v)) for v in values]
    x_log = bool(numeric and min(xs) > 0 and max(xs) / min(xs) > 100)
    out = _curve_series("training", xs, train_mean, train_std)
    out += _curve_series("validation", xs, val_mean, val_std)
    return make_payload(
        "validation_curve",
        title,
        out,
        model_name=model_name,
        config={"x_label": param_name, "y_label": "score", "x_log": x_log},
        metrics={"best_param": xs[best], "best_score": float(val_mean[best])},
    )


def prediction_interval(
    y_pred: Any,
    lower: Any = None,
    upper: Any = None,
    y_true: Any = None,
    x: Any = None,
    level: float = 0.95,
    *,
    title: str = "Prediction intervals",
    model_name: str = "model",
) -> dict:
    """Predictions with an interval band, and the observed values when known.

    Without ``lower``/``upper`` the interval is ``y_pred ± z * s`` with ``s`` the residual
    standard deviation (``ddof=1``) and ``z`` the normal quantile of ``(1 + level) / 2``;
    that needs ``y_true``.

    Args:
        y_pred: the predictions.
        lower: the interval's lower ends (or ``None``).
        upper: the interval's upper ends (or ``None``).
        y_true: the observed values (needed without ``lower``/``upper``).
        x: the x positions (sorted along); defaults to the sample index.
        level: the nominal coverage of the normal interval, in (0, 1).
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``prediction_interval`` payload: a ``band`` series, the prediction line and
        (with ``y_true``) the observed points; ``metrics`` hold ``mean_width`` and
        ``coverage`` (the fraction of observed values inside the band).

    Example:
        >>> p = prediction_interval([1.0, 2.0], [0.5, 1.5], [1.5, 2.5], y_true=[1.2, 3.0])
        >>> p["metrics"]["coverage"]
        0.5
    """
    pred = as_finite_1d(y_pred, "y_pred")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    truth = None if y_true is None else as_finite_1d(y_true, "y_true")
    if truth is not None:
        check_same_length(("y_pred", pred), ("y_true", truth))
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper, or neither")
    if lower is None:
        if truth is None or len(truth) < 2:
            raise ValueError(
                "without lower/upper, y_true (>= 2 values) is needed to size the interval"
            )
        half = ndtri((1 + level) / 2) * np.std(truth - pred, ddof=1)
        low, high = pred - half, pred + half
    else:
        low, high = as_finite_1d(lower, "lower"), as_finite_1d(upper, "upper")
        check_same_length(("y_pred", pred), ("lower", low), ("upper", high))
        if np.any(low > high):
            raise ValueError("lower must be <= upper everywhere")
    xs = np.arange(len(pred), dtype=np.float64) if x is None else as_1d(x, "x")
    check_same_length(("y_pred", pred), ("x", xs))
    order = np.argsort(xs, kind="mergesort")
    band = [point(xs[i], pred[i], lower=low[i], upper=high[i]) for i in order]
    out = [
        series(
            f"{level:.0%} interval" if lower is None else "interval",
            "band",
            band,
            {"opacity": 0.25},
        ),
        series("prediction", "line", [point(xs[i], pred[i]) for i in order]),
    ]
    metrics: dict[str, Any] = {"mean_width": float(np.mean(high - low))}
    if lower is None:
        metrics["level"] = float(level)
    if truth is not None:
        out.append(series("observed", "scatter", [point(xs[i], truth[i]) for i in order]))
        metrics["coverage"] = float(np.mean((truth >= low) & (truth <= high)))
    return make_payload(
        "prediction_interval",
        title,
        out,
        model_name=model_name,
        config={"x_label": "sample" if x is None else "x", "y_label": "value"},
        metrics=metrics,
    )
