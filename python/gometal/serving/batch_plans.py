"""How a merged batch of any row count runs on the few batch sizes the engine keeps plans for.

The engine compiles a plan per batch size and keeps a few per function, so a server runs
merged batches at a handful of sizes (powers of two up to ``max_batch_size``). Padding a
batch up to the next size wastes compute on the padding rows: 34 rows padded to 64 cost a
CNN almost twice their own. Running them as 32 + 2 costs one more call instead. Which is
cheaper depends on the model (an MLP's call costs more than its rows, a CNN's rows cost
more than its call), so the server measures each size's time while it warms up, fits a
time per call plus a time per row to them (:func:`linear_costs`: one busy moment on a shared
machine must not make a size look cheap or dear), and :func:`plan_batch_pieces` picks, for
every row count, the sizes whose summed time is least among those covering the rows.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

__all__ = ["PieceCosts", "linear_costs", "plan_batch_pieces", "row_ranges"]

# The least time per call and per row a fit gives (seconds): costs stay positive.
MIN_COST_S = 1e-9

# Seconds of one call at each batch size.
PieceCosts = Mapping[int, float]


def linear_costs(measured: PieceCosts) -> dict[int, float]:
    """Each size's cost as ``per_call + per_row * size``, fitted robustly to ``measured``.

    The slope is the median of the slopes between every two sizes, the intercept the median
    of what each measurement leaves (Theil and Sen's fit): a few measurements taken while the
    machine was busy move neither.

    Args:
        measured: seconds per call at each batch size (at least one size).

    Returns:
        The fitted seconds per call at each of those sizes (each > 0).

    Raises:
        ValueError: no measurement.

    Example:
        >>> costs = linear_costs({1: 3.0, 2: 5.0, 4: 9.0, 8: 17.0, 16: 500.0})
        >>> [round(costs[s], 6) for s in (1, 2, 4, 8, 16)]
        [3.0, 5.0, 9.0, 17.0, 33.0]
    """
    if not measured:
        raise ValueError("linear_costs needs at least one measured batch size")
    sizes = sorted(measured)
    slopes = [
        (measured[b] - measured[a]) / (b - a) for i, a in enumerate(sizes) for b in sizes[i + 1 :]
    ]
    per_row = max(statistics.median(slopes), MIN_COST_S) if slopes else MIN_COST_S
    per_call = max(statistics.median(measured[s] - per_row * s for s in sizes), MIN_COST_S)
    return {size: per_call + per_row * size for size in sizes}


def plan_batch_pieces(costs: PieceCosts, max_rows: int) -> list[tuple[int, ...]]:
    """For every row count, the batch sizes to run it as, cheapest first found.

    Args:
        costs: the time of one call at each available batch size (> 0 each).
        max_rows: the largest row count planned.

    Returns:
        ``plans[n]`` for ``n`` in ``0..max_rows``: the sizes, largest first, whose summed
        cost is least among the multisets of available sizes adding up to at least ``n``
        (``plans[0]`` is empty).

    Raises:
        ValueError: no size, a size below 1 or a cost that is not positive.

    Example:
        >>> plan_batch_pieces({1: 1.0, 2: 1.5, 4: 2.5, 8: 4.5}, 8)[5]
        (4, 1)
        >>> plan_batch_pieces({1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}, 8)[5]
        (8,)
    """
    if not costs:
        raise ValueError("plan_batch_pieces needs at least one batch size")
    for size, cost in costs.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or not cost > 0:
            raise ValueError(f"batch sizes must be ints >= 1 with costs > 0, got {size}: {cost}")
    sizes = sorted(costs, reverse=True)
    best = [0.0] * (max_rows + 1)
    plans: list[tuple[int, ...]] = [()] * (max_rows + 1)
    for rows in range(1, max_rows + 1):
        # The cheapest cover of `rows` takes some size first, then covers what is left.
        choices = [(costs[s] + best[max(0, rows - s)], -s) for s in sizes]
        cost, negative_size = min(choices)
        size = -negative_size  # on a tie, the larger size: fewer calls
        best[rows] = cost
        plans[rows] = tuple(sorted((size, *plans[max(0, rows - size)]), reverse=True))
    return plans


def row_ranges(pieces: tuple[int, ...], rows: int) -> list[tuple[int, int, int]]:
    """The rows each piece of a plan runs: ``(start, stop, size)``, the last one padded.

    Example:
        >>> row_ranges((4, 1), 5), row_ranges((8,), 5)
        ([(0, 4, 4), (4, 5, 1)], [(0, 5, 8)])
    """
    ranges, start = [], 0
    for size in pieces:
        stop = min(rows, start + size)
        if stop > start:
            ranges.append((start, stop, size))
        start = stop
    return ranges
