"""Which samples each rank of a distributed job reads: the one rule every loader follows.

Training shards are padded, as torch's ``DistributedSampler(drop_last=False)``: the
epoch's order is extended by repeating its start up to a multiple of the job's size, and
rank ``r`` takes positions ``r, r + size, ...``, so every rank runs the same number of
steps (at most ``size - 1`` samples are read twice). Evaluation shards are the same
positions without the padding: rank ``r`` takes ``order[r::size]``, shards differ in
length by at most one, and every sample is read exactly once, so sums pooled over the
ranks count no sample twice.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .data_parallel import job_rank_and_size


def check_shard(shard: Any) -> tuple[int, int]:
    """``(rank, size)`` a loader shards by: the job's, or ``(0, 1)`` for ``shard=False``.

    Args:
        shard: ``True`` or ``None`` (shard whenever the process is in a job) or ``False``.

    Returns:
        ``(rank, size)``; ``(0, 1)`` reads every sample.

    Raises:
        TypeError: ``shard`` is not a bool or ``None``.

    Example:
        >>> check_shard(None)
        (0, 1)
    """
    if shard is not None and not isinstance(shard, bool):
        raise TypeError(f"shard must be True, False or None, got {shard!r}")
    return job_rank_and_size() if shard is not False else (0, 1)


def check_pad_shards(pad_shards: Any) -> bool:
    """Validates a loader's ``pad_shards`` argument.

    Raises:
        TypeError: ``pad_shards`` is not a bool.

    Example:
        >>> check_pad_shards(False)
        False
    """
    if not isinstance(pad_shards, bool):
        raise TypeError(f"pad_shards must be True or False, got {pad_shards!r}")
    return pad_shards


def shard_length(count: int, rank: int, size: int, *, pad: bool) -> int:
    """How many positions rank ``rank`` of ``size`` takes from an order of ``count``.

    Args:
        count: the samples in the epoch's order.
        rank: this rank.
        size: the ranks sharing the order.
        pad: padded (training) or exact (evaluation) shards.

    Returns:
        ``ceil(count / size)`` when padded, else ``len(range(rank, count, size))``.

    Example:
        >>> [shard_length(10, r, 3, pad=False) for r in range(3)]
        [4, 3, 3]
    """
    if pad:
        return math.ceil(count / size)
    return len(range(rank, count, size))


def shard_positions(order: np.ndarray, rank: int, size: int, *, pad: bool) -> np.ndarray:
    """The part of an epoch's ``order`` that rank ``rank`` of ``size`` reads, in order.

    Args:
        order: the epoch's sample positions (a permutation, or ``arange`` unshuffled).
        rank: this rank, ``0 <= rank < size``.
        size: the ranks sharing the order.
        pad: repeat the order's start up to a multiple of ``size`` first (training, as
            ``DistributedSampler(drop_last=False)``), or not (evaluation: each sample once).

    Returns:
        The positions, ``shard_length(len(order), rank, size, pad=pad)`` of them.

    Example:
        >>> shard_positions(np.arange(5), 1, 2, pad=True).tolist()
        [1, 3, 0]
        >>> shard_positions(np.arange(5), 1, 2, pad=False).tolist()
        [1, 3]
    """
    if size == 1:
        return order
    if not pad:
        return order[rank::size]
    padded = np.resize(order, shard_length(len(order), rank, size, pad=True) * size)
    return padded[rank::size]


def rank_block(rank: int, per_rank: int) -> slice:
    """The columns of a global batch of ``size * per_rank`` rows that rank ``rank`` takes.

    Loaders that draw samples at random (token windows, streams) draw the whole job's
    batch and hand each rank a contiguous block of it, so N ranks at batch b read what one
    process at batch N * b reads, in rank order.

    Example:
        >>> rank_block(1, 4)
        slice(4, 8, None)
    """
    return slice(rank * per_rank, (rank + 1) * per_rank)
