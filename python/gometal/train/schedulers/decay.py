"""Fixed-shape schedules: constant, step, multi-step, exponential and cosine annealing.

Each follows ``torch.optim.lr_scheduler``'s update rule for the same arguments, including
its chained (recursive) form where torch uses one, so the rates agree to rounding.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from numbers import Integral
from typing import TYPE_CHECKING, Any

from .base import LRScheduler, check_int, check_real

if TYPE_CHECKING:
    from ..session import TrainingSession


class Constant(LRScheduler):
    """Keeps the learning rate fixed: the trainer's current rate, or ``lr`` when given.

    Args:
        trainer: attach to this trainer now (optional).
        lr: the fixed rate; ``None`` keeps the trainer's rate at attach time.
        interval: ``"epoch"`` or ``"batch"``.

    Example:
        >>> sched = gm.schedulers.Constant(trainer, lr=0.01)  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: TrainingSession | None = None,
        *,
        lr: float | None = None,
        interval: str = "epoch",
    ):
        self.lr = None if lr is None else check_real("Constant", "lr", lr, low=0.0)
        super().__init__(trainer, interval)

    def _base_lr_from(self, trainer: TrainingSession) -> float:
        return super()._base_lr_from(trainer) if self.lr is None else self.lr

    def _next_lr(self, epoch: int, metric: Any) -> float:
        return self.last_lr

    def _config_args(self) -> dict[str, Any]:
        return {"lr": self.lr}


class ConstantLR(LRScheduler):
    """Multiplies the rate by ``factor`` for the first ``total_iters`` steps (torch's
    ``ConstantLR``): ``base_lr * factor`` while ``step < total_iters``, then ``base_lr``.

    Args:
        trainer: attach to this trainer now (optional).
        factor: the multiplier, in ``[0, 1]``.
        total_iters: how many steps the multiplier lasts (>= 1).
        interval: ``"epoch"`` or ``"batch"``.

    Example:
        >>> sched = gm.schedulers.ConstantLR(trainer, factor=0.5, total_iters=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: TrainingSession | None = None,
        *,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        interval: str = "epoch",
    ):
        self.factor = check_real("ConstantLR", "factor", factor, low=0.0, high=1.0)
        self.total_iters = check_int("ConstantLR", "total_iters", total_iters, 1)
        super().__init__(trainer, interval)

    def _initial_lr(self) -> float:
        return self.base_lr * self.factor

    def _next_lr(self, epoch: int, metric: Any) -> float:
        return self.base_lr * self.factor if epoch < self.total_iters else self.base_lr

    def _config_args(self) -> dict[str, Any]:
        return {"factor": self.factor, "total_iters": self.total_iters}


class StepLR(LRScheduler):
    """Multiplies the rate by ``gamma`` every ``step_size`` steps (torch's ``StepLR``).

    Args:
        trainer: attach to this trainer now (optional).
        step_size: the period of the decay, in steps (>= 1).
        gamma: the multiplier (>= 0).
        interval: ``"epoch"`` or ``"batch"``.

    Example:
        >>> sched = gm.schedulers.StepLR(trainer, step_size=30, gamma=0.1)  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: TrainingSession | None = None,
        *,
        step_size: int,
        gamma: float = 0.1,
        interval: str = "epoch",
    ):
        self.step_size = check_int("StepLR", "step_size", step_size, 1)
        self.gamma = check_real("StepLR", "gamma", gamma, low=0.0)
        super().__init__(trainer, interval)

    def _next_lr(self, epoch: int, metric: Any) -> float:
        # Chained like torch: the previous rate times gamma, not base_lr * gamma**k.
        return self.last_lr * self.gamma if epoch % self.step_size == 0 else self.last_lr

    def _config_args(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma}


