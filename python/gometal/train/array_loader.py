"""``ArrayLoader``: ``(x, y)`` batches over arrays held in memory, shuffled per epoch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..base.arrays import check_batch_size, check_seed
from ..base.epochs import EpochCounter
from .sharding import check_pad_shards, check_shard, shard_length, shard_positions

# The stream that orders samples; ``gm.vision.DataLoader`` uses the same one, so both
# loaders visit N samples in the same order for the same seed and epoch.
_ORDER_STREAM = 0


def is_array_collection(data: Any) -> bool:
    """A list, tuple or dict of arrays (a model's several inputs or outputs)."""
    if isinstance(data, Mapping):
        return True
    return isinstance(data, (list, tuple)) and all(isinstance(a, np.ndarray) for a in data)


def count_rows(data: Any, argument: str) -> int:
    """The samples in ``data``: an array, or a list, tuple or dict of same-length arrays."""
    if not is_array_collection(data):
        return len(data)
    arrays = list(data.values()) if isinstance(data, Mapping) else list(data)
    if not arrays:
        raise ValueError(f"{argument} holds no arrays; give one per model input or output")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(
            f"the arrays of {argument} have different lengths {sorted(lengths)}; every one "
            "needs one row per sample"
        )
    return lengths.pop()


def take_rows(data: Any, rows: Any) -> Any:
    """``data[rows]``, or each array's rows for a list or dict of arrays."""
    if isinstance(data, Mapping):
        return {name: array[rows] for name, array in data.items()}
    if is_array_collection(data):
        return [array[rows] for array in data]
    return data[rows]


def epoch_permutation(seed: int, epoch: int, count: int) -> np.ndarray:
    """The shuffled order of ``count`` samples for ``(seed, epoch)``.

    Args:
        seed: the loader's seed.
        epoch: the epoch number.
        count: the number of samples.

    Returns:
        An int64 permutation of ``range(count)``.

    Example:
        >>> sorted(epoch_permutation(0, 3, 5).tolist())
        [0, 1, 2, 3, 4]
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(epoch, _ORDER_STREAM))
    return np.random.default_rng(sequence).permutation(count)


class ArrayLoader(EpochCounter):
    """Iterates ``(x[rows], y[rows])`` batches, with the same epoch semantics as
    ``gm.vision.DataLoader``.

    The order is a function of ``(seed, epoch)`` only: the epoch counts iterations from 0
    and ``set_epoch(e)`` makes the next iteration epoch ``e``, so a resumed run visits the
    samples in the order an uninterrupted one would have. Without shuffling, batches are
    views into ``x`` and ``y``; with shuffling each batch is one gathered copy.

    Args:
        x: inputs, indexed along axis 0; for a model with several inputs, a list, tuple
            or dict of arrays, batched with the same rows (batches then hold lists or
            dicts).
        y: labels or targets with the same length (a list, tuple or dict of arrays for
            several outputs).
        sample_weight: optional per-sample weights with the same length; batches are then
            ``(x, y, sample_weight)`` triples.
        batch_size: samples per batch; the last batch may be smaller.
        shuffle: visit the samples in a new random order each epoch.
        seed: seeds the order (a non-negative int).
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        shard: in a distributed job (``gm.distributed.init()``), visit only this rank's
            share of each epoch's order: positions ``rank, rank + size, ...`` of the
            order, which is padded first by repeating its start up to a multiple of the
            job's size, as torch's ``DistributedSampler(drop_last=False)`` does. The
            shards are disjoint but for those at most ``size - 1`` repeated samples,
            cover every sample, and hold the same count, so every rank runs the same
            number of steps (the last batch is then the same size on every rank).
            ``None``: shard whenever the process is in a job.
        pad_shards: pad the shards as above (training); ``False`` gives exact shards,
            ``order[rank::size]``, whose lengths differ by at most one and which read
            every sample exactly once (evaluation, where a repeated sample would count
            twice). ``evaluate`` and validation read a padded loader without its padding.

    Example:
        >>> loader = ArrayLoader(x, y, batch_size=32, seed=0)  # doctest: +SKIP
        >>> for xb, yb in loader:  # doctest: +SKIP
        ...     trainer.train_batch(xb, yb)
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int = 32,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        sample_weight: Any = None,
        shard: bool | None = None,
        pad_shards: bool = True,
    ):
        samples, targets = count_rows(x, "x"), count_rows(y, "y")
        if samples != targets:
            raise ValueError(
                f"x and y have different lengths: x has {samples} samples, y has {targets}"
            )
        if samples == 0:
            raise ValueError("ArrayLoader needs at least one sample, got 0")
        if sample_weight is not None and len(sample_weight) != samples:
            raise ValueError(
                f"sample_weight has {len(sample_weight)} weights for {samples} samples"
            )
        self.x, self.y = x, y
        self.sample_weight = sample_weight
        self.samples = samples
        self.batch_size = check_batch_size(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = check_seed(seed)
        self.drop_last = bool(drop_last)
        self._next_epoch = 0
        # (this rank, ranks) of the shard; (0, 1) reads every sample.
        self.shard_rank, self.shard_count = check_shard(shard)
        self.pad_shards = check_pad_shards(pad_shards)

    def sample_order(self, epoch: int) -> np.ndarray:
        """The sample positions in the order epoch ``epoch`` visits them.

        Args:
            epoch: the epoch number.

        Returns:
            An int64 array: a permutation when shuffling, ``arange(N)`` otherwise.

        Example:
            >>> loader.sample_order(0)[:3]  # doctest: +SKIP
            array([41,  7, 90])
        """
        if not self.shuffle:
            return np.arange(self.samples)
        return epoch_permutation(self.seed, epoch, self.samples)

    def shard_order(self, epoch: int, pad_shards: bool | None = None) -> np.ndarray:
        """The sample positions this rank visits in epoch ``epoch``, in order (the whole
        ``sample_order`` outside a distributed job).

        Args:
            epoch: the epoch number.
            pad_shards: overrides the loader's ``pad_shards`` (``None`` keeps it).

        Returns:
            An int64 array: ``ceil(N / size)`` positions when padded, else the
            ``len(range(rank, N, size))`` positions ``order[rank::size]``.

        Example:
            >>> ArrayLoader(np.zeros((5, 1)), np.zeros(5), shuffle=False).shard_order(0)
            array([0, 1, 2, 3, 4])
        """
        pad = self.pad_shards if pad_shards is None else check_pad_shards(pad_shards)
        return shard_positions(self.sample_order(epoch), self.shard_rank, self.shard_count, pad=pad)

    def _batches_in(self, pad: bool) -> int:
        count = shard_length(self.samples, self.shard_rank, self.shard_count, pad=pad)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __len__(self) -> int:
        return self._batches_in(self.pad_shards)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self.iterate()

    def iterate(self, pad_shards: bool | None = None) -> Iterator[tuple[Any, ...]]:
        """Runs the next epoch, like ``iter(loader)``, with its shard padded or not.

        Args:
            pad_shards: ``False`` reads this rank's exact shard (each sample of the job
                once, as evaluation needs); ``None`` keeps the loader's ``pad_shards``.

        Returns:
            An iterator of the epoch's batches.

        Example:
            >>> batches = list(loader.iterate(pad_shards=False))  # doctest: +SKIP
        """
        pad = self.pad_shards if pad_shards is None else check_pad_shards(pad_shards)
        epoch = self.next_epoch()
        if not self.shuffle and self.shard_count == 1:
            return self._slices(self._batches_in(pad))
        return self._gathered(self.shard_order(epoch, pad), self._batches_in(pad))

    def _batch(self, rows: Any) -> tuple[Any, ...]:
        if self.sample_weight is None:
            return take_rows(self.x, rows), take_rows(self.y, rows)
        return take_rows(self.x, rows), take_rows(self.y, rows), self.sample_weight[rows]

    def _slices(self, batches: int) -> Iterator[tuple[Any, ...]]:
        for start in range(0, batches * self.batch_size, self.batch_size):
            yield self._batch(slice(start, start + self.batch_size))

    def _gathered(self, order: np.ndarray, batches: int) -> Iterator[tuple[Any, ...]]:
        for start in range(0, batches * self.batch_size, self.batch_size):
            yield self._batch(order[start : start + self.batch_size])

    def __repr__(self) -> str:
        return (
            f"ArrayLoader(samples={self.samples}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle}, seed={self.seed})"
        )
