"""Keras's per-layer options of the weight layers (``Dense``, ``Conv2D``): a built-in
``activation``, initializers by name, and weight regularizers.

A layer holds one ``WeightLayerOptions``; it draws its weights through ``initializer``,
and ``finish`` adds the regularizers' penalties to the training loss and applies the
activation to the layer's result. Options left at their defaults stay out of the
layer's config, so configs written before the options existed read the same.
"""

from __future__ import annotations

from typing import Any

from .. import regularizers
from ..initializers import Initializer, check_initializer_name, named_initializer
from .activations import ELU, GELU, Hardswish, LeakyReLU, Mish, ReLU, Sigmoid, Softmax, Swish, Tanh
from .base import EmitContext, Layer

# activation= names, as Keras and torch users write them.
ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
    "silu": Swish,
    "swish": Swish,
    "softmax": Softmax,
    "elu": ELU,
    "leaky_relu": LeakyReLU,
    "hardswish": Hardswish,
    "mish": Mish,
}


def activation_layer(name: str | None, what: str, softmax_axis: int = -1) -> Layer | None:
    """The activation layer ``activation=name`` applies (``None`` or ``"linear"``: none).

    Args:
        name: a key of ``ACTIVATIONS``, ``"linear"`` or ``None``.
        what: how errors name the argument, e.g. ``"Dense activation"``.
        softmax_axis: the axis a ``"softmax"`` normalizes (the channels of a convolution).

    Returns:
        A new layer, or ``None``.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> activation_layer("relu", "Dense activation")
        ReLU()
    """
    if name is None or name == "linear":
        return None
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"{what} must be None, 'linear' or one of {sorted(ACTIVATIONS)}, got {name!r}"
        )
    if name == "softmax":
        return Softmax(softmax_axis)
    return ACTIVATIONS[name]()


class WeightLayerOptions:
    """The activation, initializers and regularizers of one weight layer.

    Args:
        label: the layer as errors name it (``"Dense"``, ``"Conv2D 'conv'"``).
        activation: see ``activation_layer``.
        kernel_initializer: a name from ``gm.initializers.INITIALIZER_NAMES`` for ``weight``.
        bias_initializer: likewise for ``bias``.
        kernel_regularizer: a ``gm.regularizers`` penalty on ``weight``, or ``None``.
        bias_regularizer: likewise on ``bias``.
        softmax_axis: the axis of a ``"softmax"`` activation.

    Example:
        >>> WeightLayerOptions("Dense", "relu", "he_normal").config()
        {'activation': 'relu', 'kernel_initializer': 'he_normal'}
    """

    def __init__(
        self,
        label: str,
        activation: str | None = None,
        kernel_initializer: str = "default",
        bias_initializer: str = "default",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        softmax_axis: int = -1,
    ):
        self.activation = None if activation == "linear" else activation
        self.activation_layer = activation_layer(activation, f"{label} activation", softmax_axis)
        self.kernel_initializer = check_initializer_name(
            kernel_initializer, f"{label} kernel_initializer"
        )
        self.bias_initializer = check_initializer_name(
            bias_initializer, f"{label} bias_initializer"
        )
        self.kernel_regularizer = regularizers.get(
            kernel_regularizer, f"{label} kernel_regularizer"
        )
        self.bias_regularizer = regularizers.get(bias_regularizer, f"{label} bias_regularizer")

    def initializer(self, weight: str, fan_in: int, fan_out: int) -> Initializer:
        """The initializer of ``weight`` (``"weight"`` or ``"bias"``) for these fans."""
        name = self.kernel_initializer if weight == "weight" else self.bias_initializer
        return named_initializer(name, fan_in, fan_out)

    def finish(self, ctx: EmitContext, out: int, has_bias: bool) -> int:
        """Adds the penalties (training only) and applies the activation to ``out``.

        Args:
            ctx: the emit context, scoped to the layer.
            out: the layer's result before its activation.
            has_bias: whether the layer has a ``bias`` weight.

        Returns:
            The layer's output node.
        """
        if ctx.training:
            for weight, penalty in (
                ("weight", self.kernel_regularizer),
                ("bias", self.bias_regularizer if has_bias else None),
            ):
                if penalty is not None:
                    ctx.add_loss(penalty(ctx.graph, ctx.variable(weight)))
        if self.activation_layer is not None:
            out = self.activation_layer.emit(ctx, [out])
        return out

    def config(self) -> dict[str, Any]:
        """The options that differ from the defaults, as JSON values."""
        config: dict[str, Any] = {}
        if self.activation is not None:
            config["activation"] = self.activation
        if self.kernel_initializer != "default":
            config["kernel_initializer"] = self.kernel_initializer
        if self.bias_initializer != "default":
            config["bias_initializer"] = self.bias_initializer
        if self.kernel_regularizer is not None:
            config["kernel_regularizer"] = self.kernel_regularizer.get_config()
        if self.bias_regularizer is not None:
            config["bias_regularizer"] = self.bias_regularizer.get_config()
        return config


class WithWeightOptions:
    """Mixin of the layers that keep their ``WeightLayerOptions`` as ``options`` (Dense
    and the convolutions): the ``activation_layer`` their ONNX rules read."""

    options: WeightLayerOptions

    @property
    def activation_layer(self) -> Layer | None:
        """The layer ``activation=`` applies to the result, or ``None``."""
        return self.options.activation_layer
