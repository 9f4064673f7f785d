"""Normalization over each sample's own values: ``LayerNorm``, ``GroupNorm`` and
``InstanceNorm2D``, as PyTorch defines them (biased variance, ``eps`` inside the square
root). No running statistics: training and inference compute the same thing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

from ...graph.composites import const, op
from ..initializers import Ones, Zeros
from ..tensor import BATCH
from . import onnx_rules_normalization
from ._spatial import show_shape
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


def _check_eps(eps: Any, label: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, Real) or not 0.0 < float(eps) < math.inf:
        raise ValueError(f"{label} eps must be a finite number > 0, got {eps!r}")
    return float(eps)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def normalize(g: Any, x: int, axes: list[int], eps: float) -> int:
    """``(x - mean) / sqrt(var + eps)`` over ``axes``, with the biased variance.

    Args:
        g: the graph.
        x: the node to normalize.
        axes: the axes the statistics run over.
        eps: added to the variance.

    Returns:
        The normalized node, shaped as ``x``.

    Example:
        >>> y = normalize(g, x, [-1], 1e-5)  # doctest: +SKIP
    """
    mean = op(g, "mean", x, axes=axes, keepdims=True)
    centered = op(g, "sub", x, mean)
    variance = op(g, "mean", op(g, "square", centered), axes=axes, keepdims=True)
    return op(g, "mul", centered, op(g, "rsqrt", op(g, "add", variance, const(g, eps))))


def _per_channel(g: Any, vector: int, rank: int) -> int:
    """A ``(C,)`` vector shaped ``(C, 1, ..., 1)`` to broadcast over axis 1 of rank ``rank``."""
    if rank == 2:
        return vector
    channels = g.shape(vector)[0]
    return op(g, "reshape", vector, shape=[channels] + [1] * (rank - 2))


@register_layer(onnx=onnx_rules_normalization.layer_norm)
class LayerNorm(Layer):
    """Layer normalization over the last axes, as ``torch.nn.LayerNorm``.

    The statistics run over the trailing axes given by ``normalized_shape`` (which must
    equal the input's last axes); ``weight`` (ones) and ``bias`` (zeros) of that shape scale
    and shift the result when ``elementwise_affine``.

    Args:
        normalized_shape: an int (the last axis) or the trailing shape.
        eps: added to the variance (> 0).
        elementwise_affine: whether to learn ``weight`` and ``bias``.
        bias: whether the affine part has a ``bias`` (torch's ``bias=``).
        name: an explicit layer name.

    Example:
        >>> h = LayerNorm(64)(gm.Input((10, 64)))  # doctest: +SKIP
    """

    kind = "layer_norm"

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        name: str | None = None,
    ):
        super().__init__(name)
        label = "LayerNorm" if name is None else f"LayerNorm '{name}'"
        dims = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        try:
            shape = tuple(dims)
        except TypeError:
            shape = ()
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(
                f"{label} normalized_shape must be a positive int or a tuple of them, got "
                f"{normalized_shape!r}"
            )
        self.normalized_shape = shape
        self.eps = _check_eps(eps, label)
        self.elementwise_affine = bool(elementwise_affine)
        self.bias = bool(bias)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "normalized_shape": list(self.normalized_shape),
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "bias": self.bias,
        }

    @property
    def axes(self) -> list[int]:
        """The normalized axes, counted from the end."""
        return list(range(-len(self.normalized_shape), 0))

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        count = len(self.normalized_shape)
        if len(shape) < count or tuple(shape[-count:]) != self.normalized_shape:
            raise ValueError(
                f"normalized_shape {self.normalized_shape} must equal the last axes of the "
                f"input (the batch axis excluded), got input shape {show_shape(shape)}"
            )
        if not self.elementwise_affine:
            return []
        specs = [WeightSpec("weight", self.normalized_shape, Ones())]
        if self.bias:
            specs.append(WeightSpec("bias", self.normalized_shape, Zeros()))
        return specs

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        out = normalize(g, inputs[0], self.axes, self.eps)
        if self.elementwise_affine:
            out = op(g, "mul", out, ctx.variable("weight"))
            if self.bias:
                out = op(g, "add", out, ctx.variable("bias"))
        return out

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"LayerNorm({self.normalized_shape}, eps={self.eps:g}{name})"


@register_layer(onnx=onnx_rules_normalization.group_norm)
class GroupNorm(Layer):
    """Group normalization of ``(batch, C, ...)`` inputs, as ``torch.nn.GroupNorm``.

    The ``C`` channels split into ``num_groups`` groups; each sample's group is normalized
    over its channels and every other axis, then ``weight`` (ones) and ``bias`` (zeros),
    one per channel, scale and shift the result when ``affine``.

    Args:
        num_groups: the number of groups; it must divide ``num_channels``.
        num_channels: the input's channels (axis 1).
        eps: added to the variance (> 0).
        affine: whether to learn a per-channel ``weight`` and ``bias``.
        name: an explicit layer name.

    Example:
        >>> h = GroupNorm(4, 16)(gm.layers.Conv2D(16, 3)(gm.Input((3, 8, 8))))  # doctest: +SKIP
    """

    kind = "group_norm"

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        name: str | None = None,
    ):
        super().__init__(name)
        label = "GroupNorm" if name is None else f"GroupNorm '{name}'"
        self.num_groups = _positive_int(num_groups, f"{label} num_groups")
        self.num_channels = _positive_int(num_channels, f"{label} num_channels")
        if num_channels % num_groups:
            raise ValueError(
                f"{label}: num_groups={num_groups} must divide num_channels={num_channels}"
            )
        self.eps = _check_eps(eps, label)
        self.affine = bool(affine)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_groups": self.num_groups,
            "num_channels": self.num_channels,
            "eps": self.eps,
            "affine": self.affine,
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) < 2 or shape[1] != self.num_channels:
            raise ValueError(
                f"expects input (batch, {self.num_channels}, ...) with num_channels="
                f"{self.num_channels} on axis 1, got shape {show_shape(shape)}"
            )
        if any(d == BATCH or d < 0 for d in shape[2:]):
            raise ValueError(f"needs fixed sizes after the channels, got {show_shape(shape)}")
        if not self.affine:
            return []
        return [
            WeightSpec("weight", (self.num_channels,), Ones()),
            WeightSpec("bias", (self.num_channels,), Zeros()),
        ]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        shape = list(g.shape(x))
        per_group = 1
        for d in shape[1:]:
            per_group *= d
        per_group //= self.num_groups
        grouped = op(g, "reshape", x, shape=[shape[0], self.num_groups, per_group])
        out = op(g, "reshape", normalize(g, grouped, [2], self.eps), shape=shape)
        if self.affine:
            out = op(g, "mul", out, _per_channel(g, ctx.variable("weight"), len(shape)))
            out = op(g, "add", out, _per_channel(g, ctx.variable("bias"), len(shape)))
        return out

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps:g}{name})"


@register_layer(onnx=onnx_rules_normalization.instance_norm)
class InstanceNorm2D(Layer):
    """Instance normalization of ``(batch, C, H, W)`` inputs, as ``torch.nn.InstanceNorm2d``
    with its defaults: each sample's channel is normalized over ``H`` and ``W``; with
    ``affine`` a per-channel ``weight`` (ones) and ``bias`` (zeros) follow. Running
    statistics (torch's ``track_running_stats=True``) are not supported.

    Args:
        num_features: the channels ``C``.
        eps: added to the variance (> 0).
        affine: whether to learn a per-channel ``weight`` and ``bias`` (torch: ``False``).
        name: an explicit layer name.

    Example:
        >>> h = InstanceNorm2D(3)(gm.Input((3, 16, 16)))  # doctest: +SKIP
    """

    kind = "instance_norm2d"

    def __init__(
        self, num_features: int, eps: float = 1e-5, affine: bool = False, name: str | None = None
    ):
        super().__init__(name)
        label = "InstanceNorm2D" if name is None else f"InstanceNorm2D '{name}'"
        self.num_features = _positive_int(num_features, f"{label} num_features")
        self.eps = _check_eps(eps, label)
        self.affine = bool(affine)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_features": self.num_features,
            "eps": self.eps,
            "affine": self.affine,
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) != 4 or shape[1] != self.num_features:
            raise ValueError(
                f"expects input (batch, {self.num_features}, height, width) with num_features="
                f"{self.num_features} channels, got shape {show_shape(shape)}"
            )
        if not self.affine:
            return []
        return [
            WeightSpec("weight", (self.num_features,), Ones()),
            WeightSpec("bias", (self.num_features,), Zeros()),
        ]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        out = normalize(g, inputs[0], [2, 3], self.eps)
        if self.affine:
            out = op(g, "mul", out, _per_channel(g, ctx.variable("weight"), 4))
            out = op(g, "add", out, _per_channel(g, ctx.variable("bias"), 4))
        return out

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        return f"InstanceNorm2D({self.num_features}, eps={self.eps:g}, affine={self.affine}{name})"
