"""The scheduler base class, argument checks, and rebuilding a scheduler from its config.

A scheduler owns its rate as a Python float (float64) and writes it into the trainer's
runtime learning-rate scalar after every step, so the compiled training step picks it up
with no recompilation. Chainable schedules (StepLR, ExponentialLR, CosineAnnealingLR, ...)
update the scheduler's own previous rate, as ``torch.optim.lr_scheduler`` updates the
optimizer's; a rate set on the trainer by hand is overwritten at the next ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from ...base.json_floats import NON_FINITE

if TYPE_CHECKING:  # imported for hints only: the trainer may import this package
    from ..session import TrainingSession

INTERVALS = ("epoch", "batch")
_REGISTRY: dict[str, type[LRScheduler]] = {}


# -- argument checks --------------------------------------------------------------------------
def check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    """Returns ``value`` as an int, or raises if it is not an integer ``>= minimum``.

    Args:
        owner: the class whose argument this is, for the message.
        name: the argument's name.
        value: the value received.
        minimum: the smallest value accepted.

    Returns:
        The value as a Python int.

    Example:
        >>> check_int("StepLR", "step_size", 3, 1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_real(
    owner: str,
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Returns ``value`` as a float, or raises if it is not a finite number in the range.

    Args:
        owner: the class whose argument this is, for the message.
        name: the argument's name.
        value: the value received.
        low: the lower bound.
        high: the upper bound.
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Returns:
        The value as a Python float.

    Example:
        >>> check_real("StepLR", "gamma", 0.5, low=0.0)
        0.5
    """
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    expected = f"a finite number in {left}{low:g}, {high:g}{right}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: {name} must be {expected}, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value}")
    return value


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Returns ``value`` if it is one of ``choices``, else raises ``ValueError``.

    Args:
        owner: the class whose argument this is, for the message.
        name: the argument's name.
        value: the value received.
        choices: the accepted strings.

    Returns:
        The value.

    Example:
        >>> check_choice("ReduceLROnPlateau", "mode", "min", ("min", "max"))
        'min'
    """
    if value not in choices:
        options = " or ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: {name} must be {options}, got {value!r}")
    return value


def exact_rate(value: float) -> float:
    """The float64 learning rate a user most likely wrote, given the engine's float32 copy.

    The engine keeps the rate as float32, so ``0.1`` reads back as ``0.10000000149...``.
    The shortest decimal that rounds to the same float32 recovers the typed value, and
    keeps a schedule computed from it identical to torch's float64 arithmetic.

    Args:
        value: a learning rate read from the engine.

    Returns:
        The shortest decimal with the same float32 value, as a float.

    Example:
        >>> exact_rate(0.10000000149011612)
        0.1
    """
    return float(str(np.float32(value)))


def decode_float(owner: str, name: str, value: Any) -> float:
    """Reverses ``encode_float``; raises ``TypeError`` naming ``name`` for anything else."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner} state: {name} must be a number, got {value!r}")
    return float(value)


def check_trainer(owner: str, trainer: Any) -> None:
    if not (hasattr(trainer, "set_learning_rate") and hasattr(trainer, "learning_rate")):
        raise TypeError(f"{owner}: trainer must be a gm.Trainer, got {type(trainer).__name__}")


def _state_number(owner: str, state: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in state:
        raise ValueError(f"{owner} state: missing key {key!r}")
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, Integral if kind is int else Real):
        expected = "an integer" if kind is int else "a number"
        raise TypeError(f"{owner} state: {key} must be {expected}, got {value!r}")
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{owner} state: {key} must be finite and >= 0, got {value}")
    return kind(value)


# -- the base class ---------------------------------------------------------------------------
class LRScheduler:
    """Base class: a learning-rate schedule written into a trainer's runtime rate.

    Subclasses set their parameters, then call ``super().__init__(trainer, interval)``
    (which attaches when ``trainer`` is given), and implement ``_next_lr``; they may
    override ``_initial_lr``, ``_base_lr_from``, ``_config_args`` and the extra-state
    hooks.

    Attributes:
        interval: ``"epoch"`` or ``"batch"``: when ``fit`` calls ``step``.

    Example:
        >>> sched = gm.schedulers.StepLR(trainer, step_size=10, gamma=0.5)  # doctest: +SKIP
        >>> sched.step()  # doctest: +SKIP
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __init__(self, trainer: TrainingSession | None = None, interval: str = "epoch"):
        self.interval = check_choice(type(self).__name__, "interval", interval, INTERVALS)
        self._trainer: Any = None
        self._base_lr: float | None = None
        self._last_epoch = 0
        self._last_lr: float | None = None
        if trainer is not None:
            self.attach(trainer)

    # -- hooks for subclasses -------------------------------------------------------------
    def _base_lr_from(self, trainer: TrainingSession) -> float:
        """The base rate, read on the first attach; torch's ``initial_lr``."""
        return exact_rate(trainer.learning_rate)

    def _reset_state(self) -> None:
        """Starts the subclass's own state (counters, best metric) from scratch."""

    def _initial_lr(self) -> float:
        """The rate at step 0, which ``attach`` sets (torch's constructor does the same)."""
        assert self._base_lr is not None
        return self._base_lr

    def _next_lr(self, epoch: int, metric: Any) -> float:
        """The rate at step ``epoch`` (``last_epoch + 1``), from the current state."""
        raise NotImplementedError

    def _config_args(self) -> dict[str, Any]:
        """The constructor's arguments (without ``trainer`` and ``interval``)."""
        return {}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Checks and loads the subclass's own keys of ``state`` (all-or-nothing)."""

    @classmethod
    def _from_config_args(cls, args: dict[str, Any]) -> LRScheduler:
        return cls(**args)

    # -- public API -----------------------------------------------------------------------
    @property
    def requires_metric(self) -> bool:
        """Whether ``step`` needs the monitored metric (``ReduceLROnPlateau``)."""
        return False

    def attach(self, trainer: TrainingSession) -> LRScheduler:
        """Binds the scheduler to ``trainer`` and sets the trainer's rate to the schedule's.

        The first attach of a fresh scheduler reads ``base_lr`` from
        ``trainer.learning_rate`` (unless the scheduler's own parameters fix it, as
        ``OneCycleLR``'s ``max_lr`` does) and starts the schedule at step 0. Attaching a
        scheduler that already has a state (attached before, or given one by
        ``load_state_dict``) keeps that state and sets the trainer's rate to ``last_lr``,
        so a resumed run continues where it stopped.

        Args:
            trainer: the ``gm.Trainer`` whose learning rate this schedules.

        Returns:
            The scheduler itself.

        Example:
            >>> sched = gm.schedulers.ExponentialLR(gamma=0.9).attach(trainer)  # doctest: +SKIP
        """
        check_trainer(type(self).__name__, trainer)
        if self._base_lr is None:
            base_lr = self._base_lr_from(trainer)
            self._base_lr, self._last_epoch = base_lr, 0
            self._reset_state()
            self._last_lr = self._initial_lr()
        trainer.set_learning_rate(self._last_lr)
        self._trainer = trainer
        return self

    @property
    def trainer(self) -> TrainingSession | None:
        """The trainer this scheduler is attached to, or ``None``."""
        return self._trainer

    def _require_trainer(self) -> Any:
        if self._trainer is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached to a trainer; pass trainer= to the "
                "constructor or call attach(trainer) first"
            )
        return self._trainer

    def _require_state(self) -> float:
        if self._last_lr is None:
            raise RuntimeError(
                f"{type(self).__name__} has no rate yet: attach it to a trainer or load a state"
            )
        return self._last_lr

    def step(self, metric: Any = None) -> float:
        """Advances the schedule by one epoch or batch and sets the trainer's new rate.

        Args:
            metric: the monitored value; required by ``ReduceLROnPlateau``, ignored by the
                other schedulers.

        Returns:
            The new learning rate.

        Example:
            >>> lr = sched.step()  # doctest: +SKIP
        """
        trainer = self._require_trainer()
        epoch = self._last_epoch + 1
        lr = self._next_lr(epoch, metric)
        trainer.set_learning_rate(lr)
        self._last_epoch, self._last_lr = epoch, lr
        return lr

    @property
    def last_lr(self) -> float:
        """The rate set by the latest ``attach`` or ``step`` (float64)."""
        return self._require_state()

    def get_last_lr(self) -> list[float]:
        """The latest rate, as a one-element list like torch's ``get_last_lr()``.

        Returns:
            ``[last_lr]``.

        Example:
            >>> sched.get_last_lr()  # doctest: +SKIP
            [0.1]
        """
        return [self._require_state()]

    @property
    def last_epoch(self) -> int:
        """How many times ``step`` has run (torch's ``last_epoch``; batches when per batch)."""
        return self._last_epoch

    @property
    def base_lr(self) -> float | None:
        """The rate the schedule starts from (torch's ``base_lrs[0]``); ``None`` before attach."""
        return self._base_lr

    def state_dict(self) -> dict[str, Any]:
        """The schedule's progress, JSON-serializable (numbers, strings, dicts).

        Returns:
            A dict with ``class_name``, ``last_epoch``, ``base_lr``, ``last_lr`` and the
            scheduler's own counters.

        Example:
            >>> state = sched.state_dict()  # doctest: +SKIP
        """
        last_lr = self._require_state()
        return {
            "class_name": type(self).__name__,
            "last_epoch": self._last_epoch,
            "base_lr": self._base_lr,
            "last_lr": last_lr,
            **self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores progress saved by ``state_dict``; sets an attached trainer's rate.

        Args:
            state: a dict from ``state_dict`` of the same scheduler class (possibly through
                ``json.dumps``/``json.loads``).

        Example:
            >>> sched.load_state_dict(json.loads(saved))  # doctest: +SKIP
        """
        owner = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"{owner}.load_state_dict: state must be a dict, got {state!r}")
        if state.get("class_name") != owner:
            raise ValueError(
                f"{owner}.load_state_dict: the state is of {state.get('class_name')!r}, "
                f"expected {owner!r}"
            )
        last_epoch = _state_number(owner, state, "last_epoch", int)
        base_lr = _state_number(owner, state, "base_lr", float)
        last_lr = _state_number(owner, state, "last_lr", float)
        self._load_extra_state(state)
        self._last_epoch, self._base_lr, self._last_lr = last_epoch, base_lr, last_lr
        if self._trainer is not None:
            self._trainer.set_learning_rate(last_lr)

    def get_config(self) -> dict[str, Any]:
        """The class name and constructor arguments, JSON-serializable.

        Returns:
            ``{"class_name": ..., "config": {...arguments..., "interval": ...}}``; give it
            to ``gm.schedulers.from_config`` to build the same scheduler again.

        Example:
            >>> gm.schedulers.StepLR(step_size=2).get_config()
            {'class_name': 'StepLR', 'config': {'step_size': 2, 'gamma': 0.1, 'interval': 'epoch'}}
        """
        return {
            "class_name": type(self).__name__,
            "config": {**self._config_args(), "interval": self.interval},
        }

    def __repr__(self) -> str:
        args = {**self._config_args(), "interval": self.interval}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def from_config(config: Mapping[str, Any]) -> LRScheduler:
    """Builds a scheduler from ``get_config()``'s output (not attached to any trainer).

    Args:
        config: ``{"class_name": ..., "config": {...}}``.

    Returns:
        A new, unattached scheduler: call ``load_state_dict`` to restore progress, then
        ``attach(trainer)``.

    Example:
        >>> sched = gm.schedulers.from_config({"class_name": "StepLR",
        ...                                    "config": {"step_size": 2}})
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("config"), Mapping):
        raise TypeError(
            "scheduler config must be a dict {'class_name': ..., 'config': {...}}, "
            f"got {config!r}"
        )
    name = config.get("class_name")
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown scheduler class_name {name!r}; known schedulers: {known}")
    cls = _REGISTRY[name]
    try:
        return cls._from_config_args(dict(config["config"]))
    except TypeError as err:
        raise ValueError(f"bad config for {name}: {err}") from err
