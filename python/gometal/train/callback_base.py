"""``Callback``: the hooks ``Trainer.fit`` calls."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import TrainingSession


class Callback:
    """Base class: override the hooks you need; ``fit`` calls them in list order.

    ``fit`` sets ``self.trainer`` (the trainer being fitted) and ``self.params`` (``epochs``
    of this call, ``initial_epoch``, ``steps`` per epoch or ``None``, ``verbose`` and
    ``log_keys``, the keys every epoch's ``logs`` will hold) before ``on_train_begin``.
    Epoch numbers are 0-based and count on across ``fit`` calls (``trainer.epoch``). Set
    ``self.trainer.stop_training = True`` to stop after the current epoch.

    Example:
        >>> class PrintLoss(gm.callbacks.Callback):
        ...     def on_epoch_end(self, epoch, logs):
        ...         print(epoch, logs["loss"])
    """

    trainer: Any = None
    # Read-only until fit calls set_params, which gives each instance its own dict.
    params: Mapping[str, Any] = MappingProxyType({})

    def set_trainer(self, trainer: TrainingSession) -> None:
        """Binds the trainer being fitted."""
        self.trainer = trainer

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Receives the fit call's parameters (see the class docstring)."""
        self.params = dict(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called once when ``fit`` starts, before the first epoch."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Called once when ``fit`` ends normally, early stops or is interrupted by Ctrl-C;
        ``logs`` are the last complete epoch's (``{}`` if none)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called before epoch ``epoch`` trains."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """Called after epoch ``epoch`` and its validation, with that epoch's results
        (the keys of ``History``)."""

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        """Called after each training step with ``loss``, ``accuracy`` (the batch's,
        before its update), ``size`` (samples) and ``lr``; ``batch`` counts from 0 in each
        epoch."""


def overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` implements ``hook`` (so ``fit`` can skip no-op per-batch calls)."""
    return getattr(type(callback), hook) is not getattr(Callback, hook)
