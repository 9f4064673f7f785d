"""``TrainingSession``: what the fit loop, callbacks, schedulers, evaluation, checkpoints
and plots may use of a trainer.

``Trainer`` implements it; the modules around it (``fit``, ``evaluation``, ``callbacks``,
``schedulers``, ``gometal.io`` checkpoints, ``gometal.viz``) use nothing else of it, so
a trainer's engine, plans and locks stay its own business and another session (a
distributed one, say) can stand in for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..nn.model import Model
from .history import History
from .metrics import AccuracyTotals

if TYPE_CHECKING:
    from .losses import Loss
    from .optim import Optimizer
    from .output_losses import OutputLoss


@dataclass(frozen=True)
class StepResult:
    """What one training step reports.

    Attributes:
        loss: the batch's mean loss (before the update); for several outputs, the total
            ``sum(weight * loss)`` the step minimizes.
        accuracy: the batch's accuracy in ``[0, 1]`` (before the update); for several
            outputs, the first output's.
        totals: the sums behind ``accuracy``; adding the totals of several batches gives
            their pooled accuracy, independent of how the data was batched.
        losses: for a model with several outputs (or a dict of them), each output's mean
            loss (unweighted), by output name; empty otherwise.
        accuracies: each output's accuracy, by output name (as ``losses``).
        output_totals: the sums behind each output's accuracy (as ``losses``).
    """

    loss: float
    accuracy: float
    totals: AccuracyTotals | None = None
    losses: Mapping[str, float] = field(default_factory=dict)
    accuracies: Mapping[str, float] = field(default_factory=dict)
    output_totals: Mapping[str, AccuracyTotals] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputEvaluation:
    """One output of a batch through the inference pass.

    Attributes:
        loss: the output's mean loss (unweighted).
        totals: the sums behind its accuracy.
        labels: its labels or targets as its loss takes them.
        outputs: its probabilities (or raw outputs for a regression loss), when asked for.
    """

    loss: float
    totals: AccuracyTotals
    labels: np.ndarray
    outputs: np.ndarray | None = None


@dataclass(frozen=True)
class BatchEvaluation:
    """One batch through the inference pass (dropout off, no update).

    Attributes:
        loss: the batch's mean loss (for several outputs, the weighted total).
        totals: the sums behind the batch's accuracy (for several outputs, the first's).
        labels: the batch's labels or targets as the loss takes them (int32 class
            indices or float32 targets); for several outputs, the first output's.
        outputs: the probabilities (softmax or sigmoid of the outputs, for losses that
            have them) or else the raw outputs, when asked for; otherwise ``None``. For
            several outputs, the first output's.
        per_output: for a model with several outputs (or a dict of them), each output's
            evaluation by output name; empty otherwise.
    """

    loss: float
    totals: AccuracyTotals
    labels: np.ndarray
    outputs: np.ndarray | None = None
    per_output: Mapping[str, OutputEvaluation] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionState:
    """A session's engine state at one moment, as a checkpoint stores it.

    Attributes:
        variables: every engine variable by name (weights, batch-norm statistics,
            optimizer slots, the step counter).
        seed: the seed of the random generator (dropout).
        rng_step: the random generator's position.
        host_optimizer: a host-driven optimizer's memory (L-BFGS) as ``(scalars,
            vectors)``; ``None`` for in-graph optimizers.
        frozen_slots: the optimizer slots of frozen weights, kept on the host until
            their weights train again.
        step_offsets: the steps each weight sat out frozen (its optimizer step is the
            step minus this, as torch counts a parameter's steps).
        frozen_since: the step at which each frozen weight left training.
    """

    variables: dict[str, np.ndarray]
    seed: int
    rng_step: int
    host_optimizer: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
    frozen_slots: dict[str, np.ndarray] = field(default_factory=dict)
    step_offsets: dict[str, int] = field(default_factory=dict)
    frozen_since: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class TrainingSession(Protocol):
    """A model being trained, as the code around the trainer sees it.

    Attributes:
        model: the model being trained.
        loss: the ``gm.losses.Loss`` (for several outputs, the first output's).
        losses: each output's ``gm.losses.Loss``, by output name.
        loss_weights: each output's weight in the total loss, by output name.
        output_losses: each output's name, loss, weight and sample shape, in the model's
            output order (what batches of a model with several outputs are checked with).
        optimizer: the ``gm.optim.Optimizer``.
        batch_size: the batch size the session was set up for.
        epoch: completed ``fit`` epochs (``fit`` advances it).
        history: the ``History`` of those epochs.
        scheduler: the attached learning-rate scheduler, or ``None``.
        stop_training: set by a callback to end ``fit`` after the current epoch.
        mixed_precision: the requested mixed-precision mode, or ``None``.
        loss_scaling: whether the step scales the loss.
        growth_interval: clean steps before the loss scale grows.
        distributed: whether the step averages gradients over a job's ranks (so every
            rank holds the same weights, and evaluation pools over the ranks).

    Example:
        >>> isinstance(gm.Trainer(model, "mse"), TrainingSession)  # doctest: +SKIP
        True
    """

    model: Model
    loss: Loss
    losses: dict[str, Loss]
    loss_weights: dict[str, float]
    output_losses: list[OutputLoss]
    optimizer: Optimizer
    batch_size: int
    epoch: int
    history: History
    scheduler: Any
    stop_training: bool
    mixed_precision: str | None
    loss_scaling: bool
    growth_interval: int
    distributed: bool

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step will use."""

    def set_learning_rate(self, lr: float) -> None:
        """Sets the learning rate of the next steps."""

    @property
    def step(self) -> int:
        """The number of optimizer steps taken."""

    def prepare_batch(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Checks a batch and converts it to what the engine reads (float32 inputs; int32
        labels or float32 targets; lists of them, in model order, for several)."""

    def train_batch(self, x: Any, y: Any, sample_weight: Any = None) -> StepResult:
        """Runs one training step (``sample_weight`` scales each sample's loss)."""

    def evaluate_batch(
        self, x: Any, y: Any, with_outputs: bool = False, sample_weight: Any = None
    ) -> BatchEvaluation:
        """Runs one batch through the inference pass; ``with_outputs`` adds its
        probabilities (or raw outputs for regression losses), ``sample_weight`` scales
        each sample's loss."""

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """The model's raw outputs."""

    def predict_proba(self, x: Any, batch_size: int | None = None) -> Any:
        """The model's probabilities (for losses that have them)."""

    def save(self, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> None:
        """Writes a checkpoint that resumes the session exactly."""

    def read_state(self) -> SessionState:
        """The engine state at this moment (no step runs while it is read)."""

    def variable_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every engine variable's shape, by name."""

    def restore_state(self, state: SessionState) -> None:
        """Puts back a state ``read_state`` gave (its seed is the session's own)."""

    def checkpoint_state(self) -> SessionState:
        """``read_state`` as a checkpoint stores it (sharded optimizer slots made whole)."""

    def checkpoint_variable_shapes(self) -> dict[str, tuple[int, ...]]:
        """``variable_shapes`` as a checkpoint stores them."""

    def restore_checkpoint_state(self, state: SessionState) -> None:
        """Puts back a state ``checkpoint_state`` gave."""
