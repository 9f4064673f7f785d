"""``History``: what ``Trainer.fit`` measured, one entry per completed epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..base.json_floats import NON_FINITE, encode_float

# The keys every fit records, in display order; validation metrics follow val_accuracy.
STANDARD_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time")
_FORMAT_VERSION = 1


def to_plain(value: Any) -> Any:
    """Converts NumPy scalars and arrays to Python floats, ints and nested lists.

    Args:
        value: a logged value.

    Returns:
        A value ``json.dumps`` accepts (arrays become nested lists).

    Example:
        >>> to_plain(np.float32(0.5))
        0.5
    """
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


def _encode(value: Any) -> Any:
    # Strict JSON has no NaN or infinity (checkpoints refuse them): write them as strings.
    value = to_plain(value)
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, list):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


class History:
    """Per-epoch training and validation results, accumulated across ``fit`` calls.

    ``history.history`` maps each key (``loss``, ``accuracy``, ``val_loss``,
    ``val_accuracy``, ``val_<metric>``, ``lr``, ``time``) to a list with one value per
    epoch, as Keras does; ``history.epoch`` lists the epoch numbers (0-based, counting on
    across ``fit`` calls). A key that an epoch did not report holds ``None`` there, so every
    list has ``len(history)`` entries. ``loss`` and ``accuracy`` are the sample-weighted
    means over the epoch's training batches, each measured before its update; ``val_*``
    are measured on the validation data after the epoch; ``lr`` is the learning rate of the
    epoch's last step; ``time`` is the epoch's wall time in seconds, validation included.

    Attributes:
        history: key -> list of per-epoch values.
        epoch: the epoch numbers, 0-based.
        interrupted: ``True`` when the latest ``fit`` call stopped early on Ctrl-C.

    Example:
        >>> history = trainer.fit((x, y), epochs=3)  # doctest: +SKIP
        >>> history.loss[-1], history.history["val_accuracy"]  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.history: dict[str, list[Any]] = {}
        self.epoch: list[int] = []
        self.interrupted = False

    def record(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """Appends one epoch's results.

        Args:
            epoch: the epoch number (0-based).
            logs: key -> value for this epoch; new keys are back-filled with ``None``.

        Example:
            >>> h = History(); h.record(0, {"loss": 0.7}); h.loss
            [0.7]
        """
        count = len(self.epoch)
        for key in logs:
            self.history.setdefault(key, [None] * count)
        for key, values in self.history.items():
            values.append(to_plain(logs[key]) if key in logs else None)
        self.epoch.append(int(epoch))

    def __len__(self) -> int:
        return len(self.epoch)

    def __getitem__(self, key: str) -> list[Any]:
        return self.history[key]

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def __iter__(self) -> Iterator[str]:
        return iter(self.history)

    def __getattr__(self, name: str) -> list[Any]:
        # Only reached for names that are not real attributes: expose the per-epoch lists
        # (history.loss, history.val_f1_macro). The guard keeps copy and pickle working.
        history = self.__dict__.get("history")
        if history is not None and name in history:
            return history[name]
        if name in STANDARD_KEYS or name.startswith("val_"):
            raise AttributeError(
                f"History has no {name!r} values; recorded keys: {sorted(history or {})}"
            )
        raise AttributeError(f"'History' object has no attribute {name!r}")

    @property
    def last(self) -> dict[str, Any]:
        """The latest epoch's values, ``{}`` before the first epoch."""
        if not self.epoch:
            return {}
        return {key: values[-1] for key, values in self.history.items()}

    def best(self, monitor: str = "val_loss", mode: str = "min") -> tuple[int, float]:
        """The epoch with the best value of ``monitor``.

        Args:
            monitor: a recorded key.
            mode: ``"min"`` or ``"max"``.

        Returns:
            ``(epoch number, value)``; epochs without a value are skipped.

        Raises:
            KeyError: ``monitor`` was never recorded, or has no value yet.
            ValueError: ``mode`` is neither ``"min"`` nor ``"max"``.

        Example:
            >>> history.best("val_accuracy", "max")  # doctest: +SKIP
            (7, 0.982)
        """
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if monitor not in self.history:
            raise KeyError(f"{monitor!r} was not recorded; recorded keys: {sorted(self.history)}")
        scored = [
            (value, epoch)
            for epoch, value in zip(self.epoch, self.history[monitor])
            if isinstance(value, (int, float)) and not math.isnan(value)
        ]
        if not scored:
            raise KeyError(f"{monitor!r} has no numeric value yet")
        value, epoch = min(scored) if mode == "min" else max(scored, key=lambda s: (s[0], -s[1]))
        return epoch, value

    def to_dict(self) -> dict[str, Any]:
        """A copy as strict JSON data (what a checkpoint stores).

        Returns:
            ``{"version", "epoch", "history", "interrupted"}`` with plain lists and numbers;
            NaN and infinities become the strings ``"nan"``, ``"inf"`` and ``"-inf"``, which
            ``from_dict`` turns back into floats.

        Example:
            >>> restored = History.from_dict(json.loads(json.dumps(h.to_dict())))  # doctest: +SKIP
        """
        return {
            "version": _FORMAT_VERSION,
            "epoch": list(self.epoch),
            "history": {key: [_encode(v) for v in values] for key, values in self.history.items()},
            "interrupted": self.interrupted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Rebuilds a ``History`` from ``to_dict()`` output.

        Args:
            data: a mapping as returned by ``to_dict``.

        Returns:
            A new ``History`` equal to the one saved.

        Raises:
            ValueError: ``data`` is malformed (missing keys, lists of the wrong length).

        Example:
            >>> History.from_dict(History().to_dict()).epoch
            []
        """
        if not isinstance(data, Mapping) or "epoch" not in data or "history" not in data:
            raise ValueError(
                "History.from_dict expects the mapping History.to_dict() returns, with keys "
                f"'epoch' and 'history'; got {type(data).__name__} "
                f"{sorted(data) if isinstance(data, Mapping) else ''}"
            )
        version = data.get("version", _FORMAT_VERSION)
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported History format version {version!r}")
        history = cls()
        history.epoch = [int(e) for e in data["epoch"]]
        for key, values in data["history"].items():
            if len(values) != len(history.epoch):
                raise ValueError(
                    f"History.from_dict: {key!r} has {len(values)} values for "
                    f"{len(history.epoch)} epochs"
                )
            history.history[str(key)] = [_decode(v) for v in values]
        history.interrupted = bool(data.get("interrupted", False))
        return history

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        flag = ", interrupted" if self.interrupted else ""
        return f"History(epochs={len(self)}, keys=[{keys}]{flag})"
