"""``ImageFolderDataset``: one class per sub-folder, as torchvision's ``ImageFolder``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .decode import IMAGE_EXTENSIONS, find_unreadable_reason, is_image_path, load_resized
from .transforms import CenterCrop, Resize, channel_vector, images_to_float_batch, to_size

_VERIFY_MODES = ("fast", "full")
_NAMES_IN_WARNING = 20
# Index-time checks are mostly waiting on file reads; a few threads hide that latency.
_VERIFY_THREADS = 8


class UnreadableImageWarning(UserWarning):
    """Issued once per ``ImageFolderDataset`` listing the files it skipped."""


class ImageFolderDataset:
    """Images under ``root/<class name>/...``, labelled by their sub-folder.

    Class names are the sorted sub-folder names and labels their positions in that list.
    Files are found recursively inside each class folder; hidden files and folders are
    ignored. Files without an image extension and files that do not decode are skipped,
    and one ``UnreadableImageWarning`` names them all (``skipped`` keeps the list).

    Each image is decoded with Pillow, converted to RGB (or grayscale with ``channels=1``),
    resized and cropped to ``image_size``: ``resize="shorter"`` scales the shorter side
    and center-crops, ``resize="stretch"`` resizes to ``image_size`` ignoring the aspect.
    ``dataset[i]`` returns the normalised ``(C, H, W)`` float32 image and its int label;
    ``load_uint8(i)`` returns the ``uint8`` pixels that ``DataLoader`` caches and augments.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: ``n`` or ``(height, width)`` of the decoded images.
        channels: 3 (RGB) or 1 (grayscale).
        resize: ``"shorter"`` (resize + center crop) or ``"stretch"``.
        mean: per-channel mean on the ``[0, 1]`` scale (default 0).
        std: per-channel standard deviation on the ``[0, 1]`` scale (default 1).
        extensions: file suffixes to read, compared lower-case.
        verify: ``"fast"`` checks headers (and decodes only JPEG files with no end marker
            and formats other than JPEG and PNG) when indexing; ``"full"`` decodes every file.
        jpeg_draft: decode large JPEG files at a reduced DCT scale (faster, nearly equal).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
        ValueError: ``root`` has no class sub-folder, or a class folder has no readable image.

    Example:
        >>> data = ImageFolderDataset("pets", image_size=64)  # doctest: +SKIP
        >>> data.classes, len(data)  # doctest: +SKIP
        (['cat', 'dog'], 2000)
        >>> train, val = data.split(0.2, seed=0)  # doctest: +SKIP
        >>> x, label = train[0]  # x: (3, 64, 64) float32  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int] = 64,
        channels: int = 3,
        resize: str = "shorter",
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        verify: str = "fast",
        jpeg_draft: bool = True,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 3 (RGB) or 1 (grayscale), got {channels!r}")
        if verify not in _VERIFY_MODES:
            raise ValueError(f"verify must be one of {_VERIFY_MODES}, got {verify!r}")
        self.root = Path(root)
        self.image_size = to_size(image_size, "image_size")
        self.channels = channels
        self.resize = resize
        self.mean = tuple(channel_vector(mean, channels).tolist())
        self.std = tuple(channel_vector(std, channels).tolist())
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        self.extensions = tuple(ext.lower() for ext in extensions)
        self.jpeg_draft = jpeg_draft
        self._resizer = Resize(self.image_size, mode=resize)
        self._cropper = CenterCrop(self.image_size) if resize == "shorter" else None

        class_dirs = _class_folders(self.root, self.extensions)
        self.classes = [folder.name for folder in class_dirs]
        candidates, not_images = _list_files(class_dirs, self.extensions)
        reasons = _check_files([path for path, _ in candidates], thorough=verify == "full")
        self.skipped: list[tuple[str, str]] = [
            (os.fspath(path), "not an image file extension") for path in not_images
        ]
        paths, labels = [], []
        for (path, label), reason in zip(candidates, reasons):
            if reason is None:
                paths.append(os.fspath(path))
                labels.append(label)
            else:
                self.skipped.append((os.fspath(path), reason))
        self.skipped.sort()
        if self.skipped:
            warnings.warn(
                _skipped_message(self.root, self.skipped), UnreadableImageWarning, stacklevel=2
            )
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(self.classes))
        empty = [class_dirs[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise ValueError(
                f"class folder {os.fspath(empty[0])!r} holds no readable image with an "
                f"extension in {self.extensions}; remove the folder or add images"
            )
        self._paths = paths
        self._labels = np.asarray(labels, dtype=np.int32)

    @property
    def class_to_index(self) -> dict[str, int]:
        """``{class name: label}``, labels in sorted-name order."""
        return {name: index for index, name in enumerate(self.classes)}

    @property
    def labels(self) -> np.ndarray:
        """The ``int32`` label of every sample, in dataset order (read-only view)."""
        view = self._labels.view()
        view.setflags(write=False)
        return view

    @property
    def paths(self) -> list[str]:
        """The file path of every sample, in dataset order."""
        return list(self._paths)

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` pairs, as torchvision's ``ImageFolder.samples``."""
        return list(zip(self._paths, self._labels.tolist()))

    @property
    def decode_settings(self) -> tuple:
        """What, besides the path, determines ``load_uint8``'s pixels (part of the cache key)."""
        return (self.image_size, self.channels, self.resize, self.jpeg_draft)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """The normalised image and the label of sample ``index``.

        Args:
            index: the sample position (negative counts from the end).

        Returns:
            ``(x, label)``: ``x`` a C-contiguous ``float32`` ``(C, H, W)`` array.

        Example:
            >>> x, label = data[0]  # doctest: +SKIP
        """
        index = self._check_index(index)
        x = images_to_float_batch([self.load_uint8(index)], self.mean, self.std)[0]
        return x, int(self._labels[index])

    def load_uint8(self, index: int) -> np.ndarray:
        """Decodes, converts and resizes sample ``index``: the pixels a loader caches.

        Args:
            index: the sample position.

        Returns:
            A C-contiguous ``uint8`` array ``(channels, height, width)``.

        Example:
            >>> data.load_uint8(0).shape  # doctest: +SKIP
            (3, 64, 64)
        """
        index = self._check_index(index)
        return load_resized(
            self._paths[index], self._resizer, self._cropper, self.channels, self.jpeg_draft
        )

    def cache_key(self, index: int) -> tuple:
        """The key ``ImageCache`` stores sample ``index`` under: its path and decode settings.

        Args:
            index: the sample position.

        Returns:
            A hashable tuple.

        Example:
            >>> data.cache_key(0)[0]  # doctest: +SKIP
            'pets/cat/1.jpg'
        """
        return (self._paths[index], *self.decode_settings)

    def class_distribution(self) -> dict[str, int]:
        """Samples per class, every class included.

        Returns:
            ``{class name: count}`` in label order.

        Example:
            >>> data.class_distribution()  # doctest: +SKIP
            {'cat': 1000, 'dog': 1000}
        """
        counts = np.bincount(self._labels, minlength=len(self.classes))
        return {name: int(count) for name, count in zip(self.classes, counts)}

    def split(
        self, val_fraction: float, seed: int = 0
    ) -> tuple[ImageFolderDataset, ImageFolderDataset]:
        """Splits into training and validation sets, stratified per class.

        Each class puts ``round(count * val_fraction)`` samples, chosen at random with
        ``seed``, into validation (at least one, and leaving one for training, when the
        class has two or more samples). The same seed gives the same split.

        Args:
            val_fraction: the share of each class held out, in ``(0, 1)``.
            seed: the seed of the random choice.

        Returns:
            ``(train, val)``: disjoint datasets with the same classes, in dataset order.

        Example:
            >>> train, val = data.split(0.2, seed=0)  # doctest: +SKIP
        """
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        in_val = np.zeros(len(self), dtype=bool)
        for label, members in enumerate(self._class_members()):
            count = len(members)
            n_val = int(np.floor(count * val_fraction + 0.5))
            if count >= 2:
                n_val = min(max(n_val, 1), count - 1)
            chosen = _class_rng(seed, label).permutation(members)[:n_val]
            in_val[chosen] = True
        return self._select(np.flatnonzero(~in_val)), self._select(np.flatnonzero(in_val))

    def subset(self, n: int, seed: int = 0) -> ImageFolderDataset:
        """A random ``n``-sample subset, stratified: classes keep their proportions.

        Class quotas are ``n * count / total`` rounded by largest remainder; the choice
        within each class is random with ``seed``, so the same arguments give the same subset.

        Args:
            n: the number of samples (the whole dataset when ``n >= len(self)``).
            seed: the seed of the random choice.

        Returns:
            A dataset with the same classes, in dataset order.

        Example:
            >>> small = data.subset(200)  # doctest: +SKIP
        """
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        if n >= len(self):
            return self._select(np.arange(len(self)))
        members_per_class = self._class_members()
        counts = np.array([len(m) for m in members_per_class], dtype=np.float64)
        exact = n * counts / counts.sum()
        quotas = np.floor(exact).astype(np.int64)
        # Largest remainder first; stable sort breaks ties by class order.
        by_remainder = np.argsort(-(exact - quotas), kind="stable")
        quotas[by_remainder[: n - quotas.sum()]] += 1
        chosen = [
            _class_rng(seed, label).permutation(members)[:quota]
            for label, (members, quota) in enumerate(zip(members_per_class, quotas))
        ]
        return self._select(np.sort(np.concatenate(chosen)))

    def filter_classes(self, names: Iterable[str]) -> ImageFolderDataset:
        """Keeps only the named classes, relabelled ``0..k-1`` in sorted-name order.

        Args:
            names: class names to keep.

        Returns:
            A dataset whose ``classes`` are the kept names, sorted.

        Raises:
            ValueError: a name is not a class of this dataset.

        Example:
            >>> pets = data.filter_classes(["dog", "cat"])  # doctest: +SKIP
            >>> pets.classes  # doctest: +SKIP
            ['cat', 'dog']
        """
        wanted = set(names)
        unknown = sorted(wanted - set(self.classes))
        if unknown:
            raise ValueError(f"unknown classes {unknown}; this dataset has {self.classes}")
        if not wanted:
            raise ValueError("filter_classes needs at least one class name")
        kept = [name for name in self.classes if name in wanted]
        new_label = np.full(len(self.classes), -1, dtype=np.int32)
        for position, name in enumerate(kept):
            new_label[self.class_to_index[name]] = position
        rows = np.flatnonzero(new_label[self._labels] >= 0)
        return self._select(rows, classes=kept, labels=new_label[self._labels[rows]])

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(root={os.fspath(self.root)!r}, samples={len(self)}, "
            f"classes={len(self.classes)}, image_size={self.image_size}, channels={self.channels})"
        )

    def _class_members(self) -> list[np.ndarray]:
        return [np.flatnonzero(self._labels == label) for label in range(len(self.classes))]

    def _select(
        self,
        rows: np.ndarray,
        classes: list[str] | None = None,
        labels: np.ndarray | None = None,
    ) -> ImageFolderDataset:
        # A view sharing this dataset's settings; skips the folder scan of __init__.
        derived = object.__new__(type(self))
        derived.__dict__.update(self.__dict__)
        derived.classes = list(self.classes if classes is None else classes)
        derived._paths = [self._paths[i] for i in rows]
        derived._labels = np.asarray(
            self._labels[rows] if labels is None else labels, dtype=np.int32
        )
        derived.skipped = list(self.skipped)
        return derived

    def _check_index(self, index: int) -> int:
        count = len(self._paths)
        position = int(index)
        if position < 0:
            position += count
        if not 0 <= position < count:
            raise IndexError(f"index {index} out of range for a dataset of {count} samples")
        return position


def _class_folders(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    if not root.exists():
        raise FileNotFoundError(f"image folder {os.fspath(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{os.fspath(root)!r} is not a folder")
    entries = [entry for entry in root.iterdir() if not entry.name.startswith(".")]
    folders = sorted((entry for entry in entries if entry.is_dir()), key=lambda e: e.name)
    loose_images = [e for e in entries if e.is_file() and is_image_path(e, extensions)]
    if not folders and loose_images:
        raise ValueError(
            f"image folder {os.fspath(root)!r} holds {len(loose_images)} images but no class "
            f"sub-folders: move each class's images into a sub-folder named after the class, "
            f"e.g. {os.fspath(root / 'cat')}/1.jpg"
        )
    if not folders:
        raise ValueError(
            f"image folder {os.fspath(root)!r} is empty: expected one sub-folder per class, "
            f"e.g. {os.fspath(root / 'cat')}/1.jpg"
        )
    return folders


def _list_files(
    class_dirs: list[Path], extensions: tuple[str, ...]
) -> tuple[list[tuple[Path, int]], list[Path]]:
    candidates: list[tuple[Path, int]] = []
    not_images: list[Path] = []
    for label, folder in enumerate(class_dirs):
        for directory, subdirs, files in os.walk(folder, followlinks=True):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(directory) / name
                if is_image_path(path, extensions):
                    candidates.append((path, label))
                else:
                    not_images.append(path)
    return candidates, not_images


def _check_files(paths: list[Path], thorough: bool) -> list[str | None]:
    if len(paths) < 2 * _VERIFY_THREADS:
        return [find_unreadable_reason(path, thorough) for path in paths]
    with ThreadPoolExecutor(_VERIFY_THREADS, thread_name_prefix="gometal-verify") as pool:
        return list(pool.map(lambda path: find_unreadable_reason(path, thorough), paths))


def _skipped_message(root: Path, skipped: list[tuple[str, str]]) -> str:
    lines = [
        f"  {os.path.relpath(path, root)}: {reason}" for path, reason in skipped[:_NAMES_IN_WARNING]
    ]
    if len(skipped) > _NAMES_IN_WARNING:
        lines.append(
            f"  ... and {len(skipped) - _NAMES_IN_WARNING} more (see the dataset's .skipped)"
        )
    return (
        f"skipped {len(skipped)} unreadable or non-image files under {os.fspath(root)!r}:\n"
        + "\n".join(lines)
    )


def _class_rng(seed: int, label: int) -> np.random.Generator:
    # One stream per class: a class's split does not depend on the other classes.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(label,)))
