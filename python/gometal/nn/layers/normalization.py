"""Normalization layers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

from ... import _core
from ...graph.composites import const, op
from ..initializers import Ones, Zeros
from . import onnx_rules
from ._spatial import show_shape
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


@register_layer(onnx=onnx_rules.batch_norm)
class BatchNorm(Layer):
    """Batch normalization over every axis but the channel axis 1, as PyTorch's
    ``nn.BatchNorm1d`` for ``(batch, features)`` inputs (after a dense layer) and
    ``nn.BatchNorm2d`` for ``(batch, C, H, W)`` inputs (after a convolution).

    Training normalizes with the batch's mean and biased variance and updates the running
    statistics as torch does: ``running_mean = (1 - momentum) * running_mean + momentum *
    mean`` and ``running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)``
    (the unbiased variance over the ``n`` values of each channel). Evaluation and predict
    normalize with the running statistics. With ``affine`` the result is scaled by
    ``weight`` (ones) and shifted by ``bias`` (zeros), both trainable; ``running_mean``
    (zeros) and ``running_var`` (ones) are non-trainable weights, saved and loaded with
    the others. The gradient, through the batch statistics, comes from autodiff.

    With ``sync`` (torch's ``SyncBatchNorm``) the training statistics are those of the
    whole batch of a data-parallel job: each rank's mean and variance are combined over the
    ranks (weighted by each rank's count, so uneven last batches are exact), and the
    gradient flows back across the ranks alike, so N ranks at batch b normalize as one
    process at batch N * b. By default each rank uses its own batch, as torch's DDP does.

    A batch norm layer can be called once per model (its running statistics are written
    once per training step). Unlike torch, which rejects a training batch with a single
    value per channel, the running variance then decays towards zero instead.

    Args:
        eps: added to the variance before the square root (> 0).
        momentum: the weight of the batch statistics in the running ones, in ``[0, 1]``.
        affine: whether to learn a per-channel scale and shift.
        sync: combine the batch statistics over the ranks of a data-parallel job.
        name: an explicit layer name.

    Example:
        >>> h = BatchNorm()(gm.layers.Conv2D(16, 3)(gm.Input((3, 32, 32))))  # doctest: +SKIP
    """

    kind = "batch_norm"
    updates_state = True

    def __init__(
        self,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        name: str | None = None,
        sync: bool = False,
    ):
        super().__init__(name)
        label = "BatchNorm" if name is None else f"BatchNorm '{name}'"
        if isinstance(eps, bool) or not isinstance(eps, Real) or not 0.0 < float(eps) < math.inf:
            raise ValueError(f"{label} eps must be a finite number > 0, got {eps!r}")
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, Real)
            or not 0.0 <= float(momentum) <= 1.0
        ):
            raise ValueError(f"{label} momentum must be in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.affine = bool(affine)
        if not isinstance(sync, bool):
            raise TypeError(f"{label} sync must be True or False, got {sync!r}")
        self.sync = sync

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            **({"sync": True} if self.sync else {}),
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) < 2:
            raise ValueError(
                f"BatchNorm expects input of shape (batch, features) or (batch, channels, "
                f"height, width), got shape {show_shape(shape)}"
            )
        channels = shape[1]
        specs = []
        if self.affine:
            specs += [
                WeightSpec("weight", (channels,), Ones()),
                WeightSpec("bias", (channels,), Zeros()),
            ]
        specs += [
            WeightSpec("running_mean", (channels,), Zeros(), trainable=False),
            WeightSpec("running_var", (channels,), Ones(), trainable=False),
        ]
        return specs

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        shape = tuple(g.shape(x))
        channels = shape[1]
        # Per-channel vectors broadcast against x as (C, 1, ..., 1).
        channel_shape = [channels] + [1] * (len(shape) - 2)

        def per_channel(vector: int) -> int:
            if len(shape) == 2:
                return vector
            return op(g, "reshape", vector, shape=channel_shape)

        if not ctx.training:
            # y = x * scale + shift with scale = weight / sqrt(running_var + eps) and
            # shift = bias - running_mean * scale: one pass over x.
            scale = op(g, "rsqrt", op(g, "add", ctx.variable("running_var"), const(g, self.eps)))
            if self.affine:
                scale = op(g, "mul", scale, ctx.variable("weight"))
            shift = op(g, "neg", op(g, "mul", ctx.variable("running_mean"), scale))
            if self.affine:
                shift = op(g, "add", shift, ctx.variable("bias"))
            return op(g, "add", op(g, "mul", x, per_channel(scale)), per_channel(shift))

        # The batch statistics in one pass over x, then y = x * scale + shift with the
        # per-channel scale = weight / sqrt(var + eps) and shift = bias - mean * scale: one
        # more pass, which fuses with the activation that usually follows.
        moments = op(g, "channel_moments", x)
        mean = op(g, "reshape", op(g, "slice", moments, axis=0, start=0, end=1), shape=[channels])
        variance = op(
            g, "reshape", op(g, "slice", moments, axis=0, start=1, end=2), shape=[channels]
        )
        count = self._value_count(g, x)
        if self.sync:
            mean, variance, count = self._over_ranks(g, mean, variance, count)
        scale = op(g, "rsqrt", op(g, "add", variance, const(g, self.eps)))
        if self.affine:
            scale = op(g, "mul", scale, ctx.variable("weight"))
        shift = op(g, "neg", op(g, "mul", mean, scale))
        if self.affine:
            shift = op(g, "add", shift, ctx.variable("bias"))
        out = op(g, "add", op(g, "mul", x, per_channel(scale)), per_channel(shift))
        self._emit_running_updates(ctx, count, mean, variance)
        return out

    @staticmethod
    def _over_ranks(g: _core.Graph, mean: int, variance: int, count: int) -> tuple[int, int, int]:
        """The job's mean, variance and count from each rank's: the count-weighted mean of
        the means, and of the variances plus each mean's squared distance from the job's
        (Chan's combination: no cancellation, unlike E[x^2] - mean^2)."""
        # No gradient reaches the counts: stop it before the all-reduce, whose VJP is one more.
        mean_count = op(g, "all_reduce_mean", op(g, "stop_gradient", count))
        share = op(g, "div", count, mean_count)  # n_r / mean(n): 1 when the ranks' batches match
        job_mean = op(g, "all_reduce_mean", op(g, "mul", mean, share))
        spread = op(g, "add", variance, op(g, "square", op(g, "sub", mean, job_mean)))
        job_variance = op(g, "all_reduce_mean", op(g, "mul", spread, share))
        ranks = _core.communicator_info()[1]
        return job_mean, job_variance, op(g, "mul", mean_count, const(g, float(ranks)))

    @staticmethod
    def _value_count(g: _core.Graph, x: int) -> int:
        """The number of values per channel of x, a scalar node."""
        shape = tuple(g.shape(x))
        values_per_sample = 1
        for d in shape[2:]:
            values_per_sample *= d
        # The batch size is only known when a plan is compiled: count the rows of a
        # (batch, 1, ..., 1) corner of x (select ignores the values, NaN included).
        corner = x
        for axis in range(1, len(shape)):
            corner = op(g, "slice", corner, axis=axis, start=0, end=1)
        rows = op(g, "sum", op(g, "select", corner, const(g, 1.0), const(g, 1.0)), axes=[])
        return op(g, "mul", rows, const(g, float(values_per_sample)))

    def _emit_running_updates(self, ctx: EmitContext, count: int, mean: int, variance: int) -> None:
        g = ctx.graph
        # n / (n - 1), guarded so a single value per channel gives 1 rather than inf.
        correction = op(
            g, "div", count, op(g, "maximum", op(g, "sub", count, const(g, 1.0)), const(g, 1.0))
        )
        momentum, keep = const(g, self.momentum), const(g, 1.0 - self.momentum)
        batch_mean = mean
        batch_var = op(g, "mul", variance, correction)
        for name, batch_value in (("running_mean", batch_mean), ("running_var", batch_var)):
            running = ctx.variable(name)
            updated = op(g, "add", op(g, "mul", running, keep), op(g, "mul", batch_value, momentum))
            ctx.effects.append(op(g, "assign", running, updated))

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        sync = ", sync=True" if self.sync else ""
        return (
            f"BatchNorm(eps={self.eps:g}, momentum={self.momentum:g}, "
            f"affine={self.affine}{name}{sync})"
        )
