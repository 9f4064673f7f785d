"""Image files as a model input: a ``BYTES`` tensor of JPEG or PNG files, preprocessed
exactly as training did.

A model saved by ``gometal train`` records its image preprocessing (size, channels,
resize, normalisation) in its file's metadata; for such a model the server also takes
its image input as ``BYTES`` of shape ``[N]`` (or ``[N, 1]``), one file per row, and turns
the files into the float batch ``gometal predict`` would build from them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..data.vision import ImagePreprocessing, images_to_float_batch
from .protocol import ProtocolError

__all__ = ["IMAGE_SIGNATURES", "ImageInput"]

# The file formats taken, by their first bytes.
IMAGE_SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}

_log = logging.getLogger(__name__)


class ImageInput:
    """Decodes ``BYTES`` image files into a model's float input.

    Args:
        preprocessing: the training images' preprocessing.
        input_name: the model input the images feed.

    Example:
        >>> images = ImageInput.for_model(model, read_metadata(path)["user"])  # doctest: +SKIP
        >>> images.decode(np.array([png_bytes], dtype=object)).shape  # doctest: +SKIP
        (1, 3, 32, 32)
    """

    def __init__(self, preprocessing: ImagePreprocessing, input_name: str) -> None:
        self.preprocessing = preprocessing
        self.input_name = input_name

    @classmethod
    def for_model(cls, model: Any, user_metadata: Mapping[str, Any]) -> ImageInput | None:
        """The image input of a model whose metadata records its preprocessing, or ``None``
        (no preprocessing recorded, or it does not make the model's one input)."""
        recorded = user_metadata.get("preprocessing")
        if recorded is None or len(model.input_signature.names) != 1:
            return None
        try:
            preprocessing = ImagePreprocessing.from_dict(recorded)
        except (TypeError, ValueError) as err:
            _log.warning("ignoring the model's recorded image preprocessing: %s", err)
            return None
        made = (preprocessing.channels, *preprocessing.image_size)
        if tuple(model.input_signature.sample_shapes[0]) != made:
            return None
        return cls(preprocessing, model.input_signature.names[0])

    def check_shape(self, shape: tuple[int, ...], max_rows: int) -> None:
        """Refuses a BYTES shape other than ``[N]`` or ``[N, 1]`` with 1 <= N <= max_rows."""
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise ProtocolError(
                400, f"input {self.input_name!r}: BYTES images take shape [N] or [N, 1], "
                f"got {list(shape)}",
            )  # fmt: skip
        if not 1 <= shape[0] <= max_rows:
            raise ProtocolError(
                400, f"input {self.input_name!r}: the batch must hold 1 to {max_rows} images "
                f"(max_batch_size), got {shape[0]}",
            )  # fmt: skip

    def decode(self, files: np.ndarray) -> np.ndarray:
        """The float32 ``(N, C, H, W)`` batch of the image files in ``files``.

        Raises:
            ProtocolError: 400 naming the element that is no JPEG or PNG image, or that
                cannot be decoded.
        """
        images = []
        for index, data in enumerate(files.ravel()):
            label = f"input {self.input_name!r} element {index}"
            if not any(data.startswith(magic) for magic in IMAGE_SIGNATURES.values()):
                raise ProtocolError(400, f"{label} is not a JPEG or PNG file")
            try:
                images.append(self.preprocessing.load_uint8(io.BytesIO(data)))
            except (OSError, ValueError, TypeError) as err:
                # Pillow's errors differ by format and by how the file is broken.
                raise ProtocolError(400, f"{label} cannot be decoded: {err}") from None
        pre = self.preprocessing
        return images_to_float_batch(images, pre.mean, pre.std)
