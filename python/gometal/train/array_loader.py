"""``ArrayLoader``: ``(x, y)`` batches over arrays held in memory, shuffled per epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..base.arrays import check_batch_size, check_seed
from ..base.epochs import EpochCounter

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

    def __len__(self) -> int:
        count = self.samples
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        epoch = self.next_epoch()
        if not self.shuffle:
            return self._slices()
        return self._gathered(self.sample_order(epoch))

    def _batch(self, rows: Any) -> tuple[Any, ...]:
        if self.sample_weight is None:
            return take_rows(self.x, rows), take_rows(self.y, rows)
        return take_rows(self.x, rows), take_rows(self.y, rows), self.sample_weight[rows]

    def _slices(self) -> Iterator[tuple[Any, ...]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self._batch(slice(start, start + self.batch_size))

    def _gathered(self, order: np.ndarray) -> Iterator[tuple[Any, ...]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self._batch(order[start : start + self.batch_size])

    def __repr__(self) -> str:
        return (
            f"ArrayLoader(samples={self.samples}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle}, seed={self.seed})"
        )
