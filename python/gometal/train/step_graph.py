"""The training step as one engine graph: forward pass, loss, gradients, optimizer updates.

``compile_step`` builds the graph a ``Trainer`` runs: the training forward pass (dropout
on), the loss and accuracy, the gradients, the optimizer updates and a step counter, plus
an inference forward pass for ``eval``, ``predict`` and ``predict_proba``, and compiles
it into one engine that takes the model's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import _core
from ..graph.composites import const, op
from ..nn.layers.base import EmitContext
from ..nn.layers.weight_store import EngineWeights
from ..nn.model import Model
from ..nn.tensor import BATCH
from . import optim
from .metrics import BatchAccuracy
from .mixed_precision import Bf16Graph, LossScaler
from .output_losses import OutputLoss
from .precision import PrecisionPlan

STEP_VARIABLE = "optimizer.step"
LEARNING_RATE_SCALAR = "lr"


@dataclass(frozen=True)
class CompiledStep:
    """A compiled training step.

    Attributes:
        weights: the engine, holding the model's weights while it uses them.
        has_probabilities: whether the engine defines ``predict_proba`` (some output's
            loss gives probabilities).
        accuracy_kinds: how each output's accuracy output reads
            (``gm.metrics.BatchAccuracy.kind``), in output order.
    """

    weights: EngineWeights
    has_probabilities: bool
    accuracy_kinds: tuple[str, ...]


def _target_input(g: _core.Graph, name: str, output: OutputLoss) -> int:
    if output.loss.integer_labels:
        return g.input(name, (BATCH,), "int32")
    return g.input(name, (BATCH, *output.sample_shape), "float32")


def _losses_and_accuracies(
    g: _core.Graph, outputs: Sequence[int], targets: Sequence[int], losses: Sequence[OutputLoss]
) -> tuple[list[int], list[BatchAccuracy]]:
    """Each output's loss then accuracy nodes, output by output."""
    loss_nodes, accuracies = [], []
    for output, target, entry in zip(outputs, targets, losses):
        loss_nodes.append(entry.loss(g, output, target))
        accuracies.append(entry.loss.accuracy(g, output, target))
    return loss_nodes, accuracies


def _weighted_total(
    g: _core.Graph, loss_nodes: Sequence[int], losses: Sequence[OutputLoss], per_output: bool
) -> int:
    """``sum(weight * loss)``; a lone unweighted loss is its own total, unless the total
    is reported beside it (as a node of its own)."""
    if not per_output and len(losses) == 1 and losses[0].weight == 1.0:
        return loss_nodes[0]
    total = None
    for node, entry in zip(loss_nodes, losses):
        term = op(g, "mul", node, const(g, entry.weight))
        total = term if total is None else op(g, "add", total, term)
    return total


def compile_step(
    model: Model,
    losses: Sequence[OutputLoss],
    optimizer: Any,
    precision: PrecisionPlan,
    loss_scaler: LossScaler | None,
    seed: int,
    backend: str = "cpu",
) -> CompiledStep:
    """Builds and compiles the training step of ``model`` under ``losses`` and ``optimizer``.

    The functions read the model's inputs (``x``, or ``x['image']``, ... for several)
    then its targets (``y``, or ``y['label']``, ...). ``train`` and ``eval`` give
    ``[loss, accuracy]`` for a model with one output, and ``[total loss, loss per
    output..., accuracy per output...]`` for several outputs (or a dict of them).

    Args:
        model: the model.
        losses: one ``OutputLoss`` per model output, in order (the total is their
            weighted sum).
        optimizer: the optimizer (its updates become graph nodes).
        precision: the mixed-precision plan (bf16 rounds matmul and conv operands).
        loss_scaler: dynamic loss scaling, or ``None``.
        seed: the engine's random seed (dropout).
        backend: the backend the engine runs on.

    Returns:
        The engine with ``train``, ``eval``, ``predict`` and, when a loss has
        probabilities, ``predict_proba`` (plus the host gradient function for a
        host-driven optimizer).

    Example:
        >>> step = compile_step(model, output_losses, optimizer, plan, None, seed=0)  # doctest: +SKIP
    """
    g = _core.Graph()
    per_output = model.output_signature.structured
    xs = model.declare_inputs(g)
    signature = model.output_signature
    ys = [
        _target_input(g, signature.label("y", index), entry) for index, entry in enumerate(losses)
    ]
    variables = model.declare_variables(g)
    # Only trainable weights get gradients and optimizer slots; the rest (running
    # statistics) are written by the layers' own effects.
    params = {name: variables[name] for name in model.trainable_weight_names}
    lr = g.scalar(LEARNING_RATE_SCALAR, optimizer.lr)
    step = g.variable(STEP_VARIABLE, ())

    # Layers emit through the bf16 view (matmul/conv operands rounded); the loss does not.
    layer_graph = Bf16Graph(g) if precision.compute == "bf16" else g
    train_ctx = EmitContext(layer_graph, training=True, variables=variables)
    train_outs = model.emit(train_ctx, xs)
    train_losses, train_accuracies = _losses_and_accuracies(g, train_outs, ys, losses)
    train_loss = _weighted_total(g, train_losses, losses, per_output)
    # Weight penalties the layers added (kernel_regularizer=...) join what is minimized.
    for penalty in train_ctx.losses:
        train_loss = op(g, "add", train_loss, penalty)
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
    eval_outs = model.emit(eval_ctx, xs)
    eval_losses, eval_accuracies = _losses_and_accuracies(g, eval_outs, ys, losses)
    eval_loss = _weighted_total(g, eval_losses, losses, per_output)
    probabilities = [entry.loss.probabilities(g, out) for out, entry in zip(eval_outs, losses)]

    def reported(total: int, loss_nodes: list[int], accuracies: list[BatchAccuracy]) -> list[int]:
        if not per_output:
            return [total, accuracies[0].node]
        return [total, *loss_nodes, *(accuracy.node for accuracy in accuracies)]

    engine = _core.Engine(g, seed=seed, backend=backend)
    inputs = [*xs, *ys]
    engine.define(
        "train",
        inputs=inputs,
        outputs=reported(train_loss, train_losses, train_accuracies),
        effects=effects,
        advance_rng=True,
    )
    engine.define(
        "eval",
        inputs=inputs,
        outputs=reported(eval_loss, eval_losses, eval_accuracies),
        effects=[],
        advance_rng=False,
    )
    engine.define("predict", inputs=xs, outputs=eval_outs, effects=[], advance_rng=False)
    has_probabilities = any(p is not None for p in probabilities)
    if has_probabilities:
        # Outputs whose loss has no probabilities (regression) give their predictions.
        proba = [out if p is None else p for out, p in zip(eval_outs, probabilities)]
        engine.define("predict_proba", inputs=xs, outputs=proba, effects=[], advance_rng=False)
    if optimizer.host_driven:
        engine.define(
            optim.HOST_GRADIENT_FUNCTION,
            inputs=inputs,
            outputs=[*reported(train_loss, train_losses, train_accuracies), *grads.values()],
            effects=list(train_ctx.effects),
            advance_rng=True,
        )
    # The engine takes the layers' weights: their current values, wherever they are.
    held = EngineWeights(engine, model.layers)
    if loss_scaler is not None:
        loss_scaler.initialize(engine)
    return CompiledStep(held, has_probabilities, tuple(a.kind for a in train_accuracies))
