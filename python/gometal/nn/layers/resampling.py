"""``UpSampling2D`` and ``ZeroPadding2D``: resizing and padding ``(batch, C, H, W)`` images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...graph.composites import op
from . import spatial_onnx_rules
from ._resampling_maps import apply_separable_maps, linear_map, nearest_map
from ._spatial import check_image_batch, show_shape
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer

UPSAMPLING_MODES = ("nearest", "bilinear")


def _label(cls: str, name: str | None) -> str:
    return cls if name is None else f"{cls} '{name}'"


def _scale_pair(value: Any, what: str) -> tuple[float, float]:
    items = (value, value) if isinstance(value, (int, float)) else value
    try:
        pair = tuple(items)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v)
        for v in pair
    ):
        raise ValueError(
            f"{what} must be a positive number or a pair (height, width) of them, got {value!r}"
        )
    return (pair[0], pair[1])


@register_layer(onnx=spatial_onnx_rules.upsampling2d)
class UpSampling2D(Layer):
    """Resizes images by a scale factor, as ``nn.Upsample(scale_factor=..., mode=...)``.

    The output is ``(batch, C, floor(H * sh), floor(W * sw))``. ``"nearest"`` repeats
    pixels (input index ``floor(i / s)``), ``"bilinear"`` interpolates between the two
    nearest pixels with torch's ``align_corners`` semantics: ``False`` (default) lines up
    pixel centres, ``True`` the corner pixels.

    Args:
        scale_factor: ``s`` or ``(sh, sw)``, positive ints or floats.
        mode: ``"nearest"`` or ``"bilinear"``.
        align_corners: bilinear only (torch refuses it for nearest too).
        name: an explicit layer name.

    Example:
        >>> UpSampling2D(2, mode="bilinear")(gm.Input((3, 8, 8))).shape  # doctest: +SKIP
        (None, 3, 16, 16)
    """

    kind = "upsampling2d"

    def __init__(
        self,
        scale_factor: float | tuple[float, float] = 2,
        mode: str = "nearest",
        align_corners: bool = False,
        name: str | None = None,
    ):
        super().__init__(name)
        label = _label("UpSampling2D", name)
        self.scale_factor = _scale_pair(scale_factor, f"{label} scale_factor")
        if mode not in UPSAMPLING_MODES:
            raise ValueError(f"{label} mode must be one of {UPSAMPLING_MODES}, got {mode!r}")
        if not isinstance(align_corners, bool):
            raise TypeError(f"{label} align_corners must be a bool, got {align_corners!r}")
        if align_corners and mode == "nearest":
            raise ValueError(
                f"{label}: align_corners=True only applies to mode='bilinear', got mode {mode!r}"
            )
        self.mode = mode
        self.align_corners = align_corners

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "scale_factor": list(self.scale_factor),
            "mode": self.mode,
            "align_corners": self.align_corners,
        }

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(floor(height * sh), floor(width * sw))``, as torch sizes the output.

        Example:
            >>> UpSampling2D(1.5).output_size(4, 5)
            (6, 7)
        """
        sh, sw = self.scale_factor
        return (math.floor(height * sh), math.floor(width * sw))

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        _, height, width = check_image_batch(shape, "UpSampling2D")
        if min(self.output_size(height, width)) < 1:
            raise ValueError(
                f"scale_factor {self.scale_factor} gives an empty output "
                f"{self.output_size(height, width)} for input {show_shape(shape)}"
            )
        return []

    def _integer_factors(self) -> tuple[int, int] | None:
        if all(float(s).is_integer() for s in self.scale_factor):
            return (int(self.scale_factor[0]), int(self.scale_factor[1]))
        return None

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        batch, channels, height, width = g.shape(inputs[0])
        out_height, out_width = self.output_size(height, width)
        repeats = self._integer_factors()
        if self.mode == "nearest" and repeats is not None:
            # Whole factors repeat each pixel: a broadcast, no interpolation map.
            sh, sw = repeats
            x = op(g, "reshape", inputs[0], shape=[batch, channels, height, 1, width, 1])
            x = op(g, "broadcast_to", x, shape=[batch, channels, height, sh, width, sw])
            return op(g, "reshape", x, shape=[batch, channels, out_height, out_width])
        return apply_separable_maps(g, inputs[0], *self.interpolation_maps(height, width))

    def interpolation_maps(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``(OH, H)`` and ``(OW, W)`` matrices the layer applies to each image:
        ``output = height_map @ image @ width_map.T``.

        Example:
            >>> UpSampling2D(2).interpolation_maps(1, 2)[1].tolist()
            [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
        """
        out_height, out_width = self.output_size(height, width)
        sh, sw = self.scale_factor
        if self.mode == "nearest":
            return (nearest_map(height, out_height, sh), nearest_map(width, out_width, sw))
        return (
            linear_map(height, out_height, sh, self.align_corners),
            linear_map(width, out_width, sw, self.align_corners),
        )


def _padding_spec(value: Any, what: str) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from Keras's int, pair or pair of pairs."""

    def count(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(
                f"{what} must be an int >= 0, a pair (height, width) or ((top, bottom), "
                f"(left, right)) of them, got {value!r}"
            )
        return v

    if isinstance(value, int) and not isinstance(value, bool):
        p = count(value)
        return (p, p, p, p)
    try:
        height, width = value
    except (TypeError, ValueError):
        count(None)
    if isinstance(height, int) and isinstance(width, int):
        return (count(height), count(height), count(width), count(width))
    try:
        (top, bottom), (left, right) = height, width
    except (TypeError, ValueError):
        count(None)
    return (count(top), count(bottom), count(left), count(right))


@register_layer(onnx=spatial_onnx_rules.zero_padding2d)
class ZeroPadding2D(Layer):
    """Adds rows and columns of zeros around images, as Keras's ``ZeroPadding2D``
    (``nn.ZeroPad2d`` in torch).

    Args:
        padding: ``p`` (all sides), ``(ph, pw)`` (top and bottom, left and right) or
            ``((top, bottom), (left, right))``.
        name: an explicit layer name.

    Example:
        >>> ZeroPadding2D(((1, 0), (2, 2)))(gm.Input((3, 8, 8))).shape  # doctest: +SKIP
        (None, 3, 9, 12)
    """

    kind = "zero_padding2d"

    def __init__(
        self,
        padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 1,
        name: str | None = None,
    ):
        super().__init__(name)
        self.pads = _padding_spec(padding, f"{_label('ZeroPadding2D', name)} padding")

    @property
    def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((top, bottom), (left, right))``."""
        top, bottom, left, right = self.pads
        return ((top, bottom), (left, right))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": [list(side) for side in self.padding]}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        check_image_batch(input_shapes[0], "ZeroPadding2D")
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        top, bottom, left, right = self.pads
        x = inputs[0]
        if top or bottom:
            x = op(g, "pad", x, axis=2, before=top, after=bottom)
        if left or right:
            x = op(g, "pad", x, axis=3, before=left, after=right)
        return x
