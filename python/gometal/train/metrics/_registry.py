"""Resolution of metric names (``metrics=["f1_macro", "auc_roc"]``) to metric objects."""

from __future__ import annotations

import re
from collections.abc import Callable

from .streaming import (
    AUCPR,
    AUCROC,
    MAE,
    MSE,
    NMAE,
    NPV,
    R2,
    RMSE,
    Accuracy,
    ConfusionMatrix,
    F1Score,
    Metric,
    Precision,
    Recall,
    Specificity,
    TopKAccuracy,
)

_TOP_K = re.compile(r"top_([0-9]+)_accuracy")


def _factories() -> dict[str, Callable[[str], Metric]]:
    table: dict[str, Callable[[str], Metric]] = {
        "accuracy": lambda name: Accuracy(name=name),
        "confusion_matrix": lambda name: ConfusionMatrix(name=name),
    }
    ratios = {
        "precision": Precision,
        "recall": Recall,
        "f1": F1Score,
        "specificity": Specificity,
        "npv": NPV,
    }
    for base, cls in ratios.items():
        for suffix, average in (
            ("", "binary"),
            ("_macro", "macro"),
            ("_micro", "micro"),
            ("_weighted", "weighted"),
        ):
            table[base + suffix] = lambda name, c=cls, a=average: c(average=a, name=name)
    for bases, cls in ((("auc_roc", "roc_auc"), AUCROC), (("auc_pr", "average_precision"), AUCPR)):
        for base in bases:
            for suffix, average in (
                ("", "macro"),
                ("_macro", "macro"),
                ("_micro", "micro"),
                ("_weighted", "weighted"),
            ):
                table[base + suffix] = lambda name, c=cls, a=average: c(average=a, name=name)
    regression = {
        ("mae", "mean_absolute_error"): MAE,
        ("mse", "mean_squared_error"): MSE,
        ("rmse", "root_mean_squared_error"): RMSE,
        ("r2", "r2_score"): R2,
        ("nmae",): NMAE,
    }
    for aliases, cls in regression.items():
        for base in aliases:
            table[base] = lambda name, c=cls: c(name=name)
    return table


_FACTORIES = _factories()


def names() -> list[str]:
    """Every name ``get`` accepts, besides ``"top_<k>_accuracy"``.

    Returns:
        The names, sorted.

    Example:
        >>> "f1_macro" in names()
        True
    """
    return sorted(_FACTORIES)


def get(spec: str | Metric) -> Metric:
    """Resolves a metric name to a fresh metric object; a ``Metric`` passes through.

    Names (the metric is recorded under the name as given):

    * ``"accuracy"``, ``"confusion_matrix"``;
    * ``"precision"``, ``"recall"``, ``"f1"``, ``"specificity"``, ``"npv"``: binary
      (class 1), optionally suffixed ``"_macro"``, ``"_micro"`` or ``"_weighted"``;
    * ``"auc_roc"`` (alias ``"roc_auc"``) and ``"auc_pr"`` (alias ``"average_precision"``):
      macro over classes for ``C >= 3``, optionally suffixed ``"_micro"`` or ``"_weighted"``;
    * ``"top_<k>_accuracy"`` for an integer ``k >= 1``, e.g. ``"top_5_accuracy"``;
    * ``"mae"``, ``"mse"``, ``"rmse"``, ``"r2"``, ``"nmae"`` (also the long names
      ``"mean_absolute_error"``, ``"mean_squared_error"``, ``"root_mean_squared_error"``,
      ``"r2_score"``).

    Args:
        spec: a name from the list above, or a ``Metric`` instance.

    Returns:
        A metric object, reset and ready for ``update``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for anything other than a string or a ``Metric``.

    Example:
        >>> get("f1_macro").name
        'f1_macro'
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, type) and issubclass(spec, Metric):
        raise TypeError(f"pass a metric instance such as {spec.__name__}(...), not the class")
    if not isinstance(spec, str):
        raise TypeError(f"a metric must be a name (str) or a Metric; got {type(spec).__name__}")
    key = spec.strip().lower()
    if key in _FACTORIES:
        return _FACTORIES[key](spec)
    top_k = _TOP_K.fullmatch(key)
    if top_k is not None and int(top_k.group(1)) >= 1:
        return TopKAccuracy(int(top_k.group(1)), name=spec)
    raise ValueError(
        f"unknown metric {spec!r}; valid names: {', '.join(names())}, and "
        "'top_<k>_accuracy' for an integer k >= 1"
    )
