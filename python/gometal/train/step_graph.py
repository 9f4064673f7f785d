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
from .data_parallel import averaged_over_ranks
from .metrics import BatchAccuracy
from .mixed_precision import Bf16Graph, GuardedGraph, LossScaler
from .output_losses import OutputLoss
from .precision import PrecisionPlan

STEP_VARIABLE = "optimizer.step"
LEARNING_RATE_SCALAR = "lr"
# Batches seen since the last update, with gradient accumulation.
MICRO_STEP_VARIABLE = "optimizer.micro_step"
ACCUMULATOR_SLOT = "grad_accum"
GRADIENTS_FUNCTION = "gradients"


@dataclass(frozen=True)
class StepOptions:
    """How the training step is built beyond the model, losses and optimizer.

    Attributes:
        accumulate_steps: batches whose gradients are averaged into one update (1: an
            update every batch).
        sample_weighted: also define ``train_weighted`` and ``eval_weighted``, which take
            a float32 ``(N,)`` sample weight after the targets.
        step_offsets: ``(weight name, steps it sat out frozen)`` pairs: the optimizer
            counts that weight's steps from its own first update, as torch does.
        distributed: average each gradient over the ranks of the job
            (``gm.distributed``) before clipping, loss scaling and the update.
    """

    accumulate_steps: int = 1
    sample_weighted: bool = False
    step_offsets: tuple[tuple[str, float], ...] = ()
    distributed: bool = False


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
        # One label per sample, or per position for outputs (N, T, classes).
        return g.input(name, (BATCH, *output.sample_shape[:-1]), "int32")
    return g.input(name, (BATCH, *output.sample_shape), "float32")


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


def check_accumulate_steps(steps: Any, loss_scaling: bool, optimizer: Any) -> int:
    """Checks ``Trainer(accumulate_steps=...)`` against the trainer's other choices.

    Raises:
        ValueError: not an int >= 1, or more than 1 with loss scaling or a host-driven
            optimizer (L-BFGS).

    Example:
        >>> check_accumulate_steps(4, False, gm.optim.SGD())  # doctest: +SKIP
        4
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"accumulate_steps must be an int >= 1, got {steps!r}")
    if steps > 1 and loss_scaling:
        raise ValueError(
            f"accumulate_steps={steps} does not combine with loss scaling yet; pass "
            "loss_scaling=False or accumulate_steps=1"
        )
    if steps > 1 and optimizer.host_driven:
        raise ValueError(
            f"accumulate_steps={steps} needs an in-graph optimizer, got the host-driven "
            f"{type(optimizer).__name__}"
        )
    return steps


def compile_step(
    model: Model,
    losses: Sequence[OutputLoss],
    optimizer: Any,
    precision: PrecisionPlan,
    loss_scaler: LossScaler | None,
    seed: int,
    backend: str = "cpu",
    options: StepOptions = StepOptions(),
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
        options: gradient accumulation and sample weights.

    Returns:
        The engine with ``train``, ``eval``, ``predict``, ``gradients`` (the trainable
        weights' gradients of one batch, in ``trainable_weight_names`` order, without an
        update) and, when a loss has probabilities, ``predict_proba`` (plus the weighted
        functions when asked, and the host gradient function for a host-driven optimizer).

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
    sample_weight = (
        g.input("sample_weight", (BATCH,), "float32") if options.sample_weighted else None
    )
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
    train_accuracies = [entry.loss.accuracy(g, o, y) for o, y, entry in zip(train_outs, ys, losses)]

    def reported(total: int, loss_nodes: list[int], accuracies: list[BatchAccuracy]) -> list[int]:
        if not per_output:
            return [total, accuracies[0].node]
        return [total, *loss_nodes, *(accuracy.node for accuracy in accuracies)]

    shared = _SharedVariables(g)

    def training(weights: int | None) -> tuple[list[int], list[int], dict[str, int]]:
        """The reported values, the effects and the raw gradients of one training step."""
        loss_nodes = _output_losses(g, train_outs, ys, losses, weights)
        total = _weighted_total(g, loss_nodes, losses, per_output)
        # Weight penalties the layers added (kernel_regularizer=...) join what is minimized.
        for penalty in train_ctx.losses:
            total = op(g, "add", total, penalty)
        updates, grads = _updates(shared, optimizer, params, total, loss_scaler, lr, step, options)
        return reported(total, loss_nodes, train_accuracies), [*train_ctx.effects, *updates], grads

    train_reported, train_effects, grads = training(None)
    eval_ctx = EmitContext(layer_graph, training=False, variables=variables)
    eval_outs = model.emit(eval_ctx, xs)
    eval_accuracies = [entry.loss.accuracy(g, o, y) for o, y, entry in zip(eval_outs, ys, losses)]

    def evaluation(weights: int | None) -> list[int]:
        loss_nodes = _output_losses(g, eval_outs, ys, losses, weights)
        total = _weighted_total(g, loss_nodes, losses, per_output)
        return reported(total, loss_nodes, eval_accuracies)

    probabilities = [entry.loss.probabilities(g, out) for out, entry in zip(eval_outs, losses)]
    eval_reported = evaluation(None)
    weighted = None
    if sample_weight is not None:
        weighted = (*training(sample_weight), evaluation(sample_weight))

    # The engine takes the graph as it is now: every node is built above.
    engine = _core.Engine(g, seed=seed, backend=backend)
    inputs = [*xs, *ys]
    engine.define(
        "train", inputs=inputs, outputs=train_reported, effects=train_effects, advance_rng=True
    )
    engine.define("eval", inputs=inputs, outputs=eval_reported, effects=[], advance_rng=False)
    if weighted is not None:
        weighted_reported, weighted_effects, _, weighted_eval = weighted
        weighted_inputs = [*inputs, sample_weight]
        engine.define(
            "train_weighted",
            inputs=weighted_inputs,
            outputs=weighted_reported,
            effects=weighted_effects,
            advance_rng=True,
        )
        engine.define(
            "eval_weighted",
            inputs=weighted_inputs,
            outputs=weighted_eval,
            effects=[],
            advance_rng=False,
        )
    engine.define("predict", inputs=xs, outputs=eval_outs, effects=[], advance_rng=False)
    has_probabilities = any(p is not None for p in probabilities)
    if has_probabilities:
        # Outputs whose loss has no probabilities (regression) give their predictions.
        proba = [out if p is None else p for out, p in zip(eval_outs, probabilities)]
        engine.define("predict_proba", inputs=xs, outputs=proba, effects=[], advance_rng=False)
    # The gradients a step on the batch would apply (before clipping and accumulation);
    # no effect runs and the random generator stays, so the next step draws the same.
    engine.define(
        GRADIENTS_FUNCTION,
        inputs=inputs,
        outputs=list(grads.values()),
        effects=[],
        advance_rng=False,
    )
    if optimizer.host_driven:
        engine.define(
            optim.HOST_GRADIENT_FUNCTION,
            inputs=inputs,
            outputs=[*train_reported, *grads.values()],
            effects=list(train_ctx.effects),
            advance_rng=True,
        )
    # The engine takes the layers' weights: their current values, wherever they are.
    held = EngineWeights(engine, model.layers)
    if loss_scaler is not None:
        loss_scaler.initialize(engine)
    return CompiledStep(held, has_probabilities, tuple(a.kind for a in train_accuracies))


class _SharedVariables:
    """A view of a graph whose ``variable`` returns the node already declared under a
    name: the plain and the sample-weighted training functions update the same optimizer
    slots, accumulators and loss-scaling state."""

    def __init__(self, graph: _core.Graph):
        self._graph = graph
        self._declared: dict[str, int] = {}

    def variable(self, name: str, shape: Any, *args: Any) -> int:
        if name not in self._declared:
            self._declared[name] = self._graph.variable(name, shape, *args)
        return self._declared[name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)

    def __len__(self) -> int:
        return len(self._graph)


def _output_losses(
    g: _core.Graph,
    outputs: Sequence[int],
    targets: Sequence[int],
    losses: Sequence[OutputLoss],
    weights: int | None,
) -> list[int]:
    """Each output's loss node, its samples scaled by ``weights`` when given."""
    nodes = []
    for output, target, entry in zip(outputs, targets, losses):
        if weights is None:
            nodes.append(entry.loss(g, output, target))
        else:
            per_sample = op(g, "mul", entry.loss.per_sample(g, output, target), weights)
            nodes.append(entry.loss.reduce(g, per_sample, target))
    return nodes


