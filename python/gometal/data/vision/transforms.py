"""Image transforms in torchvision's style, driven by an explicit NumPy ``Generator``.

Each transform is a callable ``t(image, rng=None)``. Geometric transforms accept a Pillow
image or a NumPy array in channels-first layout (``(..., H, W)``, torchvision's tensor
convention); ``ToCHWFloat`` turns a Pillow image or an ``(H, W, C)`` ``uint8`` array into
``(C, H, W)`` ``float32`` in ``[0, 1]``; ``Normalize`` then subtracts the mean and divides
by the standard deviation. Random transforms draw from ``rng`` (a fresh unseeded generator
when it is None), so a seeded generator reproduces the same augmentation.

``apply_batch(images, rng)`` applies a transform to a list of images or to one stacked
``(N, C, H, W)`` array, drawing the random parameters of the whole batch at once;
``DataLoader`` uses it on the stacked cached ``uint8`` images, and
``images_to_float_batch`` normalises the batch in two vectorised passes.

Example:
    >>> from gometal.vision import transforms as T
    >>> pipeline = T.Compose([T.Resize(72), T.CenterCrop(72), T.RandomCrop(64),
    ...                       T.RandomHorizontalFlip(), T.ToCHWFloat(),
    ...                       T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)])
    >>> x = pipeline(image, rng=np.random.default_rng(0))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESIZE_MODES = ("shorter", "stretch")
_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_PADDING_MODES = ("constant", "edge", "reflect")

Batch = list[Any] | np.ndarray
"""A list of images, or one ``(N, C, H, W)`` array of same-sized images."""


def to_size(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """Normalises an int or an ``(height, width)`` pair to a pair of positive ints.

    Args:
        size: ``n`` (square) or ``(height, width)``.
        name: the argument's name, for the error message.

    Returns:
        ``(height, width)``.

    Example:
        >>> to_size(64), to_size((48, 64))
        ((64, 64), (48, 64))
    """
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


class Transform:
    """Base class: a callable on one image, and ``apply_batch`` on a batch of images."""

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> Any:
        raise NotImplementedError

    def apply_batch(self, images: Batch, rng: np.random.Generator) -> Batch:
        """Applies the transform to every image of a batch; random transforms draw at once.

        Args:
            images: a list of images of the kind ``__call__`` accepts, or one array
                ``(N, C, H, W)`` of same-sized images (the loader's fast path).
            rng: the generator random parameters are drawn from.

        Returns:
            A list, or an ``(N, C, H', W')`` array when given an array.

        Example:
            >>> batch = np.zeros((8, 3, 4, 4), np.uint8)
            >>> CenterCrop(2).apply_batch(batch, np.random.default_rng(0)).shape
            (8, 3, 2, 2)
        """
        outputs = [self(image, rng) for image in images]
        return np.stack(outputs) if isinstance(images, np.ndarray) else outputs

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Applies transforms in order, passing the same generator to each.

    Args:
        transforms: the transforms, first applied first.

    Example:
        >>> Compose([CenterCrop(32), RandomHorizontalFlip()])(image, rng)  # doctest: +SKIP
    """

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> Any:
        for transform in self.transforms:
            image = transform(image, rng)
        return image

    def apply_batch(self, images: Batch, rng: np.random.Generator) -> Batch:
        for transform in self.transforms:
            images = transform.apply_batch(images, rng)
        return images

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class Resize(Transform):
    """Resizes so the shorter side fits ``size`` (``"shorter"``), or to ``size`` exactly.

    With ``mode="shorter"`` and an int ``size``, the shorter side becomes ``size`` and the
    longer keeps the aspect ratio (rounded down, as torchvision); with ``(height, width)``
    the image is scaled just enough to cover both, ready for ``CenterCrop(size)``. With
    ``mode="stretch"`` the output is exactly ``size`` whatever the aspect ratio. Pillow's
    resampling filters are antialiased when downscaling.

    Args:
        size: ``n`` or ``(height, width)``.
        mode: ``"shorter"`` or ``"stretch"``.
        interpolation: ``"bilinear"`` (default), ``"bicubic"``, ``"lanczos"`` or ``"nearest"``.

    Example:
        >>> Resize(64).output_size(width=500, height=375)
        (85, 64)
    """

    def __init__(
        self, size: int | Sequence[int], mode: str = "shorter", interpolation: str = "bilinear"
    ):
        if mode not in _RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {_RESIZE_MODES}, got {mode!r}")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {tuple(_INTERPOLATIONS)}, got {interpolation!r}"
            )
        self.size = to_size(size)
        self.mode = mode
        self.interpolation = interpolation

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The ``(width, height)`` (Pillow's order) an image of the given size is resized to.

        Args:
            width: the input width.
            height: the input height.

        Returns:
            ``(width, height)`` of the output.

        Example:
            >>> Resize(64, mode="stretch").output_size(500, 375)
            (64, 64)
        """
        target_h, target_w = self.size
        if self.mode == "stretch":
            return target_w, target_h
        if target_h * width >= target_w * height:
            # The height binds: scale it to target_h, the width follows the aspect ratio.
            return max(target_w, int(target_h * width / height)), target_h
        return target_w, max(target_h, int(target_w * height / width))

    def resize_to(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """Resizes a Pillow image to ``size`` (width, height) with this interpolation.

        Args:
            image: a Pillow image.
            size: ``(width, height)``.

        Returns:
            The resized image (``image`` itself when it already has that size).

        Example:
            >>> Resize(8).resize_to(Image.new("RGB", (4, 4)), (8, 8)).size
            (8, 8)
        """
        if image.size == size:
            return image
        return image.resize(size, resample=_INTERPOLATIONS[self.interpolation])

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> Any:
        if isinstance(image, Image.Image):
            return self.resize_to(image, self.output_size(*image.size))
        pil = _chw_to_pil(image)
        return _pil_to_chw(self.resize_to(pil, self.output_size(*pil.size)))


class CenterCrop(Transform):
    """Crops the center ``size`` region, padding with zeros where the image is smaller.

    The offsets follow torchvision: ``top = int(round((H - h) / 2))``, likewise ``left``.

    Args:
        size: ``n`` or ``(height, width)``.

    Example:
        >>> CenterCrop(2)(np.arange(16).reshape(1, 4, 4))
        array([[[ 5,  6],
                [ 9, 10]]])
    """

    def __init__(self, size: int | Sequence[int]):
        self.size = to_size(size)

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> Any:
        height, width = _image_hw(image)
        crop_h, crop_w = self.size
        top = round((height - crop_h) / 2.0)
        left = round((width - crop_w) / 2.0)
        return _crop(image, top, left, crop_h, crop_w)


class RandomCrop(Transform):
    """Crops a random ``size`` region, after optional padding of every border.

    Args:
        size: ``n`` or ``(height, width)`` of the crop.
        padding: pixels added on each side before cropping (CIFAR-style augmentation).
        padding_mode: ``"constant"`` (zeros), ``"edge"`` or ``"reflect"``.
        pad_if_needed: pad images smaller than ``size`` instead of raising.

    Example:
        >>> RandomCrop(32, padding=4)(chw_uint8, np.random.default_rng(0))  # doctest: +SKIP
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int = 0,
        padding_mode: str = "constant",
        pad_if_needed: bool = False,
    ):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.size = to_size(size)
        self.padding = int(padding)
        self.padding_mode = padding_mode
        self.pad_if_needed = pad_if_needed

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> Any:
        rng = rng if rng is not None else np.random.default_rng()
        pad_h, pad_w = self._padding_of(image)
        room_h, room_w = self._room(image, pad_h, pad_w)
        top, left = int(rng.integers(0, room_h)), int(rng.integers(0, room_w))
        return self._crop_padded(image, top, left, pad_h, pad_w)

    def apply_batch(self, images: Batch, rng: np.random.Generator) -> Batch:
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return self._crop_array_batch(images, rng)
        paddings = [self._padding_of(image) for image in images]
        rooms = np.array(
            [self._room(image, *padding) for image, padding in zip(images, paddings)],
            dtype=np.int64,
        ).reshape(-1, 2)
        # All (top, left) offsets in one draw: a scalar draw per sample costs more than the crop.
        offsets = rng.integers(0, rooms)
        return [
            self._crop_padded(image, int(top), int(left), *padding)
            for image, (top, left), padding in zip(images, offsets, paddings)
        ]

    def _crop_array_batch(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Pads the whole batch once, then copies one window per sample; draws exactly as
        # the list path does, so both give the same crops.
        pad_h, pad_w = self._padding_of(batch)
        room = self._room(batch, pad_h, pad_w)
        offsets = rng.integers(0, np.broadcast_to(np.array(room, dtype=np.int64), (len(batch), 2)))
        count, channels, height, width = batch.shape
        if self.padding_mode == "constant":
            padded = np.zeros((count, channels, height + 2 * pad_h, width + 2 * pad_w), batch.dtype)
            padded[:, :, pad_h : pad_h + height, pad_w : pad_w + width] = batch
        else:
            padded = _pad_hw(batch, pad_h, pad_w, self.padding_mode, channels_last=False)
        crop_h, crop_w = self.size
        out = np.empty((count, channels, crop_h, crop_w), batch.dtype)
        for sample, (top, left) in enumerate(offsets):
            out[sample] = padded[sample, :, top : top + crop_h, left : left + crop_w]
        return out

    def _padding_of(self, image: Any) -> tuple[int, int]:
        height, width = _image_hw(image)
        if not self.pad_if_needed:
            return self.padding, self.padding
        extra_h = max(0, self.size[0] - (height + 2 * self.padding))
        extra_w = max(0, self.size[1] - (width + 2 * self.padding))
        return self.padding + extra_h, self.padding + extra_w

    def _room(self, image: Any, pad_h: int, pad_w: int) -> tuple[int, int]:
        height, width = _image_hw(image)
        room_h = height + 2 * pad_h - self.size[0] + 1
        room_w = width + 2 * pad_w - self.size[1] + 1
        if room_h < 1 or room_w < 1:
            raise ValueError(
                f"[RandomCrop] crop {self.size} is larger than the padded image "
                f"{(height + 2 * pad_h, width + 2 * pad_w)}; pass pad_if_needed=True or a "
                "larger padding"
            )
        return room_h, room_w

    def _crop_padded(self, image: Any, top: int, left: int, pad_h: int, pad_w: int) -> Any:
        # (top, left) are in padded coordinates. Zero padding needs no padded copy: the
        # crop fills what lies outside the image with zeros, which is cheaper than np.pad.
        if self.padding_mode == "constant" or (pad_h == 0 and pad_w == 0):
            return _crop(image, top - pad_h, left - pad_w, *self.size)
        if isinstance(image, Image.Image):
            hwc = _pad_hw(np.asarray(image), pad_h, pad_w, self.padding_mode, channels_last=True)
            return _crop(Image.fromarray(hwc), top, left, *self.size)
        chw = _pad_hw(np.asarray(image), pad_h, pad_w, self.padding_mode, channels_last=False)
        return _crop(chw, top, left, *self.size)


class RandomHorizontalFlip(Transform):
    """Mirrors the image left-right with probability ``p``.

    Args:
        p: the flip probability.

    Example:
        >>> RandomHorizontalFlip(p=1.0)(np.array([[[1, 2, 3]]]))
        array([[[3, 2, 1]]])
    """

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> Any:
        rng = rng if rng is not None else np.random.default_rng()
        return _hflip(image) if rng.random() < self.p else image

    def apply_batch(self, images: Batch, rng: np.random.Generator) -> Batch:
        flips = rng.random(len(images)) < self.p
        if isinstance(images, np.ndarray) and images.ndim == 4:
            flipped = np.array(images)
            rows = np.flatnonzero(flips)
            flipped[rows] = images[rows, ..., ::-1]
            return flipped
        return [_hflip(image) if flip else image for image, flip in zip(images, flips)]


class ToCHWFloat(Transform):
    """Converts a Pillow image or an ``(H, W[, C])`` ``uint8`` array to ``(C, H, W)`` float32.

    Values are divided by 255, like torchvision's ``ToTensor``.

    Example:
        >>> ToCHWFloat()(np.full((2, 2, 3), 255, np.uint8)).shape
        (3, 2, 2)
    """

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        pixels = np.asarray(image)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.ndim != 3 or pixels.dtype != np.uint8:
            raise TypeError(
                f"[ToCHWFloat] expected a Pillow image or a uint8 (H, W, C) array, "
                f"got {pixels.dtype} of shape {pixels.shape}"
            )
        chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
        return np.multiply(chw, np.float32(1.0 / 255.0), out=chw)


class Normalize(Transform):
    """``(x - mean) / std`` per channel on a float ``(C, H, W)`` or ``(N, C, H, W)`` array.

    Args:
        mean: one value per channel (or one for all).
        std: one positive value per channel (or one for all).

    Example:
        >>> float(Normalize(0.5, 0.5)(np.ones((1, 2, 2), np.float32))[0, 0, 0])
        1.0
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        self.mean = tuple(float(v) for v in np.atleast_1d(mean))
        self.std = tuple(float(v) for v in np.atleast_1d(std))
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        x = np.asarray(image)
        if x.dtype.kind != "f" or x.ndim not in (3, 4):
            raise TypeError(
                f"[Normalize] expected a float (C, H, W) or (N, C, H, W) array (apply ToCHWFloat "
                f"first), got {x.dtype} of shape {x.shape}"
            )
        mean, std = channel_vector(self.mean, x.shape[-3]), channel_vector(self.std, x.shape[-3])
        return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32, copy=False)


def channel_vector(values: float | Sequence[float], channels: int) -> np.ndarray:
    """Broadcasts a scalar or per-channel sequence to a float64 vector of ``channels``.

    Args:
        values: one value, or exactly ``channels`` values.
        channels: the number of channels.

    Returns:
        A ``(channels,)`` float64 array.

    Example:
        >>> channel_vector(0.5, 3)
        array([0.5, 0.5, 0.5])
    """
    vector = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if vector.shape == (1,):
        vector = np.repeat(vector, channels)
    if vector.shape != (channels,):
        raise ValueError(
            f"expected 1 or {channels} per-channel values, got {tuple(np.atleast_1d(values))}"
        )
    return vector


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks same-shaped ``(C, H, W)`` images into one ``(N, C, H, W)`` array.

    Args:
        images: arrays of one shape.

    Returns:
        A new C-contiguous array.

    Example:
        >>> stack_images([np.zeros((3, 4, 4), np.uint8)] * 2).shape
        (2, 3, 4, 4)
    """
    shapes = {np.shape(image) for image in images}
    if len(shapes) != 1:
        raise ValueError(
            f"images of one batch must share a shape, got {sorted(shapes)}; end the augmentation "
            "with a crop or resize to a fixed size"
        )
    return np.stack(images)


def images_to_float_batch(
    images: Batch, mean: float | Sequence[float], std: float | Sequence[float]
) -> np.ndarray:
    """Turns ``uint8`` ``(C, H, W)`` images into a normalised ``float32`` NCHW batch.

    Computes ``(x / 255 - mean) / std`` as ``x * scale - offset`` over the whole batch in
    two vectorised passes, so a warm-cache epoch costs little next to a training step.

    Args:
        images: a list of ``uint8`` arrays of one shape ``(C, H, W)``, or their stack.
        mean: per-channel means on the ``[0, 1]`` scale (or one for all).
        std: per-channel standard deviations on the ``[0, 1]`` scale (or one for all).

    Returns:
        A C-contiguous ``float32`` array ``(N, C, H, W)``.

    Example:
        >>> images = [np.full((3, 2, 2), 255, np.uint8)]
        >>> float(images_to_float_batch(images, 0.5, 0.5)[0, 0, 0, 0])
        1.0
    """
    batch = images if isinstance(images, np.ndarray) else stack_images(images)
    if batch.dtype != np.uint8 or batch.ndim != 4:
        raise TypeError(
            f"expected uint8 (C, H, W) images, got {batch.dtype} of shape {batch.shape[1:]}"
        )
    channels = batch.shape[1]
    mean_vector = channel_vector(mean, channels)
    std_vector = channel_vector(std, channels)
    scale = (1.0 / (255.0 * std_vector)).astype(np.float32)[:, None, None]
    offset = (mean_vector / std_vector).astype(np.float32)[:, None, None]
    out = np.empty(batch.shape, dtype=np.float32)
    np.multiply(batch, scale, out=out)
    np.subtract(out, offset, out=out)
    return out


def _image_hw(image: Any) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.size[1], image.size[0]
    shape = np.shape(image)
    if len(shape) < 2:
        raise TypeError(f"expected a Pillow image or an array (..., H, W), got shape {shape}")
    return int(shape[-2]), int(shape[-1])


def _crop(image: Any, top: int, left: int, height: int, width: int) -> Any:
    if isinstance(image, Image.Image):
        # Pillow fills the part of the box outside the image with zeros.
        return image.crop((left, top, left + width, top + height))
    image = np.asarray(image)
    img_h, img_w = image.shape[-2:]
    if top >= 0 and left >= 0 and top + height <= img_h and left + width <= img_w:
        return image[..., top : top + height, left : left + width]
    out = np.zeros(image.shape[:-2] + (height, width), dtype=image.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + height, img_h), min(left + width, img_w)
    if src_bottom > src_top and src_right > src_left:
        out[..., src_top - top : src_bottom - top, src_left - left : src_right - left] = image[
            ..., src_top:src_bottom, src_left:src_right
        ]
    return out


def _hflip(image: Any) -> Any:
    if isinstance(image, Image.Image):
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image)[..., ::-1]


def _pad_hw(
    pixels: np.ndarray, pad_h: int, pad_w: int, mode: str, channels_last: bool
) -> np.ndarray:
    spatial = [(pad_h, pad_h), (pad_w, pad_w)]
    if channels_last:
        widths = spatial + [(0, 0)] * (pixels.ndim - 2)
    else:
        widths = [(0, 0)] * (pixels.ndim - 2) + spatial
    return np.pad(pixels, widths, mode=mode)


def _chw_to_pil(image: Any) -> Image.Image:
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise TypeError(
            f"expected a Pillow image or a uint8 (C, H, W) array with 1 or 3 channels, "
            f"got {pixels.dtype} of shape {pixels.shape}"
        )
    if pixels.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[0]))
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))


def _pil_to_chw(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels[None])
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
