"""``GlobalMaxPool2D`` and ``AdaptiveAvgPool2D``: pooling to a fixed output size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from . import spatial_onnx_rules
from ._resampling_maps import adaptive_mean_map, apply_separable_maps
from ._spatial import check_image_batch, int_pair, show_shape
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


@register_layer(onnx=spatial_onnx_rules.global_max_pool2d)
class GlobalMaxPool2D(Layer):
    """The maximum over height and width: ``(batch, C, H, W) -> (batch, C)``.

    Equivalent to ``nn.AdaptiveMaxPool2d(1)`` followed by ``nn.Flatten()`` (Keras's
    ``GlobalMaxPooling2D``).

    Example:
        >>> GlobalMaxPool2D()(gm.Input((64, 8, 8))).shape  # doctest: +SKIP
        (None, 64)
    """

    kind = "global_max_pool2d"

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        check_image_batch(input_shapes[0], "GlobalMaxPool2D")
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "max", inputs[0], axes=[2, 3], keepdims=False)


@register_layer(onnx=spatial_onnx_rules.adaptive_avg_pool2d)
class AdaptiveAvgPool2D(Layer):
    """Averages images down to a fixed ``(OH, OW)``, as ``nn.AdaptiveAvgPool2d``.

    Output row ``i`` averages input rows ``floor(i * H / OH)`` to ``ceil((i + 1) * H /
    OH)`` (exclusive), torch's bins, which overlap when ``OH`` does not divide ``H``
    (likewise the columns). Sizes that divide evenly run as one average pool.

    Args:
        output_size: ``s`` or ``(OH, OW)``; each at most the input's size.
        name: an explicit layer name.

    Example:
        >>> AdaptiveAvgPool2D((2, 3))(gm.Input((8, 7, 7))).shape  # doctest: +SKIP
        (None, 8, 2, 3)
    """

    kind = "adaptive_avg_pool2d"

    def __init__(self, output_size: int | tuple[int, int], name: str | None = None):
        super().__init__(name)
        label = "AdaptiveAvgPool2D" if name is None else f"AdaptiveAvgPool2D '{name}'"
        self.output_size = int_pair(output_size, f"{label} output_size", 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_size": list(self.output_size)}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        _, height, width = check_image_batch(shape, "AdaptiveAvgPool2D")
        if self.output_size[0] > height or self.output_size[1] > width:
            raise ValueError(
                f"output_size {self.output_size} is larger than the input's (height, width) "
                f"{(height, width)} (input {show_shape(shape)})"
            )
        return []

    def even_window(self, height: int, width: int) -> tuple[int, int] | None:
        """The pooling window when the output size divides the input's, else ``None``.

        Example:
            >>> AdaptiveAvgPool2D(2).even_window(8, 6)
            (4, 3)
        """
        (oh, ow) = self.output_size
        if height % oh or width % ow:
            return None
        return (height // oh, width // ow)

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        _, _, height, width = g.shape(inputs[0])
        window = self.even_window(height, width)
        if window is not None:
            return op(g, "avg_pool2d", inputs[0], kernel_size=list(window), stride=list(window))
        oh, ow = self.output_size
        return apply_separable_maps(
            g, inputs[0], adaptive_mean_map(height, oh), adaptive_mean_map(width, ow)
        )
