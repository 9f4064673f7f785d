"""The int8 layers ``gm.quantize`` puts in place of ``Dense`` and ``Conv2D``.

Each quantizes its float input per tensor (affine: ``scale``, ``zero_point``), multiplies
by int8 weights quantized per output channel (symmetric) with int32 sums, and turns the
sums back into float32 in the kernel's epilogue (times the input and weight scales, plus
the bias, then relu when the float layer had one), so any float layer can follow it.
The int8 weights are held as float32 holding integers, like every weight of a model (the
kernel converts and packs them once per value), and saved to files as int8
(``int8_weights``). They are never trained (no gradient).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..graph.composites import op
from ..nn.initializers import named_initializer
from ..nn.layers.base import EmitContext, Layer, WeightSpec
from ..nn.layers.registry import register_layer
from . import onnx_rules

ACTIVATION_DTYPES = ("uint8", "int8")
ACTIVATION_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


def check_input_quantization(scale: float, zero_point: int, dtype: str, label: str) -> None:
    """Raises ``ValueError`` naming ``label`` unless the per-tensor parameters are valid.

    Args:
        scale: the input's scale, a positive finite number.
        zero_point: an integer of ``dtype``'s range.
        dtype: ``"uint8"`` or ``"int8"``.
        label: how errors name the layer.

    Example:
        >>> check_input_quantization(0.02, 128, "uint8", "QuantizedDense")
    """
    if dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"{label}: input_dtype must be 'uint8' or 'int8', got {dtype!r}")
    if not isinstance(scale, (int, float)) or not 0 < float(scale) < float("inf"):
        raise ValueError(f"{label}: input_scale must be a positive finite number, got {scale!r}")
    low, high = ACTIVATION_RANGES[dtype]
    if (
        isinstance(zero_point, bool)
        or not isinstance(zero_point, int)
        or not low <= zero_point <= high
    ):
        raise ValueError(
            f"{label}: input_zero_point must be an int in [{low}, {high}] for {dtype}, got {zero_point!r}"
        )


class _QuantizedProduct(Layer):
    """What the int8 dense and convolution share: input quantization, weights, config."""

    # Weights holding int8 integers, which model files store as int8.
    int8_weights = ("weight",)

    def __init__(
        self,
        out_channels: int,
        input_scale: float | None,
        input_zero_point: int,
        input_dtype: str = "uint8",
        use_bias: bool = True,
        relu: bool = False,
        name: str | None = None,
    ):
        super().__init__(name)
        label = type(self).__name__ if name is None else f"{type(self).__name__} '{name}'"
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(
                f"{label}: the number of outputs must be a positive int, got {out_channels!r}"
            )
        if input_scale is None:  # dynamic: the kernel quantizes each batch from its range
            if input_zero_point != 0 or input_dtype != "uint8":
                raise ValueError(
                    f"{label}: a dynamic input (input_scale None) is uint8 with its own zero "
                    f"point; got input_zero_point={input_zero_point!r}, input_dtype={input_dtype!r}"
                )
        else:
            check_input_quantization(input_scale, input_zero_point, input_dtype, label)
        self.out_channels = out_channels
        self.input_scale = None if input_scale is None else float(input_scale)
        self.input_zero_point = int(input_zero_point)
        self.input_dtype = input_dtype
        self.use_bias = bool(use_bias)
        self.relu = bool(relu)

    def weight_specs_for(self, weight_shape: tuple[int, ...]) -> list[WeightSpec]:
        zeros = named_initializer("zeros", 1, 1)
        specs = [
            WeightSpec("weight", weight_shape, zeros, trainable=False),
            WeightSpec(
                "weight_scale",
                (self.out_channels,),
                named_initializer("ones", 1, 1),
                trainable=False,
            ),
        ]
        if self.use_bias:
            specs.append(WeightSpec("bias", (self.out_channels,), zeros, trainable=False))
        return specs

    def product_inputs(self, ctx: EmitContext, x: int) -> tuple[list[int], dict[str, Any]]:
        """The quantized input, int8 weight, per-channel scale and bias nodes, and the
        attributes the product op takes."""
        g = ctx.graph
        if self.input_scale is None:
            nodes = [x, ctx.variable("weight"), ctx.variable("weight_scale")]
            nodes += [ctx.variable("bias")] if self.use_bias else []
            return nodes, {"relu": self.relu}
        attrs = {
            "scale": self.input_scale,
            "zero_point": self.input_zero_point,
            "dtype": self.input_dtype,
        }
        quantized = op(g, "quantize", x, **attrs)
        # float32 holding integers: the kernel converts and packs it once per value.
        weight = ctx.variable("weight")
        # Each int32 sum counts input units times weight units: one scale per channel.
        scale = op(g, "mul", ctx.variable("weight_scale"), g.constant(self.input_scale))
        nodes = [quantized, weight, scale]
        if self.use_bias:
            nodes.append(ctx.variable("bias"))
        return nodes, {"zero_point": self.input_zero_point, "relu": self.relu}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_scale": self.input_scale,
            "input_zero_point": self.input_zero_point,
            "input_dtype": self.input_dtype,
            "use_bias": self.use_bias,
            "relu": self.relu,
        }


@register_layer(onnx=onnx_rules.quantized_dense)
class QuantizedDense(_QuantizedProduct):
    """``Dense`` with int8 weights and a quantized input: ``relu?(dequant(q(x) @ w_q.T) + bias)``.

    Args:
        units: the number of output features.
        input_scale: the input's quantization scale, or ``None`` for dynamic quantization:
            each batch is quantized to uint8 from its own range when the step runs.
        input_zero_point: the input's zero point (0 when dynamic).
        input_dtype: ``"uint8"`` or ``"int8"``, the input's quantized type.
        use_bias: whether a float bias is added.
        relu: whether the epilogue applies a relu.
        name: an explicit layer name.

    Example:
        >>> QuantizedDense(10, input_scale=0.02, input_zero_point=0)  # doctest: +SKIP
    """

    kind = "quantized_dense"

    def __init__(
        self,
        units: int,
        input_scale: float | None = None,
        input_zero_point: int = 0,
        input_dtype: str = "uint8",
        use_bias: bool = True,
        relu: bool = False,
        name: str | None = None,
    ):
        super().__init__(units, input_scale, input_zero_point, input_dtype, use_bias, relu, name)

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) < 2 or shape[-1] < 1:
            raise ValueError(
                f"QuantizedDense expects input (batch, ..., features), got shape {shape}"
            )
        return self.weight_specs_for((self.out_channels, shape[-1]))

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        nodes, attrs = self.product_inputs(ctx, inputs[0])
        return op(ctx.graph, "quantized_matmul", *nodes, **attrs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.out_channels}


@register_layer(onnx=onnx_rules.quantized_conv2d)
class QuantizedConv2D(_QuantizedProduct):
    """``Conv2D`` (groups 1, NCHW) with int8 weights and a quantized input; padding reads
    the input's zero point, a real zero.

    Args:
        out_channels: the number of output channels.
        kernel_size: ``(kh, kw)``.
        input_scale: the input's quantization scale.
        input_zero_point: the input's zero point.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)``.
        dilation: ``(dh, dw)``.
        input_dtype: ``"uint8"`` or ``"int8"``.
        use_bias: whether a float bias is added.
        relu: whether the epilogue applies a relu.
        name: an explicit layer name.

    Example:
        >>> QuantizedConv2D(16, (3, 3), 0.02, 0, padding=(1, 1))  # doctest: +SKIP
    """

    kind = "quantized_conv2d"

    def __init__(
        self,
        out_channels: int,
        kernel_size: Sequence[int],
        input_scale: float,
        input_zero_point: int,
        stride: Sequence[int] = (1, 1),
        padding: Sequence[int] = (0, 0),
        dilation: Sequence[int] = (1, 1),
        input_dtype: str = "uint8",
        use_bias: bool = True,
        relu: bool = False,
        name: str | None = None,
    ):
        if input_scale is None:
            raise ValueError("QuantizedConv2D needs an input_scale (calibrated): no dynamic mode")
        super().__init__(
            out_channels, input_scale, input_zero_point, input_dtype, use_bias, relu, name
        )
        self.kernel_size = tuple(int(v) for v in kernel_size)
        self.stride = tuple(int(v) for v in stride)
        self.padding = tuple(int(v) for v in padding)
        self.dilation = tuple(int(v) for v in dilation)

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) != 4:
            raise ValueError(f"QuantizedConv2D expects input (batch, C, H, W), got shape {shape}")
        return self.weight_specs_for((self.out_channels, shape[1], *self.kernel_size))

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        nodes, attrs = self.product_inputs(ctx, inputs[0])
        window = {
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
        }
        return op(ctx.graph, "quantized_conv2d", *nodes, **attrs, **window)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
        }
