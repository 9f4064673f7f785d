"""Plot builders: one function per plot type, computing its statistics into a payload.

This module holds the training, classification and distribution plots; the regression
and feature-analysis plots live in ``_regression.py`` and ``_features.py`` and are
re-exported here, so ``gometal.viz.plots`` offers every builder.

Every builder returns a validated payload dict (see ``payload.py``) and takes
``model_name`` and ``title`` keywords.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..train.metrics.ranking import counts_at_thresholds
from ._checks import as_1d, as_labels, check_bins, check_same_length
from ._features import (
    correlation_heatmap,
    feature_correlation,
    feature_importance,
    partial_dependence,
    partial_dependence_values,
    permutation_importance,
)
from ._regression import (
    diagnose_learning_curve,
    learning_curve,
    prediction_interval,
    qq_plot,
    qq_points,
    regression_scatter,
    residual_plot,
    validation_curve,
)
from .payload import make_payload, point, series

__all__ = [
    "activation_pattern",
    "activation_statistics",
    "binary_pr_curve",
    "binary_roc_curve",
    "confusion_matrix",
    "confusion_matrix_counts",
    "correlation_heatmap",
    "diagnose_learning_curve",
    "feature_correlation",
    "feature_importance",
    "gradient_histogram",
    "learning_curve",
    "learning_rate_schedule",
    "parameter_distribution",
    "partial_dependence",
    "partial_dependence_values",
    "permutation_importance",
    "precision_recall",
    "prediction_interval",
    "qq_plot",
    "qq_points",
    "regression_scatter",
    "residual_plot",
    "roc_curve",
    "training_curve",
    "training_curves",
    "validation_curve",
]


# -- training ---------------------------------------------------------------------------------
def training_curves(
    history: Mapping[str, Sequence[float]],
    x: Sequence[float] | None = None,
    x_label: str = "epoch",
    *,
    title: str = "Training curves",
    model_name: str = "model",
) -> dict:
    """Loss and accuracy curves: one line per logged key.

    Args:
        history: key -> values per epoch (or per step), e.g. ``{"loss": [...],
            "val_loss": [...]}``. Keys holding loss go to the left axis, others (accuracy,
            metrics) to the right one (``style.yaxis == "y2"``).
        x: the x values (epochs or steps); defaults to ``1, 2, ...`` for epochs (as fit
            numbers them on the console) and ``0, 1, ...`` for steps.
        x_label: ``"epoch"`` or ``"step"``; the x-axis title.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``training_curves`` payload; ``metrics`` hold each key's last value.

    Example:
        >>> p = training_curves({"loss": [1.0, 0.5], "accuracy": [0.6, 0.8]})
        >>> [s["name"] for s in p["series"]]
        ['loss', 'accuracy']
    """
    if not isinstance(history, Mapping) or not history:
        raise ValueError(f"history must be a non-empty mapping of key -> values, got {history!r}")
    out, last = [], {}
    for key, values in history.items():
        values = as_1d(values, f"history[{key!r}]", allow_empty=True)
        first = 1 if x_label == "epoch" else 0
        xs = np.arange(first, first + len(values)) if x is None else as_1d(x, "x")
        check_same_length(("x", xs), (f"history[{key!r}]", values))
        keep = np.isfinite(values)
        if not keep.any():
            continue
        axis = "y" if "loss" in key else "y2"
        dash = "dot" if key.startswith("val_") else "solid"
        data = [point(a, b) for a, b in zip(xs[keep], values[keep])]
        out.append(series(key, "line", data, {"yaxis": axis, "dash": dash}))
        last[key] = float(values[keep][-1])
    return make_payload(
        "training_curves",
        title,
        out,
        model_name=model_name,
        config={"x_label": x_label, "y_label": "loss", "y2_label": "accuracy / metric"},
        metrics=last,
    )


# The name before go-metal's plot-type names were adopted; kept for existing callers.
training_curve = training_curves


def learning_rate_schedule(
    steps: Sequence[float],
    lrs: Sequence[float],
    *,
    title: str = "Learning-rate schedule",
    model_name: str = "model",
    x_label: str = "step",
) -> dict:
    """The learning rate used at each step.

    Args:
        steps: the global step numbers (or the epochs, with ``x_label="epoch"``).
        lrs: the learning rate used at each of those steps.
        title: the plot title.
        model_name: the model's name.
        x_label: the x-axis title: what ``steps`` counts.

    Returns:
        A ``learning_rate_schedule`` payload with one line; ``metrics`` hold the initial,
        final, minimum and maximum rate.

    Example:
        >>> learning_rate_schedule([0, 1, 2], [0.1, 0.05, 0.025])["metrics"]["final_lr"]
        0.025
    """
    xs, ys = as_1d(steps, "steps"), as_1d(lrs, "lrs")
    check_same_length(("steps", xs), ("lrs", ys))
    data = [point(a, b) for a, b in zip(xs, ys)]
    metrics = {
        "initial_lr": float(ys[0]),
        "final_lr": float(ys[-1]),
        "min_lr": float(ys.min()),
        "max_lr": float(ys.max()),
    }
    return make_payload(
        "learning_rate_schedule",
        title,
        [series("lr", "line", data, {"shape": "hv"})],
        model_name=model_name,
        config={"x_label": x_label, "y_label": "learning rate"},
        metrics=metrics,
    )


# -- classification ---------------------------------------------------------------------------
def _check_binary(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    truth = as_1d(y_true, "y_true")
    scores = as_1d(score, "y_score")
    check_same_length(("y_true", truth), ("y_score", scores))
    if not np.isin(truth, (0, 1)).all():
        raise ValueError(f"y_true must hold 0/1 labels here, got values {np.unique(truth)[:5]}")
    if truth.min() == truth.max():
        raise ValueError("y_true must hold both classes (0 and 1) for ROC/PR curves")
    return truth, scores


def binary_roc_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """False- and true-positive rates at every distinct threshold, and the area under them.

    Args:
        y_true: 0/1 labels.
        y_score: scores, higher meaning class 1.

    Returns:
        ``(fpr, tpr, auc)``, starting at ``(0, 0)``; the area is the trapezoid rule.

    Example:
        >>> binary_roc_curve([0, 1], [0.2, 0.9])[2]
        1.0
    """
    truth, scores = _check_binary(y_true, y_score)
    tps, fps = (c.astype(np.float64) for c in counts_at_thresholds(truth, scores))
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def binary_pr_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Precision and recall at every distinct threshold, and the average precision.

    Args:
        y_true: 0/1 labels.
        y_score: scores, higher meaning class 1.

    Returns:
        ``(recall, precision, average_precision)`` with recall rising from 0 (where
        precision is 1 by convention); ``AP = sum((R_n - R_{n-1}) * P_n)``.

    Example:
        >>> binary_pr_curve([0, 1], [0.2, 0.9])[2]
        1.0
    """
    truth, scores = _check_binary(y_true, y_score)
    tps, fps = (c.astype(np.float64) for c in counts_at_thresholds(truth, scores))
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return np.r_[0.0, recall], np.r_[1.0, precision], ap


