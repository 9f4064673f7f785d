"""Small real datasets written out as image folders, for the main job and the examples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

DIGITS_CLASSES = 10
_DIGITS_PIXEL_MAX = 16


def write_digits_folder(root: str | os.PathLike[str], upscale: int = 4) -> Path:
    """Writes scikit-learn's 1,797 handwritten digits as PNG files, one folder per class.

    Each 8x8 image (16 grey levels) is scaled to 0-255 and enlarged ``upscale`` times with
    nearest-neighbour sampling, so the folder looks like any other image dataset. Writing
    is idempotent: a complete folder (marked by a ``.complete`` file) is reused, and a
    partial one is rebuilt, so an interrupted run never leaves a half-written dataset.

    Args:
        root: the folder to create; it holds ``0/`` ... ``9/``.
        upscale: the enlargement factor (8x8 becomes 8*upscale square).

    Returns:
        The folder's path.

    Example:
        >>> path = write_digits_folder("/tmp/digits")  # doctest: +SKIP
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    marker = root / ".complete"
    if marker.exists():
        return root
    digits = load_digits()
    images = (digits.images * (255.0 / _DIGITS_PIXEL_MAX)).round().clip(0, 255).astype(np.uint8)
    images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    for label in range(DIGITS_CLASSES):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, digits.target)):
        target = root / str(label) / f"{index:04d}.png"
        # Write beside the target, then rename: a reader never sees a partial PNG.
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, target)
    marker.write_text(f"{len(images)} images\n")
    return root
