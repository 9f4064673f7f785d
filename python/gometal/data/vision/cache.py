"""``ImageCache``: a thread-safe LRU cache of decoded, resized ``uint8`` images."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of an ``ImageCache``'s counters.

    Attributes:
        hits: lookups that found the image.
        misses: lookups that did not (each one decoded the file).
        hit_rate: ``hits / (hits + misses)``, 0.0 before any lookup.
        size: images held.
        bytes: bytes of pixel data held.
        evictions: images dropped to respect the limits.
        max_items: the item limit, None when unbounded.
        max_bytes: the byte limit, None when unbounded.
    """

    hits: int
    misses: int
    hit_rate: float
    size: int
    bytes: int
    evictions: int
    max_items: int | None
    max_bytes: int | None


class ImageCache:
    """Least-recently-used cache of decoded images, safe to share between loaders and threads.

    Keys are whatever the dataset names an image by (``ImageFolderDataset`` uses the file
    path and its decode settings), so a training and a validation loader over splits of
    one dataset can share one cache. Stored arrays are made read-only: augmentation works
    on views and copies, never on the cached pixels.

    Args:
        max_items: most images held, None for no limit.
        max_bytes: most bytes of pixels held, None for no limit.

    Example:
        >>> cache = ImageCache(max_bytes=512 * 2**20)
        >>> train = DataLoader(train_set, 32, cache=cache)  # doctest: +SKIP
        >>> val = DataLoader(val_set, 32, shuffle=False, cache=cache)  # doctest: +SKIP
        >>> cache.stats().hit_rate  # doctest: +SKIP
    """

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None):
        for name, limit in (("max_items", max_items), ("max_bytes", max_bytes)):
            if limit is not None and limit < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {limit}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        """Returns the cached image for ``key`` (counting a hit) or None (counting a miss).

        Args:
            key: the image's key.

        Returns:
            The read-only cached array, or None.

        Example:
            >>> ImageCache().get("missing") is None
            True
        """
        with self._lock:
            image = self._entries.get(key)
            if image is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return image

    def put(self, key: Hashable, image: np.ndarray) -> None:
        """Stores ``image`` under ``key``, evicting the least recently used beyond the limits.

        An image larger than ``max_bytes`` on its own is not stored.

        Args:
            key: the image's key.
            image: the array to keep (made read-only).

        Example:
            >>> cache = ImageCache(max_items=1)
            >>> cache.put("a", np.zeros((3, 8, 8), np.uint8)); len(cache)
            1
        """
        image.setflags(write=False)
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous.nbytes
            if self.max_bytes is not None and image.nbytes > self.max_bytes:
                return
            self._entries[key] = image
            self._bytes += image.nbytes
            while self._over_limits():
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self._evictions += 1

    def get_or_load(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """Returns the cached image, or calls ``load()`` and caches its result.

        ``load`` runs outside the lock, so several threads decode different files at once.

        Args:
            key: the image's key.
            load: a function returning the image, called on a miss.

        Returns:
            The (read-only) image.

        Example:
            >>> cache.get_or_load(path, lambda: dataset.load_uint8(0))  # doctest: +SKIP
        """
        image = self.get(key)
        if image is None:
            image = load()
            self.put(key, image)
        return image

    def stats(self) -> CacheStats:
        """Counters and size, as one consistent snapshot.

        Returns:
            A ``CacheStats``.

        Example:
            >>> ImageCache().stats().hit_rate
            0.0
        """
        with self._lock:
            lookups = self._hits + self._misses
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                hit_rate=self._hits / lookups if lookups else 0.0,
                size=len(self._entries),
                bytes=self._bytes,
                evictions=self._evictions,
                max_items=self.max_items,
                max_bytes=self.max_bytes,
            )

    def reset_stats(self) -> None:
        """Zeroes the hit, miss and eviction counters; keeps the cached images.

        Example:
            >>> cache.reset_stats()  # doctest: +SKIP
        """
        with self._lock:
            self._hits = self._misses = self._evictions = 0

    def clear(self) -> None:
        """Drops every cached image (the counters are kept).

        Example:
            >>> cache.clear()  # doctest: +SKIP
        """
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __repr__(self) -> str:
        stats = self.stats()
        return (
            f"ImageCache(size={stats.size}, bytes={stats.bytes}, hit_rate={stats.hit_rate:.3f}, "
            f"max_items={self.max_items}, max_bytes={self.max_bytes})"
        )

    def _over_limits(self) -> bool:
        if self.max_items is not None and len(self._entries) > self.max_items:
            return True
        return self.max_bytes is not None and self._bytes > self.max_bytes