def _one_vs_rest(y_true: Any, y_score: Any, class_names: Sequence[str] | None):
    """Yields (name, 0/1 truth, score) per class; a 1-D score means a binary problem."""
    scores = np.asarray(y_score, dtype=np.float64)
    truth = as_labels(y_true, "y_true")
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim == 1:
        name = class_names[1] if class_names is not None and len(class_names) == 2 else "positive"
        return [(str(name), truth, scores)]
    if scores.ndim != 2 or len(scores) != len(truth):
        raise ValueError(
            f"y_score must have shape (N,) or (N, classes) with N={len(truth)}, got {scores.shape}"
        )
    names = class_names or [str(k) for k in range(scores.shape[1])]
    if len(names) != scores.shape[1]:
        raise ValueError(f"class_names has {len(names)} names for {scores.shape[1]} classes")
    out = []
    for k in range(scores.shape[1]):
        positive = (truth == k).astype(np.int64)
        if 0 < positive.sum() < len(positive):  # a class absent from y_true has no curve
            out.append((str(names[k]), positive, scores[:, k]))
    if not out:
        raise ValueError("y_true must hold at least one class with both positives and negatives")
    return out


def roc_curve(
    y_true: Any,
    y_score: Any,
    class_names: Sequence[str] | None = None,
    *,
    title: str = "ROC curve",
    model_name: str = "model",
) -> dict:
    """ROC curves: one per class (one-vs-rest) or one for a binary problem, plus the chance
    diagonal.

    Args:
        y_true: labels: 0/1 with a 1-D ``y_score``, else class indices.
        y_score: ``(N,)`` scores of class 1, or ``(N, classes)`` probabilities.
        class_names: optional names of the classes.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``roc_curve`` payload; ``metrics`` hold ``auc_<class>`` and ``auc_macro``.

    Example:
        >>> roc_curve([0, 1, 1], [0.1, 0.8, 0.6])["metrics"]["auc_macro"]
        1.0
    """
    out, metrics = [], {}
    for name, truth, scores in _one_vs_rest(y_true, y_score, class_names):
        fpr, tpr, auc = binary_roc_curve(truth, scores)
        out.append(
            series(f"{name} (AUC={auc:.3f})", "line", [point(a, b) for a, b in zip(fpr, tpr)])
        )
        metrics[f"auc_{name}"] = auc
    metrics["auc_macro"] = float(np.mean([v for k, v in metrics.items()]))
    out.append(series("chance", "line", [point(0, 0), point(1, 1)], {"dash": "dash"}))
    return make_payload(
        "roc_curve",
        title,
        out,
        model_name=model_name,
        config={"x_label": "false positive rate", "y_label": "true positive rate"},
        metrics=metrics,
    )


