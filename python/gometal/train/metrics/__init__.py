"""Evaluation metrics: one-shot NumPy functions, streaming objects, and in-graph accuracy.

One-shot functions take all the data at once and match ``sklearn.metrics`` (definitions,
averaging and zero-division rules):

* classification: ``accuracy``, ``precision``, ``recall``, ``f1_score``, ``specificity``,
  ``npv``, ``confusion_matrix``, ``top_k_accuracy``;
* ranking: ``roc_auc``, ``average_precision``;
* regression: ``mean_absolute_error``, ``mean_squared_error``, ``root_mean_squared_error``,
  ``r2_score``, and ``nmae`` (go-metal's ``sum |error| / sum |target|``).

Streaming objects (``Metric`` subclasses) accumulate batch by batch and give the same
numbers: ``Accuracy``, ``Precision``, ``Recall``, ``F1Score``, ``Specificity``, ``NPV``,
``ConfusionMatrix``, ``TopKAccuracy``, ``AUCROC``, ``AUCPR``, ``MAE``, ``MSE``, ``RMSE``,
``R2``, ``NMAE``. ``get(name)`` turns a name such as ``"f1_macro"`` into one.

The in-graph helpers (``argmax_matches``, ``threshold_matches``, ...) emit the batch
accuracy as engine nodes, so a training step stays one native call.

Example:
    >>> import gometal as gm
    >>> gm.metrics.precision([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.7])
    0.5
    >>> metric = gm.metrics.get("recall_macro")
    >>> metric.update([0, 1, 2], [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]])
    >>> round(metric.result(), 4)
    0.6667
"""

from __future__ import annotations

from ._in_graph import (
    AccuracyTotals,
    BatchAccuracy,
    argmax_agreement,
    argmax_matches,
    one_minus_nmae,
    threshold_matches,
)
from ._inputs import UndefinedMetricWarning
from ._registry import get, names
from .classification import (
    accuracy,
    confusion_matrix,
    f1_score,
    npv,
    precision,
    recall,
    specificity,
    top_k_accuracy,
)
from .ranking import average_precision, roc_auc
from .regression import (
    mean_absolute_error,
    mean_squared_error,
    nmae,
    r2_score,
    root_mean_squared_error,
)
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

__all__ = [
    "AUCPR",
    "AUCROC",
    "MAE",
    "MSE",
    "NMAE",
    "NPV",
    "R2",
    "RMSE",
    "Accuracy",
    "AccuracyTotals",
    "BatchAccuracy",
    "ConfusionMatrix",
    "F1Score",
    "Metric",
    "Precision",
    "Recall",
    "Specificity",
    "TopKAccuracy",
    "UndefinedMetricWarning",
    "accuracy",
    "argmax_agreement",
    "argmax_matches",
    "average_precision",
    "confusion_matrix",
    "f1_score",
    "get",
    "mean_absolute_error",
    "mean_squared_error",
    "names",
    "nmae",
    "npv",
    "one_minus_nmae",
    "precision",
    "r2_score",
    "recall",
    "roc_auc",
    "root_mean_squared_error",
    "specificity",
    "threshold_matches",
    "top_k_accuracy",
]
