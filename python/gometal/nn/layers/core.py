"""Fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from . import onnx_rules, onnx_rules_activations
from ._spatial import show_shape
from .base import EmitContext, Layer, WeightSpec
from .layer_options import WeightLayerOptions, WithWeightOptions
from .registry import register_layer


@register_layer(onnx=onnx_rules_activations.then_activation(onnx_rules.dense))
class Dense(WithWeightOptions, Layer):
    """``y = x @ weight.T + bias`` over the last axis, with PyTorch's ``nn.Linear`` layout
    and initialization.

    The input may have any rank ``>= 2``: ``(batch, ..., in_features)`` gives
    ``(batch, ..., units)``, as ``nn.Linear``. ``weight`` has shape ``(units,
    in_features)``; by default weight and bias are drawn from ``U(-1/sqrt(in_features),
    1/sqrt(in_features))``.

    Args:
        units: the number of output features.
        use_bias: whether to add a bias vector.
        activation: applied to the result: a name such as ``"relu"``, ``"gelu"``,
            ``"silu"`` or ``"softmax"`` (see ``layer_options.ACTIVATIONS``), or ``None``.
        kernel_initializer: the weight's initializer by Keras name (``"glorot_uniform"``,
            ``"he_normal"``, ``"zeros"`` ...), or ``"default"`` (torch's).
        bias_initializer: the bias's initializer, likewise.
        kernel_regularizer: a penalty on the weight added to the training loss
            (``gm.regularizers.l2(1e-4)``), or ``None``.
        bias_regularizer: likewise on the bias.
        name: an explicit layer name.

    Example:
        >>> h = Dense(128, activation="relu")(gm.Input((64,)))  # doctest: +SKIP
        >>> h.shape
        (None, 128)
    """

    kind = "dense"

    def __init__(
        self,
        units: int,
        use_bias: bool = True,
        activation: str | None = None,
        kernel_initializer: str = "default",
        bias_initializer: str = "default",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        name: str | None = None,
    ):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"Dense units must be a positive int, got {units!r}")
        if isinstance(use_bias, str):
            # Keras's second argument is the activation; here it is use_bias.
            raise TypeError(
                f"Dense use_bias must be a bool, got {use_bias!r}; give the activation by "
                f"name: Dense({units}, activation={use_bias!r})"
            )
        self.units = units
        self.use_bias = bool(use_bias)
        self.options = WeightLayerOptions(
            "Dense" if name is None else f"Dense '{name}'",
            activation,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
        )

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) < 2:
            raise ValueError(
                f"Dense expects input (batch, ..., features) of rank >= 2, got shape "
                f"{show_shape(shape)}"
            )
        in_features = shape[-1]
        if in_features < 1:
            raise ValueError(
                f"Dense needs a fixed number of features on the last axis, got shape "
                f"{show_shape(shape)}"
            )
        specs = [
            WeightSpec(
                "weight",
                (self.units, in_features),
                self.options.initializer("weight", in_features, self.units),
            )
        ]
        if self.use_bias:
            init = self.options.initializer("bias", in_features, self.units)
            specs.append(WeightSpec("bias", (self.units,), init))
        return specs

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x, weight = ctx.graph, inputs[0], ctx.variable("weight")
        # The matmul broadcasts the weight over the leading axes (torch's nn.Linear).
        out = op(g, "matmul", x, weight, transpose_b=True)
        if self.use_bias:
            out = op(g, "add", out, ctx.variable("bias"))
        return self.options.finish(ctx, out, self.use_bias)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            **self.options.config(),
        }

    def __repr__(self) -> str:
        extras = "".join(f", {k}={v!r}" for k, v in self.options.config().items())
        name = f", name={self.name!r}" if self.name else ""
        return f"Dense({self.units}, use_bias={self.use_bias}{extras}{name})"
