"""Feature-analysis plot builders: permutation importance, partial dependence and the
feature-correlation heatmap (re-exported by ``plots.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._checks import as_1d, as_2d, check_same_length, feature_names
from .payload import make_payload, point, series

Predict = Callable[[np.ndarray], Any]


def _accuracy(y_true: np.ndarray, output: np.ndarray) -> float:
    labels = output.argmax(axis=1) if output.ndim == 2 and output.shape[1] > 1 else output.ravel()
    if output.ndim == 2 and output.shape[1] == 1:
        labels = (labels > 0.5).astype(np.int64)  # one probability column
    return float(np.mean(labels == y_true.ravel()))


def _r2(y_true: np.ndarray, output: np.ndarray) -> float:
    truth, pred = y_true.reshape(len(y_true), -1), output.reshape(len(output), -1)
    total = np.sum((truth - truth.mean(axis=0)) ** 2)
    return float(1.0 - np.sum((truth - pred) ** 2) / total) if total > 0 else 0.0


def _neg_mse(y_true: np.ndarray, output: np.ndarray) -> float:
    return -float(np.mean((y_true.reshape(len(y_true), -1) - output.reshape(len(output), -1)) ** 2))


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "r2": _r2,
    "neg_mse": _neg_mse,
}


def _resolve_metric(metric: Any, sample_output: np.ndarray) -> Callable:
    if callable(metric):
        return metric
    if metric == "auto":
        classifier = sample_output.ndim == 2 and sample_output.shape[1] > 1
        return _accuracy if classifier else _r2
    if metric not in _METRICS:
        raise ValueError(f"metric must be 'auto', {sorted(_METRICS)} or a callable, got {metric!r}")
    return _METRICS[metric]


def _predict(predict: Predict, x: np.ndarray) -> np.ndarray:
    return np.asarray(predict(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float64)


def permutation_importance(
    predict: Predict,
    x: Any,
    y: Any,
    metric: Any = "auto",
    n_repeats: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Permutation feature importance: how much the score drops when one column is shuffled.

    Args:
        predict: maps a float32 ``(N, features)`` array to outputs (labels, probabilities
            or logits ``(N, classes)``, or regression values).
        x: the ``(N, features)`` evaluation data.
        y: the targets (class indices or values).
        metric: ``"auto"`` (accuracy for 2-D multi-column outputs, else R²),
            ``"accuracy"``, ``"r2"``, ``"neg_mse"`` or ``f(y_true, output) -> score``
            (higher is better).
        n_repeats: shuffles per feature.
        seed: the shuffles' seed (``np.random.default_rng``).

    Returns:
        ``(mean, std)`` of the score drop per feature over the repeats (``std`` with
        ``ddof=0``).

    Example:
        >>> mean, std = permutation_importance(model.predict, x_val, y_val)  # doctest: +SKIP
    """
    data = as_2d(x, "x")
    target = np.asarray(y)
    check_same_length(("x", data), ("y", target))
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, int) or n_repeats < 1:
        raise ValueError(f"n_repeats must be an int >= 1, got {n_repeats!r}")
    baseline_output = _predict(predict, data)
    score = _resolve_metric(metric, baseline_output)
    baseline = score(target, baseline_output)
    rng = np.random.default_rng(seed)
    drops = np.empty((data.shape[1], n_repeats))
    for j in range(data.shape[1]):
        for r in range(n_repeats):
            shuffled = data.copy()
            shuffled[:, j] = data[rng.permutation(len(data)), j]
            drops[j, r] = baseline - score(target, _predict(predict, shuffled))
    return drops.mean(axis=1), drops.std(axis=1)