def precision_recall(
    y_true: Any,
    y_score: Any,
    class_names: Sequence[str] | None = None,
    *,
    title: str = "Precision-recall curve",
    model_name: str = "model",
) -> dict:
    """Precision-recall curves, one per class (one-vs-rest) or one for a binary problem.

    Args:
        y_true: labels: 0/1 with a 1-D ``y_score``, else class indices.
        y_score: ``(N,)`` scores of class 1, or ``(N, classes)`` probabilities.
        class_names: optional names of the classes.
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``precision_recall`` payload; ``metrics`` hold ``average_precision_<class>`` and
        their mean ``average_precision_macro``.

    Example:
        >>> precision_recall([0, 1], [0.2, 0.7])["metrics"]["average_precision_macro"]
        1.0
    """
    out, metrics = [], {}
    for name, truth, scores in _one_vs_rest(y_true, y_score, class_names):
        recall, precision, ap = binary_pr_curve(truth, scores)
        data = [point(a, b) for a, b in zip(recall, precision)]
        out.append(series(f"{name} (AP={ap:.3f})", "line", data, {"shape": "vh"}))
        metrics[f"average_precision_{name}"] = ap
    metrics["average_precision_macro"] = float(np.mean(list(metrics.values())))
    return make_payload(
        "precision_recall",
        title,
        out,
        model_name=model_name,
        config={"x_label": "recall", "y_label": "precision"},
        metrics=metrics,
    )


