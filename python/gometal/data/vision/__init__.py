"""``gometal.vision``: image folders to normalised NumPy batches for training.

Decoding and resizing use Pillow; decoded images are cached as ``uint8`` in an LRU
``ImageCache``; ``DataLoader`` shuffles, augments and normalises batches on worker threads,
deterministically for a given seed and epoch.

Example:
    >>> from gometal.vision import DataLoader, ImageCache, ImageFolderDataset
    >>> data = ImageFolderDataset("pets", image_size=64, mean=0.5, std=0.25)  # doctest: +SKIP
    >>> train, val = data.split(val_fraction=0.2, seed=0)  # doctest: +SKIP
    >>> cache = ImageCache()
    >>> train_batches = DataLoader(train, 32, augment=True, cache=cache)  # doctest: +SKIP
    >>> val_batches = DataLoader(val, 256, shuffle=False, cache=cache)  # doctest: +SKIP
    >>> for x, y in train_batches:  # x: (32, 3, 64, 64) float32, y: (32,) int32
    ...     trainer.train_batch(x, y)  # doctest: +SKIP
"""

from . import transforms
from .cache import CacheStats, ImageCache
from .dataset import ImageFolderDataset, UnreadableImageWarning
from .decode import IMAGE_EXTENSIONS, convert_channels, find_unreadable_reason, load_resized
from .loader import DEFAULT_CACHE_BYTES, DataLoader
from .preprocessing import ImagePreprocessing
from .transforms import IMAGENET_MEAN, IMAGENET_STD, images_to_float_batch

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "CacheStats",
    "DataLoader",
    "ImageCache",
    "ImageFolderDataset",
    "ImagePreprocessing",
    "UnreadableImageWarning",
    "convert_channels",
    "find_unreadable_reason",
    "images_to_float_batch",
    "load_resized",
    "transforms",
]
