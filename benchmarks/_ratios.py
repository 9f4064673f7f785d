"""Paired speed ratios of two interleaved children, and how far from 1.0 their noise reaches.

Two builds timed in the same round meet the same machine conditions, so the ratio of their
two rates in that round cancels most of the drift of a shared machine; what is left is the
round-to-round spread of those ratios. A ratio is "within noise of 1.0" when 1.0 lies inside
a distribution-free confidence interval of the median ratio (order statistics of a
Binomial(n, 1/2)); with too few rounds for that interval, inside the min..max of the ratios.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

CONFIDENCE = 0.95


class RatioSummary(NamedTuple):
    """The per-round ratios of one workload, summarised.

    `ci_low`/`ci_high` bound the median ratio at confidence `ci_level` (None when there are
    too few rounds for that confidence); `within_noise` says whether 1.0 lies inside that
    interval, or inside min..max when there is no interval.
    """

    rounds: int
    median: float
    low: float
    high: float
    q1: float
    q3: float
    ci_low: float | None
    ci_high: float | None
    ci_level: float | None
    within_noise: bool


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-round ratios numerator[i] / denominator[i], for the rounds both children timed.

    Args:
        numerator: one rate per round (for instance the new build's steps/s).
        denominator: the other child's rate in the same rounds.

    Returns:
        One ratio per round, skipping rounds whose denominator is not positive.

    Example:
        >>> paired_ratios([110.0, 90.0], [100.0, 100.0])
        [1.1, 0.9]
    """
    if len(numerator) != len(denominator):
        raise ValueError(
            f"paired_ratios: numerator and denominator must cover the same rounds, "
            f"got {len(numerator)} and {len(denominator)} rates"
        )
    return [a / b for a, b in zip(numerator, denominator) if b > 0]


def _binomial_half_cdf(k: int, n: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_interval_ranks(n: int, level: float = CONFIDENCE) -> tuple[int, float] | None:
    """The rank j (1-based) such that [x_(j), x_(n+1-j)] of n sorted values covers their
    population median with probability >= `level`, as large (narrow) as possible, and that
    probability; None when even [x_(1), x_(n)] covers less than `level`.

    Args:
        n: how many values (rounds).
        level: the wanted coverage, in (0, 1).

    Returns:
        (j, coverage), or None when n is too small for `level`.

    Example:
        >>> median_interval_ranks(10)
        (2, 0.978515625)
    """
    if not 0 < level < 1:
        raise ValueError(f"median_interval_ranks: level must be in (0, 1), got {level}")
    best = None
    for j in range(1, n // 2 + 1):
        # The interval misses the median when fewer than j values lie below it, or above it.
        coverage = 1 - 2 * _binomial_half_cdf(j - 1, n)
        if coverage < level:
            break
        best = (j, coverage)
    return best


def summarize_ratios(ratios: list[float], level: float = CONFIDENCE) -> RatioSummary:
    """Median, min..max, quartiles and a confidence interval of the median of `ratios`.

    Args:
        ratios: per-round ratios, at least one.
        level: confidence of the median's interval.

    Returns:
        A RatioSummary; quartiles interpolate linearly between ranks (as numpy.percentile).

    Example:
        >>> summarize_ratios([0.98, 1.01, 1.0, 1.03, 0.99, 1.02]).within_noise
        True
    """
    if not ratios:
        raise ValueError("summarize_ratios: ratios must hold at least one round, got none")
    values = sorted(ratios)
    n = len(values)
    if n == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    ranks = median_interval_ranks(n, level)
    if ranks is None:
        ci_low = ci_high = ci_level = None
        within = values[0] <= 1.0 <= values[-1]
    else:
        j, ci_level = ranks
        ci_low, ci_high = values[j - 1], values[n - j]
        within = ci_low <= 1.0 <= ci_high
    return RatioSummary(
        rounds=n,
        median=statistics.median(values),
        low=values[0],
        high=values[-1],
        q1=q1,
        q3=q3,
        ci_low=ci_low,
        ci_high=ci_high,
        ci_level=ci_level,
        within_noise=within,
    )
