"""Floats in strict JSON (which has no NaN or infinity): non-finite values as strings."""

from __future__ import annotations

import math

# The strings that stand for the non-finite floats, and their values.
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_float(value: float) -> float | str:
    """A float for JSON: finite values as they are, infinities and NaN as strings.

    Args:
        value: the float.

    Returns:
        ``value``, or ``"nan"``, ``"inf"`` or ``"-inf"``.

    Example:
        >>> encode_float(float("inf"))
        'inf'
    """
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
