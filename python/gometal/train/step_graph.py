"""The training step as one engine graph: forward pass, loss, gradients, optimizer updates.

``compile_step`` builds the graph a ``Trainer`` runs: the training forward pass (dropout
on), the loss and accuracy, the gradients, the optimizer updates and a step counter, plus
an inference forward pass for ``eval``, ``predict`` and ``predict_proba``, and compiles
it into one engine that takes the model's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _core
from ..graph.composites import const, op
from ..nn.layers.base import EmitContext
from ..nn.layers.weight_store import EngineWeights
from ..nn.model import Model
from ..nn.tensor import BATCH
from . import optim
from .losses import Loss
from .mixed_precision import Bf16Graph, LossScaler
from .precision import PrecisionPlan

STEP_VARIABLE = "optimizer.step"
LEARNING_RATE_SCALAR = "lr"


@dataclass(frozen=True)
class CompiledStep:
    """A compiled training step.

    Attributes:
        weights: the engine, holding the model's weights while it uses them.
        accuracy_kind: how the accuracy output reads (``gm.metrics.BatchAccuracy.kind``).
        has_probabilities: whether the engine defines ``predict_proba``.
    """

    weights: EngineWeights
    accuracy_kind: str
    has_probabilities: bool


def compile_step(
    model: Model,
    loss: Loss,
    optimizer: Any,
    precision: PrecisionPlan,
    loss_scaler: LossScaler | None,
    seed: int,
    backend: str = "cpu",
) -> CompiledStep:
    """Builds and compiles the training step of ``model`` under ``loss`` and ``optimizer``.

    Args:
        model: the model.
        loss: the loss.
        optimizer: the optimizer (its updates become graph nodes).
        precision: the mixed-precision plan (bf16 rounds matmul and conv operands).
        loss_scaler: dynamic loss scaling, or ``None``.
        seed: the engine's random seed (dropout).
        backend: the backend the engine runs on.

    Returns:
        The engine with ``train``, ``eval``, ``predict`` and, when the loss has
        probabilities, ``predict_proba`` (plus the host gradient function for a
        host-driven optimizer).

    Example:
        >>> step = compile_step(model, loss, optimizer, plan, None, seed=0)  # doctest: +SKIP
    """
    g = _core.Graph()
    x = g.input("x", (BATCH, *model.input_shape), "float32")
    if loss.integer_labels:
        y = g.input("y", (BATCH,), "int32")
    else:
        y = g.input("y", (BATCH, *model.output_shape), "float32")
    variables = model.declare_variables(g)
    # Only trainable weights get gradients and optimizer slots; the rest (running
    # statistics) are written by the layers' own effects.
    params = {name: variables[name] for name in model.trainable_weight_names}
    lr = g.scalar(LEARNING_RATE_SCALAR, optimizer.lr)
    step = g.variable(STEP_VARIABLE, ())

    # Layers emit through the bf16 view (matmul/conv operands rounded); the loss does not.
    layer_graph = Bf16Graph(g) if precision.compute == "bf16" else g
    train_ctx = EmitContext(layer_graph, training=True, variables=variables)
    (train_out,) = model.emit(train_ctx, [x])
    train_loss = loss(g, train_out, y)
    train_accuracy = loss.accuracy(g, train_out, y)
    scaler_effects: list[int] = []
    if loss_scaler is not None:
        # Optimizer writes go through `update_graph`, which skips them on inf/NaN steps.
        grads, update_graph, scaler_effects = loss_scaler.emit(g, train_loss, params)
    else:
        grads = dict(zip(params, g.gradients(train_loss, list(params.values()))))
        update_graph = g
    next_step = op(g, "add", step, const(g, 1.0))
    updates = optimizer.emit_updates(update_graph, params, grads, lr, next_step)
    updates += scaler_effects
    effects = [*train_ctx.effects, *updates, op(update_graph, "assign", step, next_step)]

    eval_ctx = EmitContext(layer_graph, training=False, variables=variables)
    (eval_out,) = model.emit(eval_ctx, [x])
    eval_loss = loss(g, eval_out, y)
    eval_accuracy = loss.accuracy(g, eval_out, y)
    probabilities = loss.probabilities(g, eval_out)

    engine = _core.Engine(g, seed=seed, backend=backend)
    engine.define(
        "train",
        inputs=[x, y],
        outputs=[train_loss, train_accuracy.node],
        effects=effects,
        advance_rng=True,
    )
    engine.define(
        "eval",
        inputs=[x, y],
        outputs=[eval_loss, eval_accuracy.node],
        effects=[],
        advance_rng=False,
    )
    engine.define("predict", inputs=[x], outputs=[eval_out], effects=[], advance_rng=False)
    if probabilities is not None:
        engine.define(
            "predict_proba", inputs=[x], outputs=[probabilities], effects=[], advance_rng=False
        )
    if optimizer.host_driven:
        engine.define(
            optim.HOST_GRADIENT_FUNCTION,
            inputs=[x, y],
            outputs=[train_loss, train_accuracy.node, *grads.values()],
            effects=list(train_ctx.effects),
            advance_rng=True,
        )
    # The engine takes the layers' weights: their current values, wherever they are.
    held = EngineWeights(engine, model.layers)
    if loss_scaler is not None:
        loss_scaler.initialize(engine)
    return CompiledStep(held, train_accuracy.kind, probabilities is not None)
