"""The graph side of mixed precision: the bfloat16 rounding pass and dynamic loss scaling.

**Rounding pass.** Layers emit through ``Bf16Graph``, a thin wrapper of the graph that
rewrites every ``matmul`` and ``conv2d`` node: each input goes through ``round_bf16`` and
the output through ``round_bf16_grad`` (identity forward; its gradient is rounded to
bfloat16). So the forward product reads bfloat16 operands, and both backward products
(``dX = dY W``, ``dW = dY^T X``) read a bfloat16 ``dY`` and the bfloat16 forward
operands, all accumulating in float32 as bf16 hardware with a float32 output does. The
gradient that leaves a rounded input is float32 (the VJP of a cast), so weights stay
float32 masters. Losses, softmax, reductions, batch-norm statistics and the optimizer are
emitted on the plain graph and stay float32.

**Loss scaling.** ``LossScaler.emit`` multiplies the training loss by the engine variable
``loss_scale`` before autodiff and divides the gradients by it. A step is finite when
``sum(g * 0)`` over every gradient is not NaN (``inf * 0`` and ``NaN * 0`` are NaN).
``GuardedGraph`` makes each optimizer write conditional, ``select(finite, new, old)``, so a
non-finite step leaves parameters, slots and the step count bit for bit unchanged; the
scale halves and ``loss_scale.skipped`` counts it. After ``growth_interval`` clean steps
in a row the scale doubles (capped at 2**127, so it never becomes inf). All of it runs
inside the one training call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import _core
from ..graph.composites import const, op, reduce_sum

LOSS_SCALE_VARIABLE = "loss_scale"
GOOD_STEPS_VARIABLE = "loss_scale.good_steps"
SKIPPED_VARIABLE = "loss_scale.skipped"
INITIAL_LOSS_SCALE = 65536.0
# The largest power of two below float32's maximum: doubling stops there.
MAX_LOSS_SCALE = 2.0**127

_ROUNDED_OPS = frozenset({"matmul", "conv2d"})


class _GraphWrapper:
    """Forwards everything to the wrapped graph except what a subclass overrides."""

    def __init__(self, graph: _core.Graph):
        self._graph = graph

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)

    def __len__(self) -> int:
        return len(self._graph)


class Bf16Graph(_GraphWrapper):
    """A graph view whose ``matmul`` and ``conv2d`` nodes compute on bfloat16 operands.

    Args:
        graph: the ``_core.Graph`` to extend.

    Example:
        >>> ctx = EmitContext(Bf16Graph(g), training=True, variables=variables)  # doctest: +SKIP
    """

    def op(self, name: str, inputs: list[int], attrs: Mapping[str, Any]) -> int:
        """Appends ``name`` like ``_core.Graph.op``, rounding matmul and conv2d operands.

        Args:
            name: the primitive.
            inputs: node ids.
            attrs: the primitive's attributes.

        Returns:
            The node id of the result.
        """
        g = self._graph
        if name not in _ROUNDED_OPS:
            return g.op(name, list(inputs), attrs)
        rounded = [g.op("round_bf16", [node], {}) for node in inputs]
        return g.op("round_bf16_grad", [g.op(name, rounded, attrs)], {})


class GuardedGraph(_GraphWrapper):
    """A graph view whose variable writes happen only when ``finite`` is 1.

    ``assign(var, new)`` becomes ``assign(var, select(finite, new, var))``; the fused
    ``adam_update`` takes ``finite`` as its seventh input and skips its writes when it is 0.

    Args:
        graph: the ``_core.Graph`` to extend.
        finite: a float32 scalar node, 1 when the step's gradients are all finite.

    Example:
        >>> updates = optimizer.emit_updates(GuardedGraph(g, finite), params, grads, lr, step)  # doctest: +SKIP
    """

    def __init__(self, graph: _core.Graph, finite: int):
        super().__init__(graph)
        self.finite = finite

    def op(self, name: str, inputs: list[int], attrs: Mapping[str, Any]) -> int:
        """Appends ``name`` like ``_core.Graph.op``, guarding variable writes.

        Args:
            name: the primitive.
            inputs: node ids.
            attrs: the primitive's attributes.

        Returns:
            The node id of the result (an effect node for writes).
        """
        g = self._graph
        if name == "assign":
            variable, value = inputs
            return g.op("assign", [variable, self._keep_unless_finite(variable, value)], {})
        if name == "adam_update":
            # The fused kernel takes the flag as a seventh input and writes nothing unless
            # it is 1; its registry decomposition guards each write the same way.
            return g.op("adam_update", [*inputs, self.finite], attrs)
        return g.op(name, list(inputs), attrs)

    def _keep_unless_finite(self, variable: int, value: int) -> int:
        return self._graph.op("select", [self.finite, value, variable], {})


class LossScaler:
    """Dynamic loss scaling emitted into the training graph.

    Args:
        growth_interval: consecutive finite steps after which the scale doubles.

    Example:
        >>> grads, guard, effects = LossScaler(2000).emit(g, loss, params)  # doctest: +SKIP
    """

    variable_names = (LOSS_SCALE_VARIABLE, GOOD_STEPS_VARIABLE, SKIPPED_VARIABLE)

    def __init__(self, growth_interval: int):
        self.growth_interval = growth_interval

    def emit(
        self,
        g: _core.Graph,
        loss: int,
        params: Mapping[str, int],
        reduce: Callable[[dict[str, int]], dict[str, int]] | None = None,
    ) -> tuple[dict[str, int], GuardedGraph, list[int]]:
        """Appends scaled autodiff, the finiteness test and the scale update.

        Args:
            g: the training graph.
            loss: the float32 scalar training loss.
            params: parameter name -> variable node id.
            reduce: maps the scaled gradients by name to the ones applied (the mean over
                a distributed job's ranks), before the finiteness test reads them.

        Returns:
            ``(grads, guard, effects)``: the unscaled gradients by name, the graph view
            through which optimizer writes must be emitted, and the scaler's own writes.
        """
        scale = g.variable(LOSS_SCALE_VARIABLE, ())
        good_steps = g.variable(GOOD_STEPS_VARIABLE, ())
        skipped = g.variable(SKIPPED_VARIABLE, ())
        scaled_loss = op(g, "mul", loss, scale)
        raw = g.gradients(scaled_loss, list(params.values()))
        if reduce is not None:
            raw = list(reduce(dict(zip(params, raw))).values())
        grads = {name: op(g, "div", grad, scale) for name, grad in zip(params, raw)}
        probe = None
        for grad in raw:
            term = reduce_sum(g, op(g, "mul", grad, const(g, 0.0)))
            probe = term if probe is None else op(g, "add", probe, term)
        finite = op(g, "equal", probe, probe)

        one = const(g, 1.0)
        good = op(g, "mul", op(g, "add", good_steps, one), finite)
        grow = op(g, "greater_equal", good, const(g, float(self.growth_interval)))
        grown = op(g, "minimum", op(g, "mul", scale, const(g, 2.0)), const(g, MAX_LOSS_SCALE))
        kept = op(g, "select", grow, grown, scale)
        new_scale = op(g, "select", finite, kept, op(g, "mul", scale, const(g, 0.5)))
        new_good = op(g, "select", grow, const(g, 0.0), good)
        new_skipped = op(g, "add", skipped, op(g, "sub", one, finite))
        effects = [
            op(g, "assign", scale, new_scale),
            op(g, "assign", good_steps, new_good),
            op(g, "assign", skipped, new_skipped),
        ]
        return grads, GuardedGraph(g, finite), effects

    @staticmethod
    def initialize(engine: Any) -> None:
        """Sets the scale to its initial value (the engine zero-initializes variables)."""
        engine.set_variable(LOSS_SCALE_VARIABLE, np.array(INITIAL_LOSS_SCALE, np.float32))

    @staticmethod
    def stats(engine: Any) -> dict[str, float | int]:
        """The current scale and the number of skipped steps, read from the engine."""
        scale = float(np.asarray(engine.get_variable(LOSS_SCALE_VARIABLE)))
        skipped = round(float(np.asarray(engine.get_variable(SKIPPED_VARIABLE))))
        return {"loss_scale": scale, "skipped_steps": skipped}
