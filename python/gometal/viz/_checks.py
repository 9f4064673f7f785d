"""Argument checks shared by the plot builders; errors name the argument and the value."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_1d(values: Any, name: str, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a 1-D float64 array; raises ValueError naming ``name`` otherwise."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r:.80}") from None
    if array.ndim == 2 and 1 in array.shape:
        array = array.ravel()
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not allow_empty and array.size == 0:
        raise ValueError(f"{name} must not be empty")
    return array


def as_finite_1d(values: Any, name: str) -> np.ndarray:
    """Like :func:`as_1d`, also rejecting NaN and inf."""
    array = as_1d(values, name)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(array)).sum())} NaN/inf")
    return array


def as_labels(values: Any, name: str) -> np.ndarray:
    """Class indices as a 1-D int64 array of non-negative integers."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D array of class indices, got {array.shape}"
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must hold integer class indices, got non-integers")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"{name} must hold class indices >= 0, got {int(array.min())}")
    return array


def as_2d(values: Any, name: str) -> np.ndarray:
    """A 2-D float64 feature matrix ``(samples, features)``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D (samples, features) array, got shape {array.shape}")
    return array


def check_same_length(*named: tuple[str, Any]) -> None:
    """Raises ValueError unless all the (name, array) pairs have the same length."""
    lengths = {name: len(array) for name, array in named}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"lengths differ: {listed}")


def check_bins(bins: Any) -> int:
    """A histogram bin count >= 1."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    return int(bins)


def feature_names(names: Any, count: int) -> list[str]:
    """``names`` checked against ``count`` features, or ``x0, x1, ...``."""
    if names is None:
        return [f"x{k}" for k in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"feature_names has {len(names)} names for {count} features")
    return names
