"""What a trainer's engine holds, across recompiles and files: reading and restoring
its state, following frozen layers, checkpoints and go-metal's JSON layout.

``EngineState`` is the part of ``Trainer`` that deals with the engine's variables as a
whole; the trainer provides ``model``, ``_held``, ``_compile`` and the rest of the
training-session interface.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from ..nn.layers.base import trainable_changes
from . import optim, provided
from .data_parallel import is_leading_rank, wait_for_every_rank
from .session import SessionState
from .step_graph import LEARNING_RATE_SCALAR, STEP_VARIABLE
from .zero_sharding import (
    ZeroRedundancyOptimizer,
    sharded_state,
    unsharded_state,
    whole_slot_shapes,
)

if TYPE_CHECKING:
    from .trainer import Trainer


class EngineState:
    """Reading, restoring and saving the state of a ``Trainer``'s engine."""

    # Provided by Trainer.
    model: Any
    optimizer: Any
    _held: Any
    _host_optimizer: Any
    _loss_scaler: Any
    _options: Any
    # Frozen weights' optimizer slots (kept on the host), the steps each weight sat out
    # frozen, and the step each frozen weight left training at.
    _waiting_slots: dict[str, np.ndarray]
    _step_offsets: dict[str, int]
    _frozen_since: dict[str, int]

    def _compile(self) -> None:
        raise NotImplementedError

    def _using_engine(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    @property
    def _engine(self) -> Any:
        raise NotImplementedError

    def _follow_trainable(self) -> None:
        """Recompiles the step once when the model's trainable weights changed (a layer
        frozen or unfrozen): weights, optimizer slots, the step count, the random
        generator and the learning rate carry over; a frozen weight's slots wait on the
        host and come back when it is unfrozen, as torch keeps a frozen parameter's state.
        """
        self._trainable_seen = trainable_changes()
        names = tuple(self.model.trainable_weight_names)
        if not names:
            raise ValueError(
                "every weight of the model is frozen, so there is nothing to train; "
                "unfreeze some (model.unfreeze(...) or layer.trainable = True)"
            )
        previous = getattr(self, "_trained_names", names)
        if names == previous:
            self._trained_names = names
            return
        # torch counts a parameter's steps only while it has a gradient: a weight that sat
        # out k steps frozen takes step - k for its bias corrections and first-step rules.
        step = self.step
        for name in set(previous) - set(names):
            self._frozen_since[name] = step
        for name in set(names) - set(previous):
            sat_out = step - self._frozen_since.pop(name, 0)
            self._step_offsets[name] = self._step_offsets.get(name, 0) + sat_out
        self._use_step_offsets()
        self._recompile()
        self._trained_names = names

    def set_frozen_steps(self, step_offsets: dict[str, int], frozen_since: dict[str, int]) -> None:
        """Sets how many steps each weight sat out frozen, and when each frozen weight
        left training (what ``read_state`` reports and a checkpoint restores); the step
        recompiles when the counts change what the optimizer emits.

        Args:
            step_offsets: steps sat out, by weight name.
            frozen_since: the step each frozen weight left training at, by weight name.

        Example:
            >>> trainer.set_frozen_steps({"dense_0.weight": 10}, {})  # doctest: +SKIP
        """
        self._frozen_since = {name: int(step) for name, step in frozen_since.items()}
        offsets = {name: int(step) for name, step in step_offsets.items()}
        if offsets != self._step_offsets:
            self._step_offsets = offsets
            self._use_step_offsets()
            self._recompile()

    def _use_step_offsets(self) -> None:
        offsets = tuple(sorted((n, float(k)) for n, k in self._step_offsets.items() if k))
        self._options = dataclasses.replace(self._options, step_offsets=offsets)

    def _recompile(self) -> None:
        """Builds the step anew (the trainable weights or the step's options changed),
        carrying the engine's state over."""
        state = self.read_state()
        lr = float(self._engine.get_scalar(LEARNING_RATE_SCALAR))
        waiting = {**self._waiting_slots, **state.variables}
        self._compile()
        weights = set(self.model.weight_shapes)
        with self._using_engine() as engine:
            present = set(engine.variable_names())
            for name, value in waiting.items():
                if name in present and name not in weights:
                    engine.set_variable(name, value)
            engine.rng_step = state.rng_step
            engine.set_scalar(LEARNING_RATE_SCALAR, lr)
        self._waiting_slots = {n: v for n, v in waiting.items() if n not in present}

    def read_state(self) -> SessionState:
        """The engine state at this moment, as a checkpoint stores it.

        Returns:
            Every engine variable, the random generator's seed and position, and the
            memory of a host-driven optimizer; no step (of this trainer or one sharing its
            layers) runs while they are read.

        Example:
            >>> trainer.read_state().variables["optimizer.step"]  # doctest: +SKIP
            array(10., dtype=float32)
        """
        with self._using_engine() as engine:
            names = engine.variable_names()
            variables = {name: np.asarray(engine.get_variable(name)) for name in names}
            rng_step = int(engine.rng_step)
            seed = int(engine.seed)
        host = None if self._host_optimizer is None else self._host_optimizer.state()
        return SessionState(
            variables,
            seed,
            rng_step,
            host,
            frozen_slots=dict(self._waiting_slots),
            step_offsets=dict(self._step_offsets),
            frozen_since=dict(self._frozen_since),
        )

    def variable_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every engine variable's shape, by name (weights, optimizer slots, the step).

        Example:
            >>> trainer.variable_shapes()["optimizer.step"]  # doctest: +SKIP
            ()
        """
        engine = self._engine
        return {name: tuple(engine.variable_shape(name)) for name in engine.variable_names()}

    def restore_state(self, state: SessionState) -> None:
        """Puts back a state that ``read_state`` gave (of this trainer or an equal one).

        The variables and the random generator's position are set, then a host-driven
        optimizer's memory is loaded; ``state.seed`` is ignored (the seed is fixed when
        the trainer is built).

        Args:
            state: the state; its variables must have this trainer's names and shapes.

        Raises:
            ValueError: the state holds a host optimizer memory this trainer's optimizer
                does not keep, or lacks one it keeps.
            KeyError, TypeError, ValueError: a host optimizer memory that does not fit.

        Example:
            >>> trainer.restore_state(other.read_state())  # doctest: +SKIP
        """
        if (self._host_optimizer is None) != (state.host_optimizer is None):
            raise ValueError(
                f"the state's host optimizer memory does not match {type(self.optimizer).__name__}"
            )
        self._waiting_slots = dict(state.frozen_slots)
        self.set_frozen_steps(state.step_offsets, state.frozen_since)
        with self._using_engine() as engine:
            for name, value in state.variables.items():
                engine.set_variable(name, value)
            engine.rng_step = state.rng_step
        if self._host_optimizer is not None and state.host_optimizer is not None:
            self._host_optimizer.load_state(*state.host_optimizer)

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step will use."""
        return float(self._engine.get_scalar(LEARNING_RATE_SCALAR))

    def set_learning_rate(self, lr: float) -> None:
        """Changes the learning rate of later steps without recompiling anything.

        Args:
            lr: the new learning rate (finite, >= 0).

        Example:
            >>> trainer.set_learning_rate(1e-4)  # doctest: +SKIP
        """
        self._engine.set_scalar(LEARNING_RATE_SCALAR, optim.check_learning_rate(lr))

    @property
    def step(self) -> int:
        """The number of optimizer steps taken (kept in the engine)."""
        return round(float(np.asarray(self._engine.get_variable(STEP_VARIABLE))))

    def checkpoint_state(self) -> SessionState:
        """``read_state`` as a checkpoint stores it: with a ``ZeroRedundancyOptimizer``,
        every rank's shard of the optimizer slots put together into whole slots, as an
        unsharded run holds them (a collective: every rank of the job calls it).

        Example:
            >>> trainer.checkpoint_state().variables["dense_0.weight.exp_avg"].shape  # doctest: +SKIP
            (784, 512)
        """
        state = self.read_state()
        if isinstance(self.optimizer, ZeroRedundancyOptimizer):
            state = unsharded_state(state, self.optimizer, self.model.weight_shapes)
        return state

    def checkpoint_variable_shapes(self) -> dict[str, tuple[int, ...]]:
        """``variable_shapes`` as a checkpoint stores them (whole optimizer slots).

        Example:
            >>> trainer.checkpoint_variable_shapes()["optimizer.step"]  # doctest: +SKIP
            ()
        """
        shapes = self.variable_shapes()
        if isinstance(self.optimizer, ZeroRedundancyOptimizer):
            shapes = whole_slot_shapes(shapes, self.optimizer, self.model.weight_shapes)
        return shapes

    def restore_checkpoint_state(self, state: SessionState) -> None:
        """Puts back a state ``checkpoint_state`` gave (or an unsharded run's): with a
        ``ZeroRedundancyOptimizer`` each rank takes its shard of the whole slots.

        Example:
            >>> trainer.restore_checkpoint_state(other.checkpoint_state())  # doctest: +SKIP
        """
        if isinstance(self.optimizer, ZeroRedundancyOptimizer):
            state = sharded_state(state, self.optimizer, self.model.weight_shapes)
        self.restore_state(state)

    def engine_stats(self) -> dict[str, Any]:
        """The engine's counters: arena and persistent bytes, allocations, steps, plans.

        Returns:
            A dict with keys ``arena_bytes``, ``persistent_bytes``, ``allocations``,
            ``steps`` and ``plans``; with loss scaling also ``loss_scale`` (float) and
            ``skipped_steps`` (updates skipped for an inf/NaN gradient).

        Example:
            >>> trainer.engine_stats()["plans"]  # doctest: +SKIP
            1
        """
        stats = dict(self._engine.stats())
        if self._loss_scaler is not None:
            stats.update(self._loss_scaler.stats(self._engine))
        return stats

    # -- saving ----------------------------------------------------------------------------
    def save(self, path: Any, metadata: dict[str, Any] | None = None) -> None:
        """Atomically writes a checkpoint that ``Trainer.load`` resumes exactly.

        It holds the model definition, every engine variable (weights, batch-norm
        statistics, optimizer slots, step count), the loss, optimizer, scheduler, batch
        size, random generator state, learning rate, epoch and history.

        Args:
            path: the file to create or replace, e.g. ``"run/ckpt.safetensors"``.
            metadata: optional JSON-serializable dict stored with the checkpoint.

        In a distributed job every rank calls it: rank 0 writes (the ranks hold the same
        state; with ``ZeroRedundancyOptimizer`` the slots' shards are put together first,
        so the file is an unsharded run's), and every rank returns once it is complete.

        Example:
            >>> trainer.save("run/ckpt.safetensors")  # doctest: +SKIP
        """
        state = self.checkpoint_state()
        if is_leading_rank():
            provided.save_checkpoint(self, path, metadata, state=state)
        wait_for_every_rank()

    @classmethod
    def load(cls, path: Any, *, allow_non_finite: bool = False) -> Trainer:
        """Rebuilds a trainer from ``save`` output; training continues bit for bit.

        Args:
            path: a checkpoint written by ``trainer.save``.
            allow_non_finite: load weights and optimizer state holding NaN or infinities
                (e.g. to inspect a run that diverged) instead of refusing them.

        Returns:
            The trainer, compiled, with all its state restored.

        Raises:
            gm.serialization.CheckpointError: the file is not an intact checkpoint.

        Example:
            >>> trainer = gm.Trainer.load("run/ckpt.safetensors")  # doctest: +SKIP
        """
        return provided.load_checkpoint(path, allow_non_finite=allow_non_finite)

    def export_json(self, path: Any, description: str | None = None) -> None:
        """Atomically writes the trainer in go-metal's readable JSON checkpoint layout.

        Args:
            path: the file to create or replace, e.g. ``"run/checkpoint.json"``.
            description: optional free text stored in the metadata.

        Example:
            >>> trainer.export_json("run/checkpoint.json")  # doctest: +SKIP
        """
        provided.export_json(self, path, description)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # pickle and copy.deepcopy go through a checkpoint (the model definition and every
        # engine variable), never through engine memory.
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "trainer.safetensors")
            provided.save_checkpoint(self, path, None)
            with open(path, "rb") as f:
                return trainer_from_checkpoint, (f.read(),)


def trainer_from_checkpoint(data: bytes) -> Trainer:
    """Rebuilds a trainer from the bytes of a checkpoint (what unpickling a trainer calls).

    Args:
        data: a checkpoint file's contents, as ``trainer.save`` writes it.

    Returns:
        The trainer, with its model, weights and optimizer state.

    Example:
        >>> clone = trainer_from_checkpoint(checkpoint_bytes)  # doctest: +SKIP
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trainer.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        return provided.load_checkpoint(path, allow_non_finite=True)
