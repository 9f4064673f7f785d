"""Sample and class weights: Keras's ``sample_weight=`` and ``class_weight=``.

A sample's weight scales its loss before the batch reduction (``sum(w * loss) / N`` for
a mean, as Keras's ``sum_over_batch_size``); the reported accuracy stays unweighted, as
Keras's plain ``accuracy`` metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base.arrays import check_real_dtype, format_shape, to_ndarray


def as_sample_weights(value: Any, num_samples: int, name: str = "sample_weight") -> np.ndarray:
    """Checks per-sample weights and converts them to what the engine reads.

    Args:
        value: real array-like of shape ``(N,)`` (or ``(N, 1)``), finite and ``>= 0``.
        num_samples: ``N``, the batch's rows.
        name: the argument's name for messages.

    Returns:
        A C-contiguous float32 array of shape ``(N,)``.

    Raises:
        TypeError, ValueError: a wrong type, shape or length, or a negative or non-finite
            weight (its position is named).

    Example:
        >>> as_sample_weights([1, 0.5], 2)
        array([1. , 0.5], dtype=float32)
    """
    arr = to_ndarray(value, name)
    check_real_dtype(arr, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (num_samples,):
        raise ValueError(
            f"{name} must have shape ({num_samples},): one weight per sample, got "
            f"{format_shape(arr.shape)}"
        )
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        raise ValueError(
            f"{name} must hold finite weights >= 0, got {float(arr[bad[0]])} at position {bad[0]}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def class_weight_table(class_weight: Any, num_classes: int) -> np.ndarray:
    """The weight of every class from Keras's ``class_weight`` dict (absent classes: 1).

    Args:
        class_weight: ``{class index: weight}`` with finite weights ``>= 0``.
        num_classes: the model's number of classes.

    Returns:
        A float32 array of ``num_classes`` weights.

    Raises:
        TypeError, ValueError: not a dict, a key that is not a class index, or a bad weight.

    Example:
        >>> class_weight_table({1: 3.0}, 3)
        array([1., 3., 1.], dtype=float32)
    """
    if not isinstance(class_weight, Mapping):
        raise TypeError(
            f"class_weight must be a dict from class index to weight, got "
            f"{type(class_weight).__name__}"
        )
    table = np.ones(num_classes, np.float32)
    for key, weight in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"class_weight keys must be class indices, got {key!r}")
        if not 0 <= key < num_classes:
            raise ValueError(
                f"class_weight names class {key}, but the model has {num_classes} classes "
                f"(0 to {num_classes - 1})"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
            raise TypeError(f"class_weight[{key}] must be a number, got {weight!r}")
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"class_weight[{key}] must be a finite number >= 0, got {weight!r}")
        table[key] = weight
    return table