def feature_importance(
    importances: Any,
    std: Any = None,
    names: Sequence[str] | None = None,
    top_k: int | None = None,
    *,
    title: str = "Feature importance",
    model_name: str = "model",
) -> dict:
    """Feature importances as bars with error bars, most important first.

    Args:
        importances: one number per feature (e.g. the mean of
            :func:`permutation_importance`).
        std: the error bar per feature (e.g. its std), or ``None``.
        names: the feature names; defaults to ``x0, x1, ...``.
        top_k: keep only the ``top_k`` most important features.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``feature_importance`` payload: one ``bar`` series whose points carry
        ``error``; ``metrics`` map each shown feature to its importance.

    Example:
        >>> p = feature_importance([0.1, 0.3], [0.01, 0.02], ["a", "b"])
        >>> [d["x"] for d in p["series"][0]["data"]]
        ['b', 'a']
    """
    values = as_1d(importances, "importances")
    errors = None if std is None else as_1d(std, "std")
    if errors is not None:
        check_same_length(("importances", values), ("std", errors))
        if np.any(errors < 0):
            raise ValueError("std must be >= 0")
    labels = feature_names(names, len(values))
    order = np.argsort(-values, kind="mergesort")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
        order = order[:top_k]
    data = [
        point(labels[i], values[i], error=None if errors is None else float(errors[i]))
        for i in order
    ]
    return make_payload(
        "feature_importance",
        title,
        [series("importance", "bar", data)],
        model_name=model_name,
        config={
            "x_label": "feature",
            "y_label": "importance (score drop)",
            "has_error": errors is not None,
        },
        metrics={labels[i]: float(values[i]) for i in order},
    )


def _grid(column: np.ndarray, resolution: int, percentiles: tuple[float, float]) -> np.ndarray:
    unique = np.unique(column)
    if len(unique) < resolution:
        return unique
    lo, hi = np.quantile(column, percentiles)
    if lo == hi:
        return unique
    return np.linspace(lo, hi, resolution)


