"""Spatial pooling layers over ``(batch, C, H, W)`` inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ...graph.composites import op
from . import onnx_rules
from ._spatial import check_image_batch, check_window_fits, int_pair
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


class _Pool2D(Layer):
    """A sliding-window reduction over ``(batch, C, H, W)``: one engine primitive.

    Args:
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; ``None`` (default) uses ``kernel_size``, as torch.
        padding: ``p`` or ``(ph, pw)``, at most half the kernel.
        name: an explicit layer name.
    """

    primitive: ClassVar[str] = ""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        name: str | None = None,
    ):
        super().__init__(name)
        cls = type(self).__name__
        label = cls if name is None else f"{cls} '{name}'"
        self.kernel_size = int_pair(kernel_size, f"{label} kernel_size", 1)
        self.stride = self.kernel_size if stride is None else int_pair(stride, f"{label} stride", 1)
        self.padding = int_pair(padding, f"{label} padding", 0)
        if 2 * self.padding[0] > self.kernel_size[0] or 2 * self.padding[1] > self.kernel_size[1]:
            raise ValueError(
                f"{label}: padding {self.padding} must be at most half of kernel_size "
                f"{self.kernel_size}"
            )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        check_image_batch(shape, type(self).__name__)
        check_window_fits(shape, self.kernel_size, self.padding, f"kernel_size {self.kernel_size}")
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(
            ctx.graph,
            self.primitive,
            inputs[0],
            kernel_size=list(self.kernel_size),
            stride=list(self.stride),
            padding=list(self.padding),
        )

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return (
            f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}{name})"
        )


@register_layer(onnx=onnx_rules.pool("MaxPool"))
class MaxPool2D(_Pool2D):
    """The maximum of each window, as ``nn.MaxPool2d`` (padding counts as ``-inf``).

    Takes ``kernel_size``, ``stride=None`` (the kernel size), ``padding=0`` and ``name``.

    Example:
        >>> MaxPool2D(2)(gm.Input((16, 32, 32))).shape  # doctest: +SKIP
        (None, 16, 16, 16)
    """

    kind = "max_pool2d"
    primitive = "max_pool2d"


@register_layer(onnx=onnx_rules.pool("AveragePool", count_include_pad=1))
class AvgPool2D(_Pool2D):
    """The mean of each window, as ``nn.AvgPool2d`` (zero padding counts in the mean,
    torch's ``count_include_pad=True``).

    Takes ``kernel_size``, ``stride=None`` (the kernel size), ``padding=0`` and ``name``.

    Example:
        >>> AvgPool2D(2)(gm.Input((16, 32, 32))).shape  # doctest: +SKIP
        (None, 16, 16, 16)
    """

    kind = "avg_pool2d"
    primitive = "avg_pool2d"


@register_layer(onnx=onnx_rules.global_avg_pool2d)
class GlobalAvgPool2D(Layer):
    """The mean over height and width: ``(batch, C, H, W) -> (batch, C)``.

    Equivalent to ``nn.AdaptiveAvgPool2d(1)`` followed by ``nn.Flatten()``.

    Example:
        >>> GlobalAvgPool2D()(gm.Input((64, 8, 8))).shape  # doctest: +SKIP
        (None, 64)
    """

    kind = "global_avg_pool2d"

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        check_image_batch(input_shapes[0], "GlobalAvgPool2D")
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "mean", inputs[0], axes=[2, 3], keepdims=False)
