"""Callbacks for ``Trainer.fit``: the base class, early stopping and checkpoints.

The loggers (``CSVLogger``, ``JSONLogger``) live in ``loggers.py`` and are re-exported
here, so ``gm.callbacks`` holds every callback.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .callback_base import Callback, overrides
from .loggers import CSVLogger, JSONLogger

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "JSONLogger",
    "ModelCheckpoint",
    "TerminateOnNaN",
    "overrides",
    "resolve_mode",
]

# Monitored names (without ``val_``) that improve upwards; everything else (losses,
# errors) improves downwards under mode="auto".
_HIGHER_IS_BETTER = ("acc", "auc", "f1", "precision", "recall", "r2", "iou", "dice", "kappa")


def resolve_mode(monitor: str, mode: str) -> str:
    """Returns ``"min"`` or ``"max"`` for ``monitor``.

    Args:
        monitor: a log key such as ``"val_loss"`` or ``"val_f1_macro"``.
        mode: ``"min"``, ``"max"`` or ``"auto"``; ``"auto"`` picks ``"max"`` for accuracy,
            AUC, F1, precision, recall, R², IoU, Dice and kappa, ``"min"`` otherwise.

    Returns:
        ``"min"`` or ``"max"``.

    Raises:
        ValueError: an unknown ``mode``.

    Example:
        >>> resolve_mode("val_accuracy", "auto")
        'max'
    """
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    base = monitor.removeprefix("val_")
    return "max" if base.startswith(_HIGHER_IS_BETTER) else "min"


def _check_monitor(owner: str, monitor: Any) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"{owner} monitor must be a log key such as 'val_loss', got {monitor!r}")
    return monitor


def _require_logged(owner: str, monitor: str, params: Mapping[str, Any]) -> None:
    keys = params.get("log_keys")
    if keys is not None and monitor not in keys:
        hint = " (val_* keys need fit(..., validation=...))" if monitor.startswith("val_") else ""
        raise ValueError(
            f"{owner} monitor {monitor!r} is not reported by this fit{hint}; "
            f"available keys: {', '.join(keys)}"
        )


def _monitored_value(owner: str, monitor: str, logs: Mapping[str, Any]) -> float:
    if monitor not in logs:
        raise ValueError(
            f"{owner} monitor {monitor!r} is missing from the epoch's logs; "
            f"available keys: {', '.join(logs)}"
        )
    value = logs[monitor]
    if np.ndim(value) != 0:
        raise TypeError(f"{owner} monitor {monitor!r} must be a number, got {value!r}")
    return float(value)


class _Best:
    """Tracks the best value of a monitored number under ``min``/``max`` and ``min_delta``."""

    def __init__(self, mode: str, min_delta: float):
        self.mode, self.min_delta = mode, min_delta
        self.value: float | None = None

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.value is None:
            return True
        if self.mode == "min":
            return value < self.value - self.min_delta
        return value > self.value + self.min_delta


def _check_non_negative(owner: str, name: str, value: Any, kind: type = int) -> Any:
    valid_type = (int, np.integer) if kind is int else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, valid_type):
        raise TypeError(f"{owner} {name} must be a non-negative {kind.__name__}, got {value!r}")
    if not value >= 0 or (kind is float and not math.isfinite(value)):
        raise ValueError(f"{owner} {name} must be >= 0, got {value!r}")
    return kind(value)


class EarlyStopping(Callback):
    """Stops training once ``monitor`` has not improved for ``patience`` epochs.

    An epoch improves when its value beats the best so far by more than ``min_delta``.
    Training stops at the end of the ``patience``-th epoch in a row without improvement,
    as in Keras (``patience`` 0 and 1 both stop at the first epoch that does not improve).
    The state resets at the start of each ``fit`` call. With ``restore_best``, the weights
    of the best epoch (every model weight, batch-norm statistics included; not the optimizer
    state) are copied at that epoch and put back when training ends (all epochs done,
    stopped early, or stopped by Ctrl-C).

    Args:
        monitor: the log key to watch, e.g. ``"val_loss"``, ``"val_accuracy"``, ``"loss"``.
        patience: epochs in a row without improvement before stopping (int >= 0).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (see ``resolve_mode``).
        min_delta: the smallest change that counts as an improvement (>= 0).
        restore_best: restore the best epoch's weights at the end of training.

    Attributes:
        best: the best value seen in this fit call. best_epoch: its epoch.
        stopped_epoch: the epoch after which training stopped, or ``None``.
        wait: epochs since the last improvement.

    Raises:
        ValueError: at the start of ``fit``, when ``monitor`` is not one of its log keys.

    Example:
        >>> stop = gm.callbacks.EarlyStopping("val_loss", patience=3, restore_best=True)
        >>> trainer.fit((x, y), 100, validation=(xv, yv), callbacks=[stop])  # doctest: +SKIP
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        mode: str = "auto",
        min_delta: float = 0.0,
        restore_best: bool = False,
    ):
        self.monitor = _check_monitor("EarlyStopping", monitor)
        self.patience = _check_non_negative("EarlyStopping", "patience", patience)
        self.mode = resolve_mode(self.monitor, mode)
        self.min_delta = _check_non_negative("EarlyStopping", "min_delta", min_delta, float)
        self.restore_best = bool(restore_best)
        self._reset()

    def _reset(self) -> None:
        self._best = _Best(self.mode, self.min_delta)
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.best_weights: dict[str, np.ndarray] | None = None

    @property
    def best(self) -> float | None:
        """The best monitored value in the current (or last) fit call."""
        return self._best.value

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _require_logged("EarlyStopping", self.monitor, self.params)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        value = _monitored_value("EarlyStopping", self.monitor, logs)
        if self._best.improves(value):
            self._best.value, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_weights = self.trainer.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best and self.best_weights is not None:
            self.trainer.model.set_weights(self.best_weights)
        if self.stopped_epoch is not None and self.params.get("verbose", 0) > 0:
            restored = ""
            if self.restore_best and self.best_weights is not None:
                restored = f"; restored the weights of epoch {self.best_epoch + 1}"
            print(
                f"early stopping after epoch {self.stopped_epoch + 1}: {self.monitor} did not "
                f"improve for {self.patience} epoch(s){restored}"
            )


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite, as Keras's.

    It sets ``trainer.stop_training``, so ``fit`` ends once that epoch is over; the
    weights are those the failed step left (usually NaN): restore a checkpoint, or lower
    the learning rate and start again.

    Attributes:
        stopped_epoch: the epoch of the batch that failed, or ``None``.
        stopped_batch: that batch's index within its epoch, or ``None``.

    Example:
        >>> trainer.fit((x, y), 10, callbacks=[gm.callbacks.TerminateOnNaN()])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.stopped_epoch: int | None = None
        self.stopped_batch: int | None = None
        self._epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.stopped_epoch = self.stopped_batch = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        loss = logs.get("loss")
        if loss is None or math.isfinite(loss) or self.stopped_batch is not None:
            return
        self.stopped_epoch, self.stopped_batch = self._epoch, batch
        self.trainer.stop_training = True
        if self.params.get("verbose", 0) > 0:
            print(
                f"epoch {self._epoch + 1}, batch {batch + 1}: the loss is {loss}; "
                "terminating training"
            )


