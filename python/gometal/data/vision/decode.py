"""Reading image files: decoding with Pillow, channel conversion, and integrity checks.

JPEG files are decoded at a reduced scale when the target is at least twice smaller
(libjpeg's DCT scaling through Pillow's ``draft``). Measured on 375x500 JPEG files resized
to 64x64, this doubles Pillow's decode-and-resize throughput, and a libjpeg-turbo binding
(simplejpeg) was then only 4-10 % faster with identical pixels: Pillow alone is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .transforms import CenterCrop, Resize

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)
"""File extensions that ``ImageFolderDataset`` reads by default (compared lower-case)."""

# Errors Pillow raises on unreadable files: OSError covers truncation and decoder
# failures, SyntaxError and ValueError come from malformed headers of some formats.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)

_JPEG_END_MARKER = b"\xff\xd9"
_JPEG_TAIL_BYTES = 64


def convert_channels(image: Image.Image, channels: int) -> Image.Image:
    """Loads ``image`` and converts it to RGB (``channels=3``) or grayscale (``channels=1``).

    Grayscale is replicated to three channels; alpha is dropped (the stored colour under
    each pixel is kept, as ``Image.convert("RGB")`` and torchvision's loader do); palette
    images go through RGBA so that palette transparency converts without a warning; 16-bit
    grayscale is scaled to 8 bits.

    Args:
        image: any Pillow image, loaded or lazily opened.
        channels: 3 for RGB, 1 for luma (ITU-R 601-2, as ``Image.convert("L")``).

    Returns:
        A loaded image in mode ``"RGB"`` or ``"L"``.

    Example:
        >>> convert_channels(Image.new("RGBA", (4, 4)), 3).mode
        'RGB'
    """
    target = _target_mode(channels)
    image.load()
    if image.mode == target:
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit samples: Pillow's convert would clip values above 255 instead of scaling.
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    return image if image.mode == target else image.convert(target)


def load_resized(
    path: str | os.PathLike,
    resize: Resize,
    crop: CenterCrop | None,
    channels: int = 3,
    jpeg_draft: bool = True,
) -> np.ndarray:
    """Decodes one image file, converts its channels, resizes and crops it.

    Args:
        path: the image file.
        resize: the resize to apply; its output size is computed from the file's size.
        crop: an optional center crop applied after the resize.
        channels: 3 (RGB) or 1 (grayscale).
        jpeg_draft: decode JPEG files at a reduced scale (1/2, 1/4 or 1/8) when the
            resized image is at least that much smaller; a little less exact, much faster.

    Returns:
        A C-contiguous ``uint8`` array of shape ``(channels, height, width)``.

    Raises:
        OSError: the file cannot be decoded (names the file and Pillow's reason).

    Example:
        >>> chw = load_resized("cat/1.jpg", Resize(64), CenterCrop(64))  # doctest: +SKIP
        >>> chw.shape, chw.dtype  # doctest: +SKIP
        ((3, 64, 64), dtype('uint8'))
    """
    try:
        with Image.open(path) as opened:
            target_size = resize.output_size(*opened.size)
            if jpeg_draft and opened.format == "JPEG":
                opened.draft(None, target_size)
            image = convert_channels(opened, channels)
    except DECODE_ERRORS as err:
        raise OSError(f"cannot decode image {os.fspath(path)!r}: {err}") from err
    image = resize.resize_to(image, target_size)
    if crop is not None:
        image = crop(image)
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels[None])
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def find_unreadable_reason(path: str | os.PathLike, thorough: bool = False) -> str | None:
    """Checks that a file is a decodable image, cheaply unless ``thorough``.

    The quick check parses the header and runs Pillow's ``verify()`` (which checks PNG
    chunk checksums). A JPEG whose data does not end with the end-of-image marker, a file
    of any other format, and every file when ``thorough`` is set are decoded in full,
    since ``verify()`` does not detect a truncated JPEG.

    Args:
        path: the file to check.
        thorough: decode every file completely.

    Returns:
        None when the file reads as an image, else a short reason.

    Example:
        >>> find_unreadable_reason("notes.jpg")  # doctest: +SKIP
        "cannot identify image file 'notes.jpg'"
    """
    try:
        with Image.open(path) as image:
            image_format = image.format
            image.verify()
        needs_decode = thorough or image_format not in ("JPEG", "PNG")
        if image_format == "JPEG" and not needs_decode:
            needs_decode = not _ends_with_jpeg_marker(path)
        if needs_decode:
            with Image.open(path) as image:
                if image_format == "JPEG":
                    # The smallest DCT scale still reads every entropy-coded segment.
                    image.draft(None, (1, 1))
                image.load()
    except DECODE_ERRORS as err:
        return str(err) or type(err).__name__
    return None


def is_image_path(path: Path, extensions: tuple[str, ...]) -> bool:
    """True when ``path``'s suffix, lower-cased, is one of ``extensions``.

    Args:
        path: a file path.
        extensions: lower-case suffixes with the dot, e.g. ``(".jpg", ".png")``.

    Returns:
        Whether the file is an image candidate.

    Example:
        >>> is_image_path(Path("a/B.JPG"), (".jpg",))
        True
    """
    return path.suffix.lower() in extensions


def _ends_with_jpeg_marker(path: str | os.PathLike) -> bool:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - _JPEG_TAIL_BYTES))
        tail = handle.read()
    # Some writers pad after the marker; padding is harmless, a missing marker is not.
    return tail.rstrip(b"\x00\r\n ").endswith(_JPEG_END_MARKER)


def _target_mode(channels: int) -> str:
    if channels == 3:
        return "RGB"
    if channels == 1:
        return "L"
    raise ValueError(f"channels must be 3 (RGB) or 1 (grayscale), got {channels!r}")
