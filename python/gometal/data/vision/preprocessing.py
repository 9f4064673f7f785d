"""``ImagePreprocessing``: how an image file becomes a model input, as data a model records.

``gometal train`` stores it in the saved model's metadata (and ``model.json``); ``gometal
predict`` reads it back, so new images are decoded, resized and normalised exactly as the
training images were.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .decode import load_resized
from .transforms import CenterCrop, Resize, images_to_float_batch, to_size

PIXEL_MAX = 255  # inputs are (pixel / PIXEL_MAX - mean) / std
_RESIZE_MODES = ("shorter", "stretch")
_KEYS = ("image_size", "channels", "resize", "mean", "std", "pixel_max", "jpeg_draft")


@dataclass(frozen=True)
class ImagePreprocessing:
    """The decoding, resizing and normalisation that ``ImageFolderDataset`` applies.

    An input is ``(pixel / 255 - mean) / std`` per channel, after the image is converted to
    ``channels`` (RGB or grey) and resized to ``image_size`` (``resize="shorter"``: shorter
    side, then a center crop; ``"stretch"``: both sides).

    Args:
        image_size: ``(height, width)``.
        channels: 3 (RGB) or 1 (grayscale).
        resize: ``"shorter"`` or ``"stretch"``.
        mean: one mean per channel, on the ``[0, 1]`` scale.
        std: one standard deviation per channel, on the ``[0, 1]`` scale.
        jpeg_draft: JPEG files decode at a reduced scale when much larger than the target.

    Example:
        >>> pre = ImagePreprocessing((16, 16), 3, "shorter", (0.5,) * 3, (0.25,) * 3)
        >>> ImagePreprocessing.from_dict(pre.to_dict()) == pre
        True
    """

    image_size: tuple[int, int]
    channels: int
    resize: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    jpeg_draft: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", to_size(self.image_size, "image_size"))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 3 (RGB) or 1 (grayscale), got {self.channels!r}")
        if self.resize not in _RESIZE_MODES:
            raise ValueError(f"resize must be one of {_RESIZE_MODES}, got {self.resize!r}")
        for name in ("mean", "std"):
            values = _channel_values(getattr(self, name), self.channels, name)
            object.__setattr__(self, name, values)
        if not all(value > 0 for value in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if not isinstance(self.jpeg_draft, bool):
            raise TypeError(f"jpeg_draft must be true or false, got {self.jpeg_draft!r}")

    @classmethod
    def from_dataset(cls, dataset: Any) -> ImagePreprocessing:
        """The preprocessing of an ``ImageFolderDataset`` (or any object with its fields).

        Args:
            dataset: has ``image_size``, ``channels``, ``resize``, ``mean``, ``std`` and
                ``jpeg_draft``.

        Returns:
            The record.

        Example:
            >>> ImagePreprocessing.from_dataset(data).image_size  # doctest: +SKIP
            (32, 32)
        """
        return cls(
            dataset.image_size,
            dataset.channels,
            dataset.resize,
            tuple(dataset.mean),
            tuple(dataset.std),
            dataset.jpeg_draft,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON data.

        Returns:
            ``{"image_size": [h, w], "channels", "resize", "mean": [...], "std": [...],
            "pixel_max": 255, "jpeg_draft"}``.

        Example:
            >>> ImagePreprocessing((8, 8), 1, "stretch", (0.0,), (1.0,)).to_dict()["pixel_max"]
            255
        """
        return {
            "image_size": list(self.image_size),
            "channels": self.channels,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "pixel_max": PIXEL_MAX,
            "jpeg_draft": self.jpeg_draft,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ImagePreprocessing:
        """Rebuilds the record from ``to_dict()`` output, checking every entry.

        Args:
            data: the mapping, e.g. read back from a model's metadata.

        Returns:
            The record.

        Raises:
            TypeError, ValueError: ``data`` is not a mapping, lacks an entry, or holds a
                value of the wrong kind or range; the message names the entry, what it
                expects and what it got.

        Example:
            >>> ImagePreprocessing.from_dict({"image_size": [8, 8], "channels": 1,
            ...     "resize": "stretch", "mean": [0], "std": [1], "pixel_max": 255,
            ...     "jpeg_draft": True}).channels
            1
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"preprocessing must be a mapping, got {type(data).__name__}")
        missing = [key for key in _KEYS if key not in data]
        if missing:
            raise ValueError(f"preprocessing lacks {', '.join(missing)}; it has {sorted(data)}")
        if data["pixel_max"] != PIXEL_MAX:
            raise ValueError(
                f"preprocessing pixel_max must be {PIXEL_MAX} (8-bit images), "
                f"got {data['pixel_max']!r}"
            )
        size = data["image_size"]
        if not isinstance(size, Sequence) or isinstance(size, str):
            raise TypeError(f"preprocessing image_size must be [height, width], got {size!r}")
        return cls(
            tuple(size),
            data["channels"],
            data["resize"],
            data["mean"],
            data["std"],
            data["jpeg_draft"],
        )

    def load_uint8(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Decodes, converts and resizes one image file as the training images were.

        Args:
            path: the image file.

        Returns:
            A ``uint8`` ``(channels, height, width)`` array.

        Raises:
            OSError: the file cannot be read or decoded (the message names it).

        Example:
            >>> pre.load_uint8("cat.jpg").shape  # doctest: +SKIP
            (3, 32, 32)
        """
        resizer = Resize(self.image_size, mode=self.resize)
        cropper = CenterCrop(self.image_size) if self.resize == "shorter" else None
        return load_resized(path, resizer, cropper, self.channels, self.jpeg_draft)

    def load_batch(self, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """Loads image files into one normalised model input batch.

        Args:
            paths: image files.

        Returns:
            A C-contiguous ``float32`` ``(N, channels, height, width)`` array.

        Raises:
            OSError: a file cannot be read or decoded (the message names it).

        Example:
            >>> pre.load_batch(["a.png", "b.jpg"]).shape  # doctest: +SKIP
            (2, 3, 32, 32)
        """
        images = [self.load_uint8(path) for path in paths]
        return images_to_float_batch(images, self.mean, self.std)


def _channel_values(values: Any, channels: int, name: str) -> tuple[float, ...]:
    items = [values] if isinstance(values, (int, float)) else values
    if (
        isinstance(items, (str, bytes, Mapping))
        or not isinstance(items, Sequence)
        or len(items) not in (1, channels)
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in items
        )
    ):
        raise ValueError(
            f"{name} must be 1 or {channels} finite numbers (one per channel), got {values!r}"
        )
    floats = [float(v) for v in items]
    return tuple(floats * channels if len(floats) == 1 else floats)