_PERIODIC_NAME = re.compile(r"^epoch-(\d+)\.gmckpt$")


class ModelCheckpoint(Callback):
    """Saves the trainer with ``trainer.save(path)`` every few epochs and/or at each new best.

    Files, in ``directory``:

    * ``epoch-NNN.gmckpt`` every ``every_n_epochs`` epochs, where ``NNN`` is the number of
      completed epochs (``trainer.epoch``: ``epoch-003.gmckpt`` after the third epoch),
      zero-padded to 3 digits;
    * ``best.gmckpt`` whenever ``monitor`` improves on the best value in
      ``trainer.history`` (so a resumed run compares against the earlier epochs too).

    Each save happens after the epoch's scheduler step and history entry, so loading a file
    resumes exactly where that epoch left off. With ``keep_last=k`` only the ``k`` newest
    ``epoch-*.gmckpt`` files of the folder remain (a save completes before older files go);
    ``best.gmckpt`` is never deleted.

    Args:
        directory: the folder (created if missing).
        every_n_epochs: save every this many completed epochs; ``None`` for no periodic
            saves (then ``save_best`` must be on).
        save_best: also keep ``best.gmckpt``.
        monitor: the log key ``save_best`` watches.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (see ``resolve_mode``).
        keep_last: how many periodic checkpoints to keep; ``None`` keeps all.

    Attributes:
        saved: every path saved, in order. best: the best monitored value.

    Example:
        >>> ckpt = gm.callbacks.ModelCheckpoint("runs/a", save_best=True, keep_last=2)
        >>> trainer.fit(loader, 20, validation=val, callbacks=[ckpt])  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        every_n_epochs: int | None = 1,
        save_best: bool = False,
        monitor: str = "val_loss",
        mode: str = "auto",
        keep_last: int | None = None,
    ):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint directory must be a path, got {directory!r}")
        self.directory = Path(directory)
        if every_n_epochs is not None:
            every_n_epochs = _check_non_negative(
                "ModelCheckpoint", "every_n_epochs", every_n_epochs
            )
            if every_n_epochs == 0:
                raise ValueError("ModelCheckpoint every_n_epochs must be >= 1 (or None), got 0")
        if every_n_epochs is None and not save_best:
            raise ValueError(
                "ModelCheckpoint would never save: pass every_n_epochs >= 1 or save_best=True"
            )
        if keep_last is not None:
            keep_last = _check_non_negative("ModelCheckpoint", "keep_last", keep_last)
            if keep_last == 0:
                raise ValueError("ModelCheckpoint keep_last must be >= 1 (or None), got 0")
        self.every_n_epochs = every_n_epochs
        self.save_best = bool(save_best)
        self.monitor = _check_monitor("ModelCheckpoint", monitor)
        self.mode = resolve_mode(self.monitor, mode)
        self.keep_last = keep_last
        self.saved: list[Path] = []
        self._best = _Best(self.mode, 0.0)

    @property
    def best(self) -> float | None:
        """The best monitored value (including earlier epochs in ``trainer.history``)."""
        return self._best.value

    @staticmethod
    def periodic_name(completed_epochs: int) -> str:
        """The file name of the checkpoint written after ``completed_epochs`` epochs.

        Example:
            >>> ModelCheckpoint.periodic_name(3)
            'epoch-003.gmckpt'
        """
        return f"epoch-{completed_epochs:03d}.gmckpt"

    best_name = "best.gmckpt"

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not callable(getattr(self.trainer, "save", None)):
            raise TypeError("ModelCheckpoint needs Trainer.save(path), which this trainer lacks")
        if self.save_best:
            _require_logged("ModelCheckpoint", self.monitor, self.params)
            self._best = _Best(self.mode, 0.0)
            history = self.trainer.history
            if self.monitor in history:
                for value in history[self.monitor]:
                    if isinstance(value, (int, float)) and self._best.improves(float(value)):
                        self._best.value = float(value)
        self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        completed = epoch + 1
        if self.every_n_epochs is not None and completed % self.every_n_epochs == 0:
            self._save(self.directory / self.periodic_name(completed))
            if self.keep_last is not None:
                self._prune()
        if self.save_best:
            value = _monitored_value("ModelCheckpoint", self.monitor, logs)
            if self._best.improves(value):
                self._best.value = value
                self._save(self.directory / self.best_name)

    def _save(self, path: Path) -> None:
        self.trainer.save(os.fspath(path))
        self.saved.append(path)

    def periodic_checkpoints(self) -> list[Path]:
        """The ``epoch-*.gmckpt`` entries in the folder, oldest epoch first.

        Example:
            >>> [p.name for p in ckpt.periodic_checkpoints()]  # doctest: +SKIP
            ['epoch-004.gmckpt', 'epoch-005.gmckpt']
        """
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = _PERIODIC_NAME.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return [entry for _, entry in sorted(found)]

    def _prune(self) -> None:
        assert self.keep_last is not None
        for entry in self.periodic_checkpoints()[: -self.keep_last]:
            # A checkpoint may be a file or a folder, depending on Trainer.save's format.
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)


def check_callbacks(callbacks: Any) -> list[Callback]:
    """Validates ``fit``'s ``callbacks`` argument.

    Args:
        callbacks: a sequence of ``Callback`` instances (or one, or ``None``).

    Returns:
        The callbacks as a list.

    Raises:
        TypeError: an item is not a ``Callback``.

    Example:
        >>> check_callbacks([EarlyStopping()])  # doctest: +SKIP
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if not isinstance(callbacks, Sequence) or isinstance(callbacks, str):
        raise TypeError(f"callbacks must be a list of gm.callbacks.Callback, got {callbacks!r}")
    for item in callbacks:
        if not isinstance(item, Callback):
            raise TypeError(
                "callbacks must hold gm.callbacks.Callback instances, got "
                f"{type(item).__name__} {item!r}"
            )
    return list(callbacks)
