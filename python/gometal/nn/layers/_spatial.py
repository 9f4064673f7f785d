"""Argument and shape checks shared by the convolution and pooling layers (NCHW)."""

from __future__ import annotations

from typing import Any

from ..tensor import BATCH


def show_shape(shape: tuple[int, ...]) -> str:
    """Formats an engine shape with ``None`` for the batch, e.g. ``(None, 3, 32, 32)``."""
    return str(tuple(None if d == BATCH else d for d in shape))


def int_pair(value: Any, what: str, minimum: int) -> tuple[int, int]:
    """Returns ``value`` (an int or a pair of ints, each ``>= minimum``) as a pair.

    Args:
        value: an int used for both height and width, or a ``(height, width)`` pair.
        what: how errors name the argument, e.g. ``"Conv2D stride"``.
        minimum: the smallest value allowed.

    Returns:
        ``(height, width)``.

    Example:
        >>> int_pair(3, "kernel_size", 1)
        (3, 3)
    """
    items = (value, value) if isinstance(value, int) else value
    try:
        pair = tuple(items)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in pair
    ):
        raise ValueError(
            f"{what} must be an int >= {minimum} or a pair (height, width) of them, got {value!r}"
        )
    return (int(pair[0]), int(pair[1]))


def check_image_batch(shape: tuple[int, ...], layer: str) -> tuple[int, int, int]:
    """Returns ``(channels, height, width)`` of a ``(batch, C, H, W)`` input shape.

    Raises:
        ValueError: for an input that is not 4-D, naming the shape.
    """
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3:
            hint = (
                "; give images as (channels, height, width), e.g. gm.Input((1, 28, 28)) "
                "for grayscale"
            )
        raise ValueError(
            f"{layer} expects 4-D input (batch, channels, height, width), got shape "
            f"{show_shape(shape)}{hint}"
        )
    return shape[1], shape[2], shape[3]


def check_window_fits(
    shape: tuple[int, ...],
    window: tuple[int, int],
    padding: tuple[int, int],
    description: str,
) -> None:
    """Raises ``ValueError`` when a (dilated) window is larger than the padded input.

    Args:
        shape: the ``(batch, C, H, W)`` input shape.
        window: the window's extent ``(height, width)`` after dilation.
        padding: the zero padding on each side, ``(height, width)``.
        description: names the window in the message, e.g. ``"kernel_size (3, 3)"``.
    """
    padded = (shape[2] + 2 * padding[0], shape[3] + 2 * padding[1])
    if padded[0] < window[0] or padded[1] < window[1]:
        raise ValueError(
            f"{description} is larger than the padded input {padded} (input "
            f"{show_shape(shape)}, padding {padding}); the output would be empty"
        )
