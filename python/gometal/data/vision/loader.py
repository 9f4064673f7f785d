"""``DataLoader``: shuffled, augmented, normalised NumPy batches prepared on worker threads."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from ...base.epochs import EpochCounter
from ...train.sharding import check_pad_shards, check_shard, shard_length, shard_positions
from .cache import ImageCache
from .dataset import ImageFolderDataset
from .transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Transform,
    images_to_float_batch,
    stack_images,
)

if TYPE_CHECKING:
    from typing_extensions import Self

DEFAULT_CACHE_BYTES = 1 << 30
"""The byte limit of the cache a loader makes when given neither ``cache`` nor ``cache_size``."""

# Random streams of one (seed, epoch): the sample order, and each batch's augmentation.
_ORDER_STREAM = 0
_AUGMENT_STREAM = 1


class DataLoader(EpochCounter):
    """Iterates ``(x, y)`` batches over an ``ImageFolderDataset``.

    ``x`` is a C-contiguous ``float32`` ``(N, C, H, W)`` array normalised with the dataset's
    mean and std, ``y`` an ``int32`` ``(N,)`` array of labels. Decoded, resized ``uint8``
    images are kept in an LRU ``ImageCache`` (pass one ``cache`` to several loaders to
    share it); augmentation runs after the cache, on every epoch. Worker threads build the
    next ``prefetch`` batches while the caller trains on the current one; Pillow and NumPy
    release the GIL for decoding, resizing and normalising.

    The sample order and every augmentation draw are functions of ``(seed, epoch, batch
    index)``: the same seed and epoch give the same batches whatever ``num_workers``. The
    epoch counts iterations from 0; ``set_epoch(e)`` makes the next iteration epoch ``e``.

    Args:
        dataset: the samples.
        batch_size: samples per batch.
        shuffle: visit the samples in a new random order each epoch.
        seed: seeds the order and the augmentation (a non-negative int).
        cache_size: the most images the cache this loader makes may hold (0 disables
            caching); None keeps up to ``DEFAULT_CACHE_BYTES`` of pixels.
        cache: an ``ImageCache`` to use (and share) instead of making one.
        num_workers: threads preparing batches; 0 prepares each batch in the caller.
        prefetch: batches prepared ahead of the one being consumed (default
            ``2 * num_workers``); ignored when ``num_workers`` is 0.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        augment: random transforms applied to each cached ``uint8`` ``(C, H, W)`` image:
            None or False for none, True for ``RandomCrop(image_size, padding=image_size // 8)``
            and ``RandomHorizontalFlip()``, or a list or ``Compose`` of transforms.
        shard: in a distributed job (``gm.distributed.init()``), read only this rank's
            share of each epoch's order, as ``gm.training.ArrayLoader`` does (torch's
            ``DistributedSampler(drop_last=False)``: the order padded by repeating its
            start, then positions ``rank, rank + size, ...``); each rank draws its own
            augmentation. ``None``: shard whenever the process is in a job.
        pad_shards: ``False`` reads each rank's exact shard instead (every sample once,
            shards differing in length by one), as evaluation does.

    Example:
        >>> train, val = ImageFolderDataset("pets", image_size=64).split(0.2)  # doctest: +SKIP
        >>> cache = ImageCache()
        >>> with DataLoader(train, 32, augment=True, cache=cache) as loader:  # doctest: +SKIP
        ...     for epoch in range(10):
        ...         for x, y in loader:
        ...             trainer.train_batch(x, y)
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        batch_size: int = 32,
        *,
        shuffle: bool = True,
        seed: int = 0,
        cache_size: int | None = None,
        cache: ImageCache | None = None,
        num_workers: int = 2,
        prefetch: int | None = None,
        drop_last: bool = False,
        augment: bool | Sequence[Transform] | Transform | None = None,
        shard: bool | None = None,
        pad_shards: bool = True,
    ):
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if cache is not None and cache_size is not None:
            raise ValueError("pass either cache (a shared ImageCache) or cache_size, not both")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch) if prefetch is not None else 2 * max(1, self.num_workers)
        self.drop_last = drop_last
        self.augment = _as_augmentation(augment, dataset.image_size)
        self.cache = _make_cache(cache, cache_size)
        self._labels = np.asarray(dataset.labels, dtype=np.int32)
        self.shard_rank, self.shard_count = check_shard(shard)
        self.pad_shards = check_pad_shards(pad_shards)
        self._next_epoch = 0
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def sample_order(self, epoch: int) -> np.ndarray:
        """The dataset positions in the order epoch ``epoch`` visits them.

        Args:
            epoch: the epoch number.

        Returns:
            An int64 array, a permutation of ``range(len(dataset))`` when shuffling.

        Example:
            >>> loader.sample_order(0)[:4]  # doctest: +SKIP
            array([17,  3,  9, 12])
        """
        count = len(self.dataset)
        if not self.shuffle:
            return np.arange(count)
        return _stream(self.seed, epoch, _ORDER_STREAM).permutation(count)

    def shard_order(self, epoch: int, pad_shards: bool | None = None) -> np.ndarray:
        """The dataset positions this rank reads in epoch ``epoch`` (all of
        ``sample_order`` outside a distributed job).

        Args:
            epoch: the epoch number.
            pad_shards: overrides the loader's ``pad_shards`` (``None`` keeps it).

        Returns:
            An int64 array of positions, in the order they are read.

        Example:
            >>> loader.shard_order(0)[:4]  # doctest: +SKIP
            array([17,  9,  2, 30])
        """
        pad = self.pad_shards if pad_shards is None else check_pad_shards(pad_shards)
        order = self.sample_order(epoch)
        return shard_positions(order, self.shard_rank, self.shard_count, pad=pad)

    def _batches_in(self, pad: bool) -> int:
        count = shard_length(len(self.dataset), self.shard_rank, self.shard_count, pad=pad)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __len__(self) -> int:
        return self._batches_in(self.pad_shards)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.iterate()

    def iterate(self, pad_shards: bool | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Runs the next epoch, like ``iter(loader)``, with this rank's shard padded or not.

        Args:
            pad_shards: ``False`` reads the exact shard (each sample of the job once, as
                evaluation needs); ``None`` keeps the loader's ``pad_shards``.

        Returns:
            An iterator of the epoch's ``(x, y)`` batches.

        Example:
            >>> batches = list(loader.iterate(pad_shards=False))  # doctest: +SKIP
        """
        if self._closed:
            raise RuntimeError("this DataLoader is closed")
        pad = self.pad_shards if pad_shards is None else check_pad_shards(pad_shards)
        epoch = self.next_epoch()
        order = self.shard_order(epoch, pad)
        batches = [
            order[start : start + self.batch_size]
            for start in range(0, self._batches_in(pad) * self.batch_size, self.batch_size)
        ]
        if self.num_workers == 0:
            return (self._build_batch(epoch, index, rows) for index, rows in enumerate(batches))
        return self._prefetching(epoch, batches)

    def close(self) -> None:
        """Stops the worker threads without waiting for batches in progress.

        Example:
            >>> loader.close()  # doctest: +SKIP
        """
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A finaliser must not raise, even on a half-built loader.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return (
            f"DataLoader(samples={len(self.dataset)}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle}, num_workers={self.num_workers}, "
            f"prefetch={self.prefetch}, augment={self.augment is not None})"
        )

    def _prefetching(
        self, epoch: int, batches: list[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        executor = self._worker_pool()
        work = enumerate(batches)
        pending: deque[Future] = deque(
            executor.submit(self._build_batch, epoch, index, rows)
            for index, rows in itertools.islice(work, self.prefetch)
        )
        try:
            while pending:
                batch = pending.popleft().result()
                # Submit before yielding so the workers run while the caller trains.
                for index, rows in itertools.islice(work, 1):
                    pending.append(executor.submit(self._build_batch, epoch, index, rows))
                yield batch
        finally:
            for future in pending:
                future.cancel()

    def _worker_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.num_workers, thread_name_prefix="gometal-loader"
            )
        return self._executor

    def _build_batch(
        self, epoch: int, batch_index: int, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        # Stacking first lets augmentation and normalisation work on one array per batch.
        batch = stack_images([self._load(int(row)) for row in rows])
        if self.augment is not None:
            # Rank 0 (and a lone process) keeps the draws of an unsharded loader.
            rank_key = (self.shard_rank,) if self.shard_rank else ()
            rng = _stream(self.seed, epoch, _AUGMENT_STREAM, batch_index, *rank_key)
            batch = self.augment.apply_batch(batch, rng)
        x = images_to_float_batch(batch, self.dataset.mean, self.dataset.std)
        return x, self._labels[rows]

    def _load(self, row: int) -> np.ndarray:
        if self.cache is None:
            return self.dataset.load_uint8(row)
        return self.cache.get_or_load(
            self.dataset.cache_key(row), lambda: self.dataset.load_uint8(row)
        )


def _stream(seed: int, epoch: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, *key)))


def _make_cache(cache: ImageCache | None, cache_size: int | None) -> ImageCache | None:
    if cache is not None:
        if not isinstance(cache, ImageCache):
            raise TypeError(f"cache must be an ImageCache, got {type(cache).__name__}")
        return cache
    if cache_size is None:
        return ImageCache(max_bytes=DEFAULT_CACHE_BYTES)
    if cache_size < 0:
        raise ValueError(f"cache_size must be >= 0, got {cache_size}")
    return ImageCache(max_items=cache_size) if cache_size > 0 else None


def _as_augmentation(
    augment: bool | Sequence[Transform] | Transform | None, image_size: tuple[int, int]
) -> Transform | None:
    if augment is None or augment is False:
        return None
    if augment is True:
        padding = max(1, min(image_size) // 8)
        return Compose([RandomCrop(image_size, padding=padding), RandomHorizontalFlip()])
    if isinstance(augment, Transform):
        return augment
    transforms = list(augment)
    if not all(isinstance(t, Transform) for t in transforms):
        raise TypeError(f"augment must hold gometal.vision.transforms objects, got {transforms!r}")
    return Compose(transforms) if transforms else None