def _updates(
    g: _core.Graph,
    optimizer: Any,
    params: dict[str, int],
    loss: int,
    loss_scaler: LossScaler | None,
    lr: int,
    step: int,
    options: StepOptions,
) -> tuple[list[int], dict[str, int]]:
    """The optimizer's effects for ``loss`` (with loss scaling and gradient accumulation
    when asked) and the raw gradients."""
    scaler_effects: list[int] = []
    # Distributed: every rank applies the mean of the ranks' gradients (a finite test of
    # the loss scaling reads it too, so all ranks skip the same steps).
    reduce = (lambda grads: averaged_over_ranks(g, grads)) if options.distributed else None
    if loss_scaler is not None:
        # Optimizer writes go through `update_graph`, which skips them on inf/NaN steps.
        grads, update_graph, scaler_effects = loss_scaler.emit(g, loss, params, reduce)
        applied = grads
        if reduce is not None:
            # `compute_gradients` gives this rank's own gradient, as without loss scaling,
            # so calling it is never a collective the other ranks must join.
            grads = dict(zip(params, g.gradients(loss, list(params.values()))))
    else:
        grads = dict(zip(params, g.gradients(loss, list(params.values()))))
        update_graph = g
        applied = grads if reduce is None else reduce(grads)
    accumulation: list[int] = []
    k = options.accumulate_steps
    if k > 1:
        # Each batch adds grad / k to an accumulator; the k-th applies the sum and clears
        # it: one update equal to that of one k-times-larger batch.
        one = const(g, 1.0)
        micro = g.variable(MICRO_STEP_VARIABLE, ())
        counted = op(g, "add", micro, one)
        last = op(g, "equal", counted, const(g, float(k)))
        keep = op(g, "sub", one, last)
        per_batch, applied = applied, {}
        for name, grad in per_batch.items():
            slot = g.variable(f"{name}.{ACCUMULATOR_SLOT}", tuple(g.shape(params[name])))
            applied[name] = op(g, "add", slot, op(g, "mul", grad, const(g, 1.0 / k)))
            accumulation.append(op(g, "assign", slot, op(g, "mul", applied[name], keep)))
        accumulation.append(op(g, "assign", micro, op(g, "mul", counted, keep)))
        update_graph = GuardedGraph(g, last)
    next_step = op(g, "add", step, const(g, 1.0))
    offsets = dict(options.step_offsets)
    effects = optimizer.emit_updates(update_graph, params, applied, lr, next_step, offsets)
    effects += [*scaler_effects, *accumulation, op(update_graph, "assign", step, next_step)]
    return effects, grads
