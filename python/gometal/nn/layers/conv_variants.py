"""``Conv1D`` and ``Conv2DTranspose``: torch's ``nn.Conv1d`` and ``nn.ConvTranspose2d``.

Conv1D runs the 2-D convolution over a height of one. The transposed convolution is the
engine's ``conv2d_input_grad`` (the gradient of a convolution with respect to its input,
which is what a transposed convolution computes), whose gradients are a ``conv2d`` and a
``conv2d_weight_grad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from . import onnx_rules_activations, spatial_onnx_rules
from ._spatial import check_image_batch, int_pair, show_shape
from .base import EmitContext, Layer, WeightSpec
from .layer_options import WeightLayerOptions, WithWeightOptions
from .registry import register_layer


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _check_groups(label: str, groups: Any, out_channels: int) -> int:
    groups = _positive_int(groups, f"{label} groups")
    if out_channels % groups != 0:
        raise ValueError(f"{label}: groups={groups} must divide out_channels={out_channels}")
    return groups


def _label(cls: str, name: str | None) -> str:
    return cls if name is None else f"{cls} '{name}'"


@register_layer(onnx=onnx_rules_activations.then_activation(spatial_onnx_rules.conv1d))
class Conv1D(WithWeightOptions, Layer):
    """1-D convolution of ``(batch, C, L)`` inputs, as ``nn.Conv1d``.

    ``weight`` is ``(out_channels, C / groups, kernel_size)`` and ``bias``
    ``(out_channels,)``, both from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in =
    C / groups * kernel_size`` (torch's default). The output length is ``(L + left + right
    - dilation * (kernel_size - 1) - 1) // stride + 1``.

    Args:
        out_channels: the number of output channels.
        kernel_size: the kernel's length.
        stride: the step between windows.
        padding: zeros on each side (an int), ``"valid"`` (none) or ``"same"`` (output
            length equals the input's; stride 1 only; an even dilated kernel pads one more
            on the right, as torch).
        dilation: spacing between kernel taps.
        groups: independent channel groups; divides the input channels and
            ``out_channels``.
        use_bias: whether to add a per-channel bias.
        activation: applied to the result, by name (``"relu"``, ``"silu"`` ...; a
            ``"softmax"`` normalizes over the channels), or ``None``.
        kernel_initializer: the weight's initializer by Keras name, or ``"default"``
            (torch's), with torch's fans.
        bias_initializer: the bias's initializer, likewise.
        kernel_regularizer: a penalty on the weight added to the training loss, or ``None``.
        bias_regularizer: likewise on the bias.
        name: an explicit layer name.

    Example:
        >>> Conv1D(8, 3, padding="same")(gm.Input((4, 100))).shape  # doctest: +SKIP
        (None, 8, 100)
    """

    kind = "conv1d"

    def __init__(
        self,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str = 0,
        dilation: int = 1,
        groups: int = 1,
        use_bias: bool = True,
        activation: str | None = None,
        kernel_initializer: str = "default",
        bias_initializer: str = "default",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        name: str | None = None,
    ):
        super().__init__(name)
        label = _label("Conv1D", name)
        self.options = WeightLayerOptions(
            label,
            activation,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            softmax_axis=1,
        )
        self.out_channels = _positive_int(out_channels, f"{label} out_channels")
        self.kernel_size = _positive_int(kernel_size, f"{label} kernel_size")
        self.stride = _positive_int(stride, f"{label} stride")
        self.dilation = _positive_int(dilation, f"{label} dilation")
        self.groups = _check_groups(label, groups, self.out_channels)
        self.use_bias = bool(use_bias)
        self.padding = padding
        self.pads = self._resolve_padding(padding, label)

    def _resolve_padding(self, padding: Any, label: str) -> tuple[int, int]:
        if padding == "valid":
            return (0, 0)
        if padding == "same":
            if self.stride != 1:
                raise ValueError(
                    f"{label}: padding='same' needs stride 1 (as torch), got stride {self.stride}"
                )
            total = self.dilation * (self.kernel_size - 1)
            return (total // 2, total - total // 2)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(
                f"{label} padding must be an int >= 0, 'valid' or 'same', got {padding!r}"
            )
        return (padding, padding)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "use_bias": self.use_bias,
            **self.options.config(),
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) != 3:
            raise ValueError(
                f"Conv1D expects 3-D input (batch, channels, length), got shape {show_shape(shape)}"
            )
        channels, length = shape[1], shape[2]
        if channels % self.groups != 0:
            raise ValueError(
                f"groups={self.groups} must divide the input channels, got {channels} channels "
                f"(input shape {show_shape(shape)})"
            )
        window = self.dilation * (self.kernel_size - 1) + 1
        if length + sum(self.pads) < window:
            raise ValueError(
                f"the dilated kernel ({window}) is larger than the padded length "
                f"{length + sum(self.pads)} (input {show_shape(shape)}, padding {self.pads})"
            )
        per_group = channels // self.groups
        fan_in, fan_out = per_group * self.kernel_size, self.out_channels * self.kernel_size
        init = self.options.initializer("weight", fan_in, fan_out)
        specs = [WeightSpec("weight", (self.out_channels, per_group, self.kernel_size), init)]
        if self.use_bias:
            init = self.options.initializer("bias", fan_in, fan_out)
            specs.append(WeightSpec("bias", (self.out_channels,), init))
        return specs

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        batch, channels, length = g.shape(inputs[0])
        x = op(g, "reshape", inputs[0], shape=[batch, channels, 1, length])
        left, right = self.pads
        symmetric = left == right
        if not symmetric:  # an even "same" kernel: one more zero on the right, as torch
            x = op(g, "pad", x, axis=3, before=left, after=right)
        per_group = channels // self.groups
        weight = op(
            g,
            "reshape",
            ctx.variable("weight"),
            shape=[self.out_channels, per_group, 1, self.kernel_size],
        )
        out = op(
            g,
            "conv2d",
            x,
            weight,
            stride=[1, self.stride],
            padding=[0, left if symmetric else 0],
            dilation=[1, self.dilation],
            groups=self.groups,
        )
        _, out_channels, _, out_length = g.shape(out)
        out = op(g, "reshape", out, shape=[batch, out_channels, out_length])
        if self.use_bias:
            bias = op(g, "reshape", ctx.variable("bias"), shape=[self.out_channels, 1])
            out = op(g, "add", out, bias)
        return self.options.finish(ctx, out, self.use_bias)


@register_layer(onnx=onnx_rules_activations.then_activation(spatial_onnx_rules.conv2d_transpose))
class Conv2DTranspose(WithWeightOptions, Layer):
    """Transposed 2-D convolution of ``(batch, C, H, W)`` inputs, as ``nn.ConvTranspose2d``.

    ``weight`` is ``(C, out_channels / groups, kh, kw)`` (torch's layout) and ``bias``
    ``(out_channels,)``, both from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in =
    out_channels / groups * kh * kw`` (torch's default). The output height is ``(H - 1) *
    sh - 2 * ph + dh * (kh - 1) + oph + 1`` (likewise the width).

    Args:
        out_channels: the number of output channels.
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``.
        padding: ``p`` or ``(ph, pw)``: rows and columns removed from each side of the
            full output (torch's meaning).
        output_padding: ``op`` or ``(oph, opw)``: extra rows and columns on the bottom and
            right, to reach an exact size; each must be smaller than its stride.
        dilation: ``d`` or ``(dh, dw)``.
        groups: independent channel groups; divides the input channels and
            ``out_channels``.
        use_bias: whether to add a per-channel bias.
        activation: applied to the result, by name (``"relu"``, ``"silu"`` ...; a
            ``"softmax"`` normalizes over the channels), or ``None``.
        kernel_initializer: the weight's initializer by Keras name, or ``"default"``
            (torch's), with torch's fans.
        bias_initializer: the bias's initializer, likewise.
        kernel_regularizer: a penalty on the weight added to the training loss, or ``None``.
        bias_regularizer: likewise on the bias.
        name: an explicit layer name.

    Example:
        >>> Conv2DTranspose(8, 3, stride=2, padding=1, output_padding=1)(
        ...     gm.Input((16, 8, 8))).shape  # doctest: +SKIP
        (None, 8, 16, 16)
    """

    kind = "conv2d_transpose"

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        use_bias: bool = True,
        activation: str | None = None,
        kernel_initializer: str = "default",
        bias_initializer: str = "default",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        name: str | None = None,
    ):
        super().__init__(name)
        label = _label("Conv2DTranspose", name)
        self.options = WeightLayerOptions(
            label,
            activation,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            softmax_axis=1,
        )
        self.out_channels = _positive_int(out_channels, f"{label} out_channels")
        self.kernel_size = int_pair(kernel_size, f"{label} kernel_size", 1)
        self.stride = int_pair(stride, f"{label} stride", 1)
        self.padding = int_pair(padding, f"{label} padding", 0)
        self.output_padding = int_pair(output_padding, f"{label} output_padding", 0)
        self.dilation = int_pair(dilation, f"{label} dilation", 1)
        self.groups = _check_groups(label, groups, self.out_channels)
        self.use_bias = bool(use_bias)
        if any(extra >= s for extra, s in zip(self.output_padding, self.stride)):
            raise ValueError(
                f"{label}: output_padding {self.output_padding} must be smaller than stride "
                f"{self.stride} in each dimension"
            )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "output_padding": list(self.output_padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "use_bias": self.use_bias,
            **self.options.config(),
        }

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The output's ``(height, width)`` for an input of ``(height, width)``.

        Example:
            >>> Conv2DTranspose(1, 3, stride=2).output_size(4, 4)
            (9, 9)
        """
        sizes = zip((height, width), self.stride, self.padding, self.dilation, self.kernel_size)
        full = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in sizes]
        return (full[0] + self.output_padding[0], full[1] + self.output_padding[1])

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        channels, height, width = check_image_batch(shape, "Conv2DTranspose")
        if channels % self.groups != 0:
            raise ValueError(
                f"groups={self.groups} must divide the input channels, got {channels} channels "
                f"(input shape {show_shape(shape)})"
            )
        out_size = self.output_size(height, width)
        if min(out_size) < 1:
            raise ValueError(
                f"padding {self.padding} leaves an empty output {out_size} for input "
                f"{show_shape(shape)}"
            )
        kh, kw = self.kernel_size
        per_group = self.out_channels // self.groups
        # torch's fans of a (C, out / groups, kh, kw) weight.
        fan_in, fan_out = per_group * kh * kw, channels * kh * kw
        init = self.options.initializer("weight", fan_in, fan_out)
        specs = [WeightSpec("weight", (channels, per_group, kh, kw), init)]
        if self.use_bias:
            init = self.options.initializer("bias", fan_in, fan_out)
            specs.append(WeightSpec("bias", (self.out_channels,), init))
        return specs

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        batch, _, height, width = g.shape(inputs[0])
        out = op(
            g,
            "conv2d_input_grad",
            inputs[0],
            ctx.variable("weight"),
            stride=list(self.stride),
            padding=list(self.padding),
            dilation=list(self.dilation),
            groups=self.groups,
            shape=[batch, self.out_channels, *self.output_size(height, width)],
        )
        if self.use_bias:
            bias = op(g, "reshape", ctx.variable("bias"), shape=[self.out_channels, 1, 1])
            out = op(g, "add", out, bias)
        return self.options.finish(ctx, out, self.use_bias)