def partial_dependence_values(
    predict: Predict,
    x: Any,
    feature: int,
    grid: Any = None,
    grid_resolution: int = 20,
    percentiles: tuple[float, float] = (0.05, 0.95),
    target: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's average prediction as one feature is set to each value of a grid.

    Args:
        predict: maps a float32 ``(N, features)`` array to outputs.
        x: the ``(N, features)`` data whose other columns are averaged over.
        feature: the column index.
        grid: the feature values to try; ``None`` uses the column's unique values when
            fewer than ``grid_resolution``, else ``grid_resolution`` evenly spaced values
            between the given ``percentiles`` of the column.
        grid_resolution: the grid size when ``grid`` is ``None``.
        percentiles: the grid's span, as fractions.
        target: the output column to average for multi-column outputs (e.g. a class's
            probability); required when the output has several columns.

    Returns:
        ``(grid, average)``: for each grid value, the mean prediction over all rows.

    Example:
        >>> g, avg = partial_dependence_values(lambda a: a.sum(1), np.eye(3), 0, grid=[0, 1])
        >>> avg.round(4).tolist()
        [0.6667, 1.6667]
    """
    data = as_2d(x, "x")
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
        raise TypeError(f"feature must be a column index (int), got {feature!r}")
    if not 0 <= feature < data.shape[1]:
        raise ValueError(f"feature must be in [0, {data.shape[1]}), got {feature}")
    if not 0 <= percentiles[0] < percentiles[1] <= 1:
        raise ValueError(
            f"percentiles must be (low, high) fractions with low < high, got {percentiles}"
        )
    values = (
        _grid(data[:, feature], grid_resolution, percentiles)
        if grid is None
        else as_1d(grid, "grid")
    )
    # One call over every grid copy of the data: the engine runs big batches best.
    stacked = np.repeat(data[None], len(values), axis=0)
    stacked[:, :, feature] = values[:, None]
    output = _predict(predict, stacked.reshape(-1, data.shape[1]))
    output = output.reshape(len(values), len(data), -1)
    if output.shape[2] > 1:
        if target is None:
            raise ValueError(
                f"predict returns {output.shape[2]} columns; pass target= (the column to average)"
            )
        output = output[:, :, target]
    else:
        output = output[:, :, 0]
    return values, output.mean(axis=1)


def partial_dependence(
    predict: Predict,
    x: Any,
    feature: int,
    names: Sequence[str] | None = None,
    grid: Any = None,
    grid_resolution: int = 20,
    percentiles: tuple[float, float] = (0.05, 0.95),
    target: int | None = None,
    *,
    title: str | None = None,
    model_name: str = "model",
) -> dict:
    """A partial-dependence plot of one feature (see :func:`partial_dependence_values`).

    Args:
        predict: maps a float32 ``(N, features)`` array to outputs.
        x: the ``(N, features)`` data.
        feature: the column index.
        names: the feature names; defaults to ``x0, x1, ...``.
        grid: explicit grid values, or ``None``.
        grid_resolution: the grid size when ``grid`` is ``None``.
        percentiles: the grid's span, as fractions.
        target: the output column for multi-column outputs.
        title: the plot title; defaults to ``"Partial dependence on <feature>"``.
        model_name: the model's name.

    Returns:
        A ``partial_dependence`` payload with one line; ``metrics`` hold the average
        prediction's ``min``, ``max`` and ``range``.

    Example:
        >>> p = partial_dependence(model.predict, x_val, 3, target=0)  # doctest: +SKIP
    """
    data = as_2d(x, "x")
    labels = feature_names(names, data.shape[1])
    values, average = partial_dependence_values(
        predict, data, feature, grid, grid_resolution, percentiles, target
    )
    name = labels[int(feature)]
    return make_payload(
        "partial_dependence",
        title
        or f"Partial dependence on {name}" + ("" if target is None else f" (output {target})"),
        [
            series(
                name,
                "line",
                [point(a, b) for a, b in zip(values, average)],
                {"mode": "lines+markers"},
            )
        ],
        model_name=model_name,
        config={
            "x_label": name,
            "y_label": "average prediction",
            "feature": name,
            "target": target,
        },
        metrics={
            "min": float(average.min()),
            "max": float(average.max()),
            "range": float(average.max() - average.min()),
        },
    )


def feature_correlation(
    x: Any,
    names: Sequence[str] | None = None,
    threshold: float = 0.7,
    *,
    title: str = "Feature correlation",
    model_name: str = "model",
) -> dict:
    """Pearson correlations between features, flagging pairs with ``|r| > threshold``.

    Args:
        x: the ``(N, features)`` data, N >= 2.
        names: the feature names; defaults to ``x0, x1, ...``.
        threshold: pairs with ``|r|`` above it are flagged (collinear features).
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``feature_correlation`` payload: a ``heatmap`` series (``z`` = r; flagged cells
        have ``label == "strong"``) and a ``scatter`` series marking the flagged cells;
        ``config.flagged_pairs`` lists ``{a, b, r}`` once per pair and
        ``config.constant_features`` the zero-variance columns (their r is set to 0).

    Example:
        >>> p = feature_correlation(np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.1]]))
        >>> p["metrics"]["strong_pairs"]
        1
    """
    data = as_2d(x, "x")
    if len(data) < 2:
        raise ValueError(f"x must have at least 2 rows to correlate, got {len(data)}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    labels = feature_names(names, data.shape[1])
    centered = data - data.mean(axis=0)
    norms = np.sqrt(np.sum(centered**2, axis=0))
    constant = norms == 0
    safe = np.where(constant, 1.0, norms)
    r = (centered.T @ centered) / np.outer(safe, safe)
    r[constant, :] = 0.0
    r[:, constant] = 0.0
    np.fill_diagonal(r, 1.0)
    r = np.clip(r, -1.0, 1.0)
    cells, marks, flagged = [], [], []
    count = data.shape[1]
    for i in range(count):
        for j in range(count):
            strong = i != j and abs(r[i, j]) > threshold
            cells.append(point(labels[j], labels[i], z=r[i, j], label="strong" if strong else None))
            if strong:
                marks.append(point(labels[j], labels[i], label=f"r={r[i, j]:.2f}"))
                if i < j:
                    flagged.append({"a": labels[i], "b": labels[j], "r": float(r[i, j])})
    off = np.abs(r[~np.eye(count, dtype=bool)])
    return make_payload(
        "feature_correlation",
        title,
        [
            series("pearson r", "heatmap", cells, {"colorscale": "RdBu", "zmin": -1, "zmax": 1}),
            series(f"|r| > {threshold}", "scatter", marks, {"symbol": "x", "color": "black"}),
        ],
        model_name=model_name,
        config={
            "threshold": float(threshold),
            "features": labels,
            "flagged_pairs": flagged,
            "constant_features": [labels[k] for k in np.flatnonzero(constant)],
        },
        metrics={
            "strong_pairs": len(flagged),
            "max_abs_offdiagonal_r": float(off.max()) if off.size else 0.0,
        },
    )


# The name before go-metal's plot-type names were adopted; kept for existing callers.
correlation_heatmap = feature_correlation
