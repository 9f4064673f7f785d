"""Convolution layers (NCHW at the API, PyTorch's weight layout and initialization)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from . import onnx_rules, onnx_rules_activations
from ._spatial import check_image_batch, check_window_fits, int_pair, show_shape
from .base import EmitContext, Layer, WeightSpec
from .layer_options import WeightLayerOptions, WithWeightOptions
from .registry import register_layer


@register_layer(onnx=onnx_rules_activations.then_activation(onnx_rules.conv2d))
class Conv2D(WithWeightOptions, Layer):
    """2-D convolution (cross-correlation) of ``(batch, C, H, W)`` inputs, as ``nn.Conv2d``.

    ``weight`` has shape ``(out_channels, C / groups, kh, kw)`` and ``bias``
    ``(out_channels,)``; both are drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
    ``fan_in = C / groups * kh * kw`` (PyTorch's default, kaiming-uniform with
    ``a = sqrt(5)``). The output is ``(batch, out_channels, OH, OW)`` with
    ``OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1`` (likewise ``OW``).

    Args:
        out_channels: the number of output channels (filters).
        kernel_size: ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``.
        padding: zero padding on each side: ``p``, ``(ph, pw)``, ``"valid"`` (no padding)
            or ``"same"`` (output size equals input size; needs stride 1 and an odd
            dilated kernel ``dilation * (kernel_size - 1) + 1`` so the padding is symmetric).
        dilation: ``d`` or ``(dh, dw)``: spacing between kernel taps.
        groups: split the channels into this many independent groups; it must divide
            both the input channels and ``out_channels``.
        use_bias: whether to add a per-channel bias.
        activation: applied to the result, by name (``"relu"``, ``"silu"`` ...; a
            ``"softmax"`` normalizes over the channels), or ``None``.
        kernel_initializer: the weight's initializer by Keras name (``"he_normal"`` ...;
            fan in ``C / groups * kh * kw``, fan out ``out_channels * kh * kw``), or
            ``"default"`` (torch's).
        bias_initializer: the bias's initializer, likewise.
        kernel_regularizer: a penalty on the weight added to the training loss
            (``gm.regularizers.l2(1e-4)``), or ``None``.
        bias_regularizer: likewise on the bias.
        name: an explicit layer name.

    Example:
        >>> h = Conv2D(16, 3, padding=1)(gm.Input((3, 32, 32)))  # doctest: +SKIP
        >>> h.shape
        (None, 16, 32, 32)
    """

    kind = "conv2d"

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | str | tuple[int, int] = 0,
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
        label = "Conv2D" if name is None else f"Conv2D '{name}'"
        self.options = WeightLayerOptions(
            label,
            activation,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            softmax_axis=1,
        )
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"{label} out_channels must be a positive int, got {out_channels!r}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{label} groups must be a positive int, got {groups!r}")
        if out_channels % groups != 0:
            raise ValueError(f"{label}: groups={groups} must divide out_channels={out_channels}")
        self.out_channels = out_channels
        self.kernel_size = int_pair(kernel_size, f"{label} kernel_size", 1)
        self.stride = int_pair(stride, f"{label} stride", 1)
        self.dilation = int_pair(dilation, f"{label} dilation", 1)
        self.groups = groups
        self.use_bias = bool(use_bias)
        self.padding_mode = padding if isinstance(padding, str) else None
        self.padding = self._resolve_padding(padding, label)

    @property
    def window(self) -> tuple[int, int]:
        """The kernel's extent after dilation, ``dilation * (kernel_size - 1) + 1``."""
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        return (dh * (kh - 1) + 1, dw * (kw - 1) + 1)

    def _resolve_padding(self, padding: int | str | tuple[int, int], label: str) -> tuple[int, int]:
        if not isinstance(padding, str):
            return int_pair(padding, f"{label} padding", 0)
        if padding == "valid":
            return (0, 0)
        if padding != "same":
            raise ValueError(
                f"{label} padding must be an int, a pair (ph, pw), 'valid' or 'same', "
                f"got {padding!r}"
            )
        if self.stride != (1, 1):
            raise ValueError(
                f"{label}: padding='same' is not supported for strided convolutions, got "
                f"stride {self.stride}; give the padding explicitly, e.g. padding="
                f"{tuple((w - 1) // 2 for w in self.window)}"
            )
        if self.window[0] % 2 == 0 or self.window[1] % 2 == 0:
            raise ValueError(
                f"{label}: padding='same' needs an odd dilated kernel (symmetric padding), got "
                f"{self.window} from kernel_size {self.kernel_size} and dilation "
                f"{self.dilation}; use an odd kernel_size or explicit padding"
            )
        return ((self.window[0] - 1) // 2, (self.window[1] - 1) // 2)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            # "same" and "valid" stay names, so the config reads as it was written.
            "padding": self.padding_mode or list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "use_bias": self.use_bias,
            **self.options.config(),
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        channels, _, _ = check_image_batch(shape, "Conv2D")
        if channels % self.groups != 0:
            raise ValueError(
                f"groups={self.groups} must divide the input channels, got {channels} channels "
                f"(input shape {show_shape(shape)})"
            )
        check_window_fits(
            shape,
            self.window,
            self.padding,
            f"the dilated kernel {self.window} (kernel_size {self.kernel_size}, dilation "
            f"{self.dilation})",
        )
        kh, kw = self.kernel_size
        per_group = channels // self.groups
        fan_in, fan_out = per_group * kh * kw, self.out_channels * kh * kw
        init = self.options.initializer("weight", fan_in, fan_out)
        specs = [WeightSpec("weight", (self.out_channels, per_group, kh, kw), init)]
        if self.use_bias:
            init = self.options.initializer("bias", fan_in, fan_out)
            specs.append(WeightSpec("bias", (self.out_channels,), init))
        return specs

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        out = op(
            g,
            "conv2d",
            inputs[0],
            ctx.variable("weight"),
            stride=list(self.stride),
            padding=list(self.padding),
            dilation=list(self.dilation),
            groups=self.groups,
        )
        if self.use_bias:
            bias = op(g, "reshape", ctx.variable("bias"), shape=[self.out_channels, 1, 1])
            out = op(g, "add", out, bias)
        return self.options.finish(ctx, out, self.use_bias)

    def __repr__(self) -> str:
        padding = repr(self.padding_mode) if self.padding_mode else str(self.padding)
        extras = [f"stride={self.stride}", f"padding={padding}"]
        if self.dilation != (1, 1):
            extras.append(f"dilation={self.dilation}")
        if self.groups != 1:
            extras.append(f"groups={self.groups}")
        if not self.use_bias:
            extras.append("use_bias=False")
        extras += [f"{key}={value!r}" for key, value in self.options.config().items()]
        if self.name:
            extras.append(f"name={self.name!r}")
        return f"Conv2D({self.out_channels}, kernel_size={self.kernel_size}, {', '.join(extras)})"