def confusion_matrix_counts(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Args:
        y_true: class indices.
        y_pred: predicted class indices.
        num_classes: the matrix size; defaults to the largest label + 1.

    Returns:
        An int64 array ``(num_classes, num_classes)``.

    Example:
        >>> confusion_matrix_counts([0, 1, 1], [0, 0, 1]).tolist()
        [[1, 0], [1, 1]]
    """
    truth, pred = as_labels(y_true, "y_true"), as_labels(y_pred, "y_pred")
    check_same_length(("y_true", truth), ("y_pred", pred))
    size = int(max(truth.max(initial=-1), pred.max(initial=-1)) + 1)
    if num_classes is not None:
        if num_classes < size:
            raise ValueError(
                f"num_classes must be >= {size} (the largest label + 1), got {num_classes}"
            )
        size = num_classes
    return np.bincount(truth * size + pred, minlength=size * size).reshape(size, size)


def confusion_matrix(
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str] | None = None,
    normalize: bool = False,
    *,
    title: str = "Confusion matrix",
    model_name: str = "model",
) -> dict:
    """A confusion-matrix heatmap (rows: true class, columns: predicted class).

    Args:
        y_true: class indices.
        y_pred: predicted class indices (take ``argmax`` of probabilities first).
        class_names: names for the classes; defaults to ``"0", "1", ...``.
        normalize: show each row as fractions of its true class (counts stay in ``label``).
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``confusion_matrix`` payload with one heatmap series: points ``x`` = predicted
        class name, ``y`` = true class name, ``z`` = count (or row fraction), and
        ``metrics.accuracy``.

    Example:
        >>> confusion_matrix([0, 1], [0, 1])["metrics"]["accuracy"]
        1.0
    """
    size = None if class_names is None else len(class_names)
    counts = confusion_matrix_counts(y_true, y_pred, size)
    names = [str(c) for c in class_names] if class_names else [str(k) for k in range(len(counts))]
    rows = counts.sum(axis=1, keepdims=True)
    values = counts / np.maximum(rows, 1) if normalize else counts
    data = [
        point(names[j], names[i], z=float(values[i, j]), label=str(int(counts[i, j])))
        for i in range(len(counts))
        for j in range(len(counts))
    ]
    return make_payload(
        "confusion_matrix",
        title,
        [series("confusion", "heatmap", data, {"colorscale": "Blues"})],
        model_name=model_name,
        config={
            "x_label": "predicted",
            "y_label": "true",
            "classes": names,
            "normalized": bool(normalize),
        },
        metrics={"accuracy": float(np.trace(counts) / max(counts.sum(), 1))},
    )


# -- distributions ----------------------------------------------------------------------------
def _histogram_series(name: str, values: Any, bins: int) -> tuple[dict, dict]:
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise ValueError(f"{name!r} holds no finite value to histogram")
    counts, edges = np.histogram(flat, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])
    data = [
        point(c, int(n), left=float(lo), right=float(hi))
        for c, n, lo, hi in zip(centers, counts, edges[:-1], edges[1:])
    ]
    stats = {
        f"{name}.mean": float(flat.mean()),
        f"{name}.std": float(flat.std()),
        f"{name}.min": float(flat.min()),
        f"{name}.max": float(flat.max()),
    }
    return series(name, "histogram", data, {"bar_width": width, "opacity": 0.6}), stats


def _histograms(
    plot_type: str,
    arrays: Mapping[str, Any],
    bins: int,
    title: str,
    model_name: str,
    x_label: str,
    extra_config: Mapping[str, Any] | None = None,
) -> dict:
    bins = check_bins(bins)
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError(f"expected a non-empty mapping of name -> array, got {arrays!r}")
    out, metrics = [], {}
    for name, values in arrays.items():
        s, stats = _histogram_series(str(name), values, bins)
        out.append(s)
        metrics.update(stats)
    config = {"x_label": x_label, "y_label": "count", "bins": bins, "barmode": "overlay"}
    config.update(extra_config or {})
    return make_payload(
        plot_type, title, out, model_name=model_name, config=config, metrics=metrics
    )


def parameter_distribution(
    weights: Mapping[str, Any],
    bins: int = 30,
    *,
    title: str = "Parameter distributions",
    model_name: str = "model",
) -> dict:
    """Histograms of each weight tensor's values.

    Args:
        weights: name -> array (e.g. ``model.get_weights()``).
        bins: equal-width bins per tensor (``np.histogram``).
        title: the plot title.
        model_name: the model's name.

    Returns:
        A ``parameter_distribution`` payload: one histogram series per tensor (points at
        bin centres with ``left``/``right`` edges) and ``<name>.mean/std/min/max``.

    Example:
        >>> p = parameter_distribution({"w": np.arange(10.0)}, bins=5)
        >>> [d["y"] for d in p["series"][0]["data"]]
        [2, 2, 2, 2, 2]
    """
    return _histograms("parameter_distribution", weights, bins, title, model_name, "value")


def gradient_histogram(
    gradients: Mapping[str, Any],
    bins: int = 30,
    *,
    title: str = "Gradient histograms",
    model_name: str = "model",
    source: str = "gradient",
) -> dict:
    """Histograms of each parameter's gradient values.

    Args:
        gradients: name -> gradient array of the same shape as the parameter.
        bins: equal-width bins per tensor.
        title: the plot title.
        model_name: the model's name.
        source: what the arrays are, recorded as ``config.source`` (e.g. ``"gradient"``
            or ``"update"`` when weight changes stand in for gradients).

    Returns:
        A ``gradient_histogram`` payload, one histogram series per parameter.

    Example:
        >>> p = gradient_histogram({"w": np.ones(4)}, bins=2)
        >>> p["config"]["source"]
        'gradient'
    """
    return _histograms(
        "gradient_histogram", gradients, bins, title, model_name, source, {"source": source}
    )


def activation_pattern(
    activations: Mapping[str, Any],
    *,
    title: str = "Activation statistics",
    model_name: str = "model",
) -> dict:
    """Mean, standard deviation and fraction of exact zeros of each layer's output.

    Args:
        activations: layer name -> that layer's output on a batch (any shape).
        title: the plot title.
        model_name: the model's name.

    Returns:
        An ``activation_pattern`` payload with an ``errorbar`` series (mean ± std per
        layer) and a ``bar`` series (fraction of zeros, on the right axis); ``metrics``
        hold ``<layer>.mean/std/zero_fraction``.

    Example:
        >>> p = activation_pattern({"relu_0": np.array([0.0, 2.0])})
        >>> p["metrics"]["relu_0.zero_fraction"]
        0.5
    """
    if not isinstance(activations, Mapping) or not activations:
        raise ValueError(f"activations must be a non-empty mapping, got {activations!r}")
    means, zeros, metrics = [], [], {}
    for name, values in activations.items():
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size == 0:
            raise ValueError(f"activations[{name!r}] is empty")
        mean, std, zero = float(flat.mean()), float(flat.std()), float(np.mean(flat == 0))
        means.append(point(str(name), mean, error=std))
        zeros.append(point(str(name), zero))
        metrics.update({f"{name}.mean": mean, f"{name}.std": std, f"{name}.zero_fraction": zero})
    return make_payload(
        "activation_pattern",
        title,
        [
            series("mean ± std", "errorbar", means),
            series("fraction of zeros", "bar", zeros, {"yaxis": "y2", "opacity": 0.4}),
        ],
        model_name=model_name,
        config={"x_label": "layer", "y_label": "activation", "y2_label": "fraction of zeros"},
        metrics=metrics,
    )


# The name before go-metal's plot-type names were adopted; kept for existing callers.
activation_statistics = activation_pattern
