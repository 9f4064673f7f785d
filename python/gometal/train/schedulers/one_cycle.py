"""``OneCycleLR``: warm up to ``max_lr``, then anneal far below the starting rate."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .base import LRScheduler, check_choice, check_int, check_real

if TYPE_CHECKING:
    from ..session import TrainingSession


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start


class OneCycleLR(LRScheduler):
    """The 1cycle policy (torch's ``OneCycleLR``), scheduling the learning rate only.

    The rate starts at ``initial_lr = max_lr / div_factor``, rises to ``max_lr`` over the
    first ``pct_start`` of the steps, then falls to ``min_lr = initial_lr /
    final_div_factor``. With ``three_phase=True`` it first falls back to ``initial_lr``
    over as many steps as it rose, then to ``min_lr``. Phase boundaries and the stepping
    limit are torch's: ``step`` may run ``total_steps`` times, one more raises
    ``ValueError``. That last allowed step lies one step past the cycle; where torch's
    linear anneal gives a negative rate there, this gives 0. ``max_lr`` fixes the base
    rate, so ``attach`` ignores the trainer's.

    Momentum is compiled into the training graph as a constant, so torch's momentum
    cycling is not available: ``cycle_momentum`` must stay ``False`` (torch's values match
    ``OneCycleLR(..., cycle_momentum=False)``).

    Args:
        trainer: attach to this trainer now (optional).
        max_lr: the peak rate (> 0).
        total_steps: the number of steps in the cycle; or give ``epochs`` and
            ``steps_per_epoch`` and it is their product.
        epochs: epochs to train for (used when ``total_steps`` is ``None``).
        steps_per_epoch: batches per epoch (used when ``total_steps`` is ``None``).
        pct_start: the fraction of the cycle spent raising the rate, in ``[0, 1]``.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        cycle_momentum: must be ``False`` (see above).
        div_factor: ``initial_lr = max_lr / div_factor`` (> 0).
        final_div_factor: ``min_lr = initial_lr / final_div_factor`` (> 0).
        three_phase: use the three-phase schedule described above.
        interval: ``"batch"`` (the default: 1cycle is stepped per batch) or ``"epoch"``.

    Example:
        >>> sched = gm.schedulers.OneCycleLR(trainer, max_lr=0.1, epochs=10,
        ...                                  steps_per_epoch=len(loader))  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: TrainingSession | None = None,
        *,
        max_lr: float,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = False,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        interval: str = "batch",
    ):
        owner = "OneCycleLR"
        self.max_lr = check_real(owner, "max_lr", max_lr, low=0.0, low_open=True)
        if epochs is not None:
            epochs = check_int(owner, "epochs", epochs, 1)
        if steps_per_epoch is not None:
            steps_per_epoch = check_int(owner, "steps_per_epoch", steps_per_epoch, 1)
        if total_steps is not None:
            total_steps = self.total_steps = check_int(owner, "total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(
                f"{owner}: give total_steps, or both epochs and steps_per_epoch; got "
                f"total_steps={total_steps}, epochs={epochs}, steps_per_epoch={steps_per_epoch}"
            )
        self._total_steps_arg, self.epochs, self.steps_per_epoch = (
            total_steps,
            epochs,
            steps_per_epoch,
        )
        self.pct_start = check_real(owner, "pct_start", pct_start, low=0.0, high=1.0)
        self.anneal_strategy = check_choice(
            owner, "anneal_strategy", anneal_strategy, ("cos", "linear")
        )
        if cycle_momentum:
            raise ValueError(
                f"{owner}: cycle_momentum=True is not supported (momentum is a constant of the "
                "compiled training step); pass cycle_momentum=False"
            )
        self.div_factor = check_real(owner, "div_factor", div_factor, low=0.0, low_open=True)
        self.final_div_factor = check_real(
            owner, "final_div_factor", final_div_factor, low=0.0, low_open=True
        )
        self.three_phase = bool(three_phase)
        self.initial_lr = self.max_lr / self.div_factor
        self.min_lr = self.initial_lr / self.final_div_factor
        self._phases = self._build_phases()
        super().__init__(trainer, interval)

    def _build_phases(self) -> list[tuple[float, float, float]]:
        """``(end_step, start_lr, end_lr)`` per phase, with torch's phase boundaries."""
        total, rise_end = self.total_steps, float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            phases = [
                (rise_end, self.initial_lr, self.max_lr),
                (float(2 * self.pct_start * total) - 2, self.max_lr, self.initial_lr),
                (float(total - 1), self.initial_lr, self.min_lr),
            ]
        else:
            phases = [
                (rise_end, self.initial_lr, self.max_lr),
                (float(total - 1), self.max_lr, self.min_lr),
            ]
        start = 0.0
        for end, _, _ in phases:
            # A zero-length phase would divide by zero when the schedule reaches it.
            if end == start:
                raise ValueError(
                    f"OneCycleLR: pct_start={self.pct_start} with total_steps={total} gives a "
                    "phase of zero steps; change pct_start or total_steps"
                )
            start = end
        return phases

    def _base_lr_from(self, trainer: TrainingSession) -> float:
        return self.initial_lr

    def _lr_at(self, step: int) -> float:
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR: tried to step {step} times; the cycle has total_steps="
                f"{self.total_steps}. Build a longer cycle to train further."
            )
        anneal = _anneal_cos if self.anneal_strategy == "cos" else _anneal_linear
        start = 0.0
        for index, (end, start_lr, end_lr) in enumerate(self._phases):
            if step <= end or index == len(self._phases) - 1:
                # Step total_steps lies past the last phase; a linear anneal goes below
                # zero there, which torch keeps but a learning rate cannot be.
                return max(anneal(start_lr, end_lr, (step - start) / (end - start)), 0.0)
            start = end
        raise AssertionError("unreachable: the last phase always matches")

    def _initial_lr(self) -> float:
        return self._lr_at(0)

    def _next_lr(self, epoch: int, metric: Any) -> float:
        return self._lr_at(epoch)

    def _config_args(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self._total_steps_arg,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "pct_start": self.pct_start,
            "anneal_strategy": self.anneal_strategy,
            "cycle_momentum": False,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "three_phase": self.three_phase,
        }