class MultiStepLR(LRScheduler):
    """Multiplies the rate by ``gamma`` at each milestone (torch's ``MultiStepLR``); a
    milestone listed ``n`` times multiplies by ``gamma**n``, as in torch.

    Args:
        trainer: attach to this trainer now (optional).
        milestones: non-empty, non-decreasing step indices (>= 0).
        gamma: the multiplier (>= 0).
        interval: ``"epoch"`` or ``"batch"``.

    Example:
        >>> sched = gm.schedulers.MultiStepLR(trainer, milestones=[30, 80])  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: TrainingSession | None = None,
        *,
        milestones: Iterable[int],
        gamma: float = 0.1,
        interval: str = "epoch",
    ):
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
            raise TypeError(
                f"MultiStepLR: milestones must be a list of integers, got {milestones!r}"
            )
        values = list(milestones)
        if not values:
            raise ValueError("MultiStepLR: milestones must be a non-empty list, got []")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ValueError(
                    f"MultiStepLR: milestones must be integers >= 0, got {values} "
                    f"(offending value {value!r})"
                )
        if values != sorted(values):
            raise ValueError(f"MultiStepLR: milestones must be in increasing order, got {values}")
        self.milestones = [int(v) for v in values]
        self._counts = Counter(self.milestones)
        self.gamma = check_real("MultiStepLR", "gamma", gamma, low=0.0)
        super().__init__(trainer, interval)

    def _initial_lr(self) -> float:
        return self.base_lr * self.gamma ** self._counts[0] if 0 in self._counts else self.base_lr

    def _next_lr(self, epoch: int, metric: Any) -> float:
        if epoch not in self._counts:
            return self.last_lr
        return self.last_lr * self.gamma ** self._counts[epoch]

    def _config_args(self) -> dict[str, Any]:
        return {"milestones": list(self.milestones), "gamma": self.gamma}


class ExponentialLR(LRScheduler):
    """Multiplies the rate by ``gamma`` at every step (torch's ``ExponentialLR``).

    Args:
        trainer: attach to this trainer now (optional).
        gamma: the multiplier (>= 0).
        interval: ``"epoch"`` or ``"batch"``.

    Example:
        >>> sched = gm.schedulers.ExponentialLR(trainer, gamma=0.95)  # doctest: +SKIP
    """

    def __init__(
        self, trainer: TrainingSession | None = None, *, gamma: float, interval: str = "epoch"
    ):
        self.gamma = check_real("ExponentialLR", "gamma", gamma, low=0.0)
        super().__init__(trainer, interval)

    def _next_lr(self, epoch: int, metric: Any) -> float:
        return self.last_lr * self.gamma

    def _config_args(self) -> dict[str, Any]:
        return {"gamma": self.gamma}


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` steps (torch's
    ``CosineAnnealingLR``, without restarts; past ``T_max`` the cosine rises again).

    The rate follows torch's recursive update rather than the closed form
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``: each step scales
    ``last_lr - eta_min`` by the ratio of consecutive cosine terms, and at the trough
    (where that ratio is undefined) adds back one step's rise. The two agree in exact
    arithmetic but drift apart in rounding; this keeps torch's numbers.

    Args:
        trainer: attach to this trainer now (optional).
        T_max: the half-period, in steps (>= 1).
        eta_min: the lowest rate (>= 0).
        interval: ``"epoch"`` or ``"batch"``.

    Example:
        >>> sched = gm.schedulers.CosineAnnealingLR(trainer, T_max=100)  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: TrainingSession | None = None,
        *,
        T_max: int,
        eta_min: float = 0.0,
        interval: str = "epoch",
    ):
        self.T_max = check_int("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = check_real("CosineAnnealingLR", "eta_min", eta_min, low=0.0)
        super().__init__(trainer, interval)

    def _next_lr(self, epoch: int, metric: Any) -> float:
        t_max, eta_min, last = self.T_max, self.eta_min, self.last_lr
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            # Leaving the trough: cos(pi * (epoch - 1) / T_max) = -1 would divide by zero.
            return last + (self.base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        ratio = (1 + math.cos(math.pi * epoch / t_max)) / (
            1 + math.cos(math.pi * (epoch - 1) / t_max)
        )
        return ratio * (last - eta_min) + eta_min

    def _config_args(self) -> dict[str, Any]:
        return {"T_max": self.T_max, "eta_min": self.eta_min}
