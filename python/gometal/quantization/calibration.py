"""Calibration: the range of each quantized layer's input over real batches, and the affine
per-tensor parameters (scale, zero point) that range gives.

``minmax`` takes the smallest and largest value seen; ``percentile`` clips both tails of a
histogram at a percentile; ``entropy`` picks the clipping threshold whose quantized
distribution is closest to the observed one in KL divergence (TensorRT's calibration).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .layers import ACTIVATION_RANGES

METHODS = ("minmax", "percentile", "entropy")
HISTOGRAM_BINS = 2048
QUANTIZED_BINS = 128  # levels of the quantized distribution the entropy method compares


class RangeObserver:
    """Accumulates the values one layer's input takes over calibration batches.

    ``observe`` each batch once to find the extremes (``minmax`` stops there); the
    histogram methods then ``observe_histogram`` each batch again over those extremes.

    Example:
        >>> observer = RangeObserver()
        >>> observer.observe(np.array([-1.0, 3.0]))
        >>> observer.range("minmax")
        (-1.0, 3.0)
    """

    def __init__(self) -> None:
        self.low = float("inf")
        self.high = float("-inf")
        self.histogram: np.ndarray | None = None

    def observe(self, values: np.ndarray) -> None:
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def histogram_edges(self) -> tuple[float, float]:
        """The symmetric interval the histogram spans: [-m, m] with m the largest magnitude."""
        magnitude = max(abs(self.low), abs(self.high), 1e-12)
        return -magnitude, magnitude

    def observe_histogram(self, values: np.ndarray) -> None:
        counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=self.histogram_edges())
        self.histogram = counts if self.histogram is None else self.histogram + counts

    def range(self, method: str, percentile: float = 99.99) -> tuple[float, float]:
        """The (low, high) to quantize over, by ``method``.

        Args:
            method: one of ``METHODS``.
            percentile: for ``"percentile"``, the share (in percent) of values kept
                inside the range on each side.

        Returns:
            The range, clipped inside the observed extremes.
        """
        if method == "minmax" or self.histogram is None:
            return self.low, self.high
        edges = np.linspace(*self.histogram_edges(), HISTOGRAM_BINS + 1)
        if method == "percentile":
            cumulative = np.cumsum(self.histogram) / max(int(self.histogram.sum()), 1)
            tail = (100.0 - percentile) / 100.0
            low_bin = int(np.searchsorted(cumulative, tail, side="right"))
            high_bin = int(np.searchsorted(cumulative, 1.0 - tail, side="left"))
            return max(self.low, float(edges[low_bin])), min(self.high, float(edges[high_bin + 1]))
        threshold = entropy_threshold(self.histogram, edges)
        return max(self.low, -threshold), min(self.high, threshold)


def entropy_threshold(histogram: np.ndarray, edges: np.ndarray) -> float:
    """The magnitude to clip at that minimizes the KL divergence between the histogram of
    |values| and its quantization to ``QUANTIZED_BINS`` levels (TensorRT's method).

    Args:
        histogram: counts over the symmetric ``edges``.
        edges: ``len(histogram) + 1`` bin edges, symmetric around zero.

    Returns:
        The threshold, a positive magnitude.
    """
    half = len(histogram) // 2
    magnitudes = histogram[half:] + histogram[:half][::-1]  # fold the negative side over
    width = float(edges[-1]) / half
    best, best_divergence = half, float("inf")
    for stop in range(QUANTIZED_BINS, half + 1, 16):
        reference = magnitudes[:stop].astype(np.float64)
        reference[stop - 1] += magnitudes[stop:].sum()  # the clipped tail lands on the edge
        if reference.sum() == 0:
            continue
        chunks = np.array_split(magnitudes[:stop].astype(np.float64), QUANTIZED_BINS)
        expanded = np.concatenate(
            [np.where(c > 0, c.sum() / max(np.count_nonzero(c), 1), 0.0) for c in chunks]
        )
        p = reference / reference.sum()
        q = expanded / max(expanded.sum(), 1e-12)
        mask = p > 0
        divergence = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if divergence < best_divergence:
            best, best_divergence = stop, divergence
    return best * width


def affine_parameters(low: float, high: float, dtype: str) -> tuple[float, int]:
    """The scale and zero point that map [low, high] (widened to hold 0, so a zero and
    padding are exact) onto ``dtype``'s integers.

    Args:
        low: the smallest value to represent.
        high: the largest.
        dtype: ``"uint8"`` or ``"int8"``.

    Returns:
        ``(scale, zero_point)``.

    Example:
        >>> affine_parameters(0.0, 2.55, "uint8")
        (0.01, 0)
    """
    q_low, q_high = ACTIVATION_RANGES[dtype]
    low, high = min(low, 0.0), max(high, 0.0)
    scale = float(np.float32((high - low) / (q_high - q_low))) if high > low else 1.0
    zero_point = int(np.clip(np.rint(q_low - low / scale), q_low, q_high))
    return scale, zero_point


def symmetric_weights(weight: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights in [-127, 127] and their scales, per output channel (axis 0) or one for
    the whole tensor repeated per channel.

    Args:
        weight: float weights, output channels first.
        per_channel: one scale per output channel, or one for all.

    Returns:
        ``(quantized as float32 integers, scales (channels,) float32)``.

    Example:
        >>> q, s = symmetric_weights(np.array([[0.5, -1.0], [2.0, 0.0]]), True)
        >>> q.tolist(), s.tolist()
        ([[64.0, -127.0], [127.0, 0.0]], [0.007874015718698502, 0.015748031437397003])
    """
    flat = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    largest = flat if per_channel else np.full_like(flat, flat.max())
    scales = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    quantized = np.clip(np.rint(weight / scales.reshape(shape)), -127, 127).astype(np.float32)
    return quantized, scales


def check_method(method: object, percentile: float) -> str:
    """Returns ``method`` if known, else raises ``ValueError`` naming the choices."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"quantize: method must be one of {list(METHODS)}, got {method!r}")
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"quantize: percentile must lie in (50, 100], got {percentile!r}")
    return method


def observers_for(names: Sequence[str]) -> dict[str, RangeObserver]:
    """One fresh observer per layer name."""
    return {name: RangeObserver() for name in names}
