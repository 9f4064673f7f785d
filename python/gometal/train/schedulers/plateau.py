"""``ReduceLROnPlateau``: lowers the rate when a monitored metric stops improving."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from ...base.json_floats import encode_float
from .base import LRScheduler, check_choice, check_int, check_real, decode_float

if TYPE_CHECKING:
    from ..session import TrainingSession


def _metric_value(metric: Any) -> float:
    if metric is None:
        raise ValueError(
            "ReduceLROnPlateau.step needs the monitored metric, e.g. step(val_loss); got None"
        )
    if isinstance(metric, (str, bytes, bool)) or np.ndim(metric) != 0:
        raise TypeError(f"ReduceLROnPlateau.step: metric must be a number, got {metric!r}")
    try:
        return float(metric)
    except (TypeError, ValueError) as err:
        raise TypeError(f"ReduceLROnPlateau.step: metric must be a number, got {metric!r}") from err


class ReduceLROnPlateau(LRScheduler):
    """Multiplies the rate by ``factor`` once the metric has not improved for more than
    ``patience`` steps (torch's ``ReduceLROnPlateau``, same rules).

    A value improves on the best so far when it is below ``best * (1 - threshold)``
    (``mode="min"``, ``threshold_mode="rel"``), below ``best - threshold`` (``"abs"``),
    or above ``best * (1 + threshold)`` / ``best + threshold`` in ``mode="max"``. After a
    reduction, ``cooldown`` steps pass during which bad steps are not counted. The rate
    never drops below ``min_lr``, and a reduction smaller than ``eps`` is skipped.

    ``fit`` passes the monitored validation loss when there is validation data, else the
    training loss.

    Args:
        trainer: attach to this trainer now (optional).
        mode: ``"min"`` (lower is better) or ``"max"``.
        factor: the multiplier applied on a plateau, in ``[0, 1)``.
        patience: bad steps tolerated before reducing (>= 0).
        threshold: the least change that counts as an improvement (>= 0).
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: steps to wait after a reduction before counting bad steps (>= 0).
        min_lr: the lowest rate (>= 0).
        eps: the smallest reduction applied (>= 0).
        interval: ``"epoch"`` or ``"batch"``.

    Example:
        >>> sched = gm.schedulers.ReduceLROnPlateau(trainer, factor=0.5, patience=2)  # doctest: +SKIP
        >>> sched.step(val_loss)  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: TrainingSession | None = None,
        *,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        interval: str = "epoch",
    ):
        owner = "ReduceLROnPlateau"
        self.mode = check_choice(owner, "mode", mode, ("min", "max"))
        self.factor = check_real(owner, "factor", factor, low=0.0, high=1.0, high_open=True)
        self.patience = check_int(owner, "patience", patience, 0)
        self.threshold = check_real(owner, "threshold", threshold, low=0.0)
        self.threshold_mode = check_choice(owner, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int(owner, "cooldown", cooldown, 0)
        self.min_lr = check_real(owner, "min_lr", min_lr, low=0.0)
        self.eps = check_real(owner, "eps", eps, low=0.0)
        self._reset_state()
        super().__init__(trainer, interval)

    @property
    def requires_metric(self) -> bool:
        return True

    @property
    def best(self) -> float:
        """The best metric seen so far (``inf`` in min mode, ``-inf`` in max, before any)."""
        return self._best

    @property
    def num_bad_epochs(self) -> int:
        """Steps since the last improvement (reset by a reduction and during cooldown)."""
        return self._num_bad_epochs

    @property
    def cooldown_counter(self) -> int:
        """Cooldown steps left."""
        return self._cooldown_counter

    def _reset_state(self) -> None:
        self._best = math.inf if self.mode == "min" else -math.inf
        self._num_bad_epochs = 0
        self._cooldown_counter = 0

    def _is_better(self, value: float) -> bool:
        best = self._best
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < best * (1.0 - self.threshold)
            return value < best - self.threshold
        if self.threshold_mode == "rel":
            return value > best * (self.threshold + 1.0)
        return value > best + self.threshold

    def _next_lr(self, epoch: int, metric: Any) -> float:
        value = _metric_value(metric)
        if self._is_better(value):
            self._best, self._num_bad_epochs = value, 0
        else:
            self._num_bad_epochs += 1
        if self._cooldown_counter > 0:
            self._cooldown_counter -= 1
            self._num_bad_epochs = 0
        lr = self.last_lr
        if self._num_bad_epochs > self.patience:
            reduced = max(lr * self.factor, self.min_lr)
            if lr - reduced > self.eps:
                lr = reduced
            self._cooldown_counter, self._num_bad_epochs = self.cooldown, 0
        return lr

    def _config_args(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "eps": self.eps,
        }

    def _extra_state(self) -> dict[str, Any]:
        return {
            "best": encode_float(self._best),
            "num_bad_epochs": self._num_bad_epochs,
            "cooldown_counter": self._cooldown_counter,
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        owner = "ReduceLROnPlateau"
        for key in ("best", "num_bad_epochs", "cooldown_counter"):
            if key not in state:
                raise ValueError(f"{owner} state: missing key {key!r}")
        best = decode_float(owner, "best", state["best"])
        counters = []
        for key in ("num_bad_epochs", "cooldown_counter"):
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise TypeError(f"{owner} state: {key} must be an integer >= 0, got {value!r}")
            if value < 0:
                raise ValueError(f"{owner} state: {key} must be an integer >= 0, got {value}")
            counters.append(int(value))
        self._best = best
        self._num_bad_epochs, self._cooldown_counter = counters
