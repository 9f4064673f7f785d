"""``LinearWarmup``: a linear ramp in front of any other scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import LRScheduler, check_choice, check_int, check_real, check_trainer, from_config

if TYPE_CHECKING:
    from ..session import TrainingSession


class LinearWarmup(LRScheduler):
    """Ramps the rate up linearly for ``warmup_steps`` steps, then runs ``scheduler``.

    With ``target`` the wrapped scheduler's ``base_lr`` (the trainer's rate when it is
    attached; ``max_lr / div_factor`` for ``OneCycleLR``):

    - steps ``t < warmup_steps``: ``target * (start_factor + (1 - start_factor) * t /
      warmup_steps)``; the wrapped scheduler does not move;
    - step ``warmup_steps``: the wrapped scheduler's rate at its step 0 (``target``
      itself, except for schedules that start elsewhere, e.g. ``ConstantLR``'s
      ``target * factor``);
    - step ``warmup_steps + k``: the wrapped scheduler's step ``k``.

    So the wrapped schedule is delayed by ``warmup_steps``: give it the length of the
    training after the warmup (e.g. ``T_max = total - warmup_steps``). This equals torch's
    ``SequentialLR(opt, [LinearLR(opt, start_factor, end_factor=1.0,
    total_iters=warmup_steps), inner], milestones=[warmup_steps])``. Unlike
    ``SequentialLR`` it also wraps ``ReduceLROnPlateau``: metrics passed to ``step``
    during the warmup (and at step ``warmup_steps``, which still measures a warmup
    epoch) are ignored; later ones go to the plateau scheduler.

    Args:
        scheduler: the scheduler to run after the warmup; not stepped yet. It is attached
            to the same trainer.
        warmup_steps: the length of the warmup, in steps (>= 1).
        start_factor: the first step's fraction of ``target``, in ``[0, 1]``.
        trainer: attach to this trainer now (optional).
        interval: ``"epoch"`` or ``"batch"``; ``None`` takes the wrapped scheduler's.
            Both step together, so a different value is an error.

    Example:
        >>> cosine = gm.schedulers.CosineAnnealingLR(T_max=95)
        >>> sched = gm.schedulers.LinearWarmup(cosine, warmup_steps=5,
        ...                                    trainer=trainer)  # doctest: +SKIP
    """

    def __init__(
        self,
        scheduler: LRScheduler,
        warmup_steps: int,
        start_factor: float = 1.0 / 3,
        *,
        trainer: TrainingSession | None = None,
        interval: str | None = None,
    ):
        owner = "LinearWarmup"
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(
                f"{owner}: scheduler must be a gm.schedulers scheduler, got {scheduler!r}"
            )
        self.scheduler = scheduler
        self.warmup_steps = check_int(owner, "warmup_steps", warmup_steps, 1)
        self.start_factor = check_real(owner, "start_factor", start_factor, low=0.0, high=1.0)
        if interval is not None:
            check_choice(owner, "interval", interval, ("epoch", "batch"))
            if interval != scheduler.interval:
                raise ValueError(
                    f"{owner}: interval={interval!r} differs from the wrapped scheduler's "
                    f"interval={scheduler.interval!r}; they step together"
                )
        super().__init__(trainer, scheduler.interval)

    @property
    def requires_metric(self) -> bool:
        return self.scheduler.requires_metric

    def _warmup_lr(self, step: int) -> float:
        fraction = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return self.base_lr * fraction

    def attach(self, trainer: TrainingSession) -> LinearWarmup:
        """Attaches the wrapped scheduler and this warmup to ``trainer``.

        A fresh warmup takes as its target the wrapped scheduler's ``base_lr`` and sets
        the trainer's rate to ``start_factor * target``; a warmup with a state keeps it
        (see ``LRScheduler.attach``).

        Args:
            trainer: the ``gm.Trainer`` whose learning rate this schedules.

        Returns:
            The warmup scheduler itself.

        Example:
            >>> sched = gm.schedulers.LinearWarmup(inner, 5).attach(trainer)  # doctest: +SKIP
        """
        check_trainer("LinearWarmup", trainer)
        self.scheduler.attach(trainer)
        if self._base_lr is None:
            if self.scheduler.last_epoch != 0:
                raise ValueError(
                    "LinearWarmup: the wrapped scheduler has already been stepped "
                    f"({self.scheduler.last_epoch} steps); wrap a scheduler that has not"
                )
            self._base_lr, self._last_epoch = self.scheduler.base_lr, 0
            self._last_lr = self._warmup_lr(0)
        trainer.set_learning_rate(self._last_lr)
        self._trainer = trainer
        return self

    def step(self, metric: Any = None) -> float:
        trainer = self._require_trainer()
        epoch = self._last_epoch + 1
        if epoch < self.warmup_steps:
            lr = self._warmup_lr(epoch)
            trainer.set_learning_rate(lr)
        elif epoch == self.warmup_steps:
            lr = self.scheduler.last_lr
            trainer.set_learning_rate(lr)
        else:
            lr = self.scheduler.step(metric)
        self._last_epoch, self._last_lr = epoch, lr
        return lr

    def _config_args(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler.get_config(),
            "warmup_steps": self.warmup_steps,
            "start_factor": self.start_factor,
        }

    @classmethod
    def _from_config_args(cls, args: dict[str, Any]) -> LRScheduler:
        if "scheduler" not in args:
            raise ValueError("LinearWarmup config: missing key 'scheduler'")
        args["scheduler"] = from_config(args["scheduler"])
        return cls(**args)

    def _extra_state(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        if "scheduler" not in state:
            raise ValueError("LinearWarmup state: missing key 'scheduler'")
        self.scheduler.load_state_dict(state["scheduler"])

    def __repr__(self) -> str:
        return (
            f"LinearWarmup({self.scheduler!r}, warmup_steps={self.warmup_steps}, "
            f"start_factor={self.start_factor!r}, interval={self.interval!r})"
        )
