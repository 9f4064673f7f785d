"""Per-epoch log files: ``CSVLogger`` and ``JSONLogger``.

Both rewrite their whole file after every epoch through a temporary file that is flushed,
fsynced and renamed over the old one, so a process killed at any moment leaves either the
previous complete file or the new complete file, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from ..base.atomic import write_atomically
from .callback_base import Callback
from .history import to_plain


def _replace_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def _check_path(owner: str, path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner} path must be a file path, got {path!r}")
    return Path(path)


def _epoch_of(row: dict[str, Any]) -> int | None:
    try:
        return int(row["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


class _EpochLogger(Callback):
    """Keeps one record per epoch and rewrites the file after each; shared by both loggers.

    Records carry ``epoch`` (0-based, as ``History``) and the epoch's logs. An epoch logged
    again (a run resumed from an earlier checkpoint) replaces the records from that epoch
    on, so the file never holds an epoch twice.
    """

    owner = ""

    def __init__(self, path: str | os.PathLike[str], append: bool = False):
        self.path = _check_path(self.owner, path)
        self.append = bool(append)
        self.rows: list[dict[str, Any]] = []
        self._loaded = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Rows persist across fit calls on the same logger; the file's earlier content is
        # read once, and only with append=True.
        if not self._loaded:
            self._loaded = True
            if self.append and self.path.exists():
                self.rows = self._read()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.rows = [row for row in self.rows if (_epoch_of(row) or 0) < epoch]
        self.rows.append({"epoch": int(epoch), **{k: to_plain(v) for k, v in logs.items()}})
        _replace_file(self.path, self._render())

    def _read(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _render(self) -> bytes:
        raise NotImplementedError


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return str(value)


class CSVLogger(_EpochLogger):
    """Writes one CSV row per epoch: ``epoch`` then the epoch's logs, with a header.

    Columns appear in the order keys first occur; an epoch without a key leaves its cell
    empty. Floats are written with ``repr`` (they read back exactly); array results (a
    confusion matrix) as JSON lists.

    Args:
        path: the CSV file.
        append: keep the rows the file already holds when first used (to continue a run);
            otherwise the file is replaced at the first epoch.

    Example:
        >>> log = gm.callbacks.CSVLogger("runs/a/log.csv")
        >>> trainer.fit((x, y), 5, callbacks=[log])  # doctest: +SKIP
    """

    owner = "CSVLogger"

    def _read(self) -> list[dict[str, Any]]:
        with open(self.path, newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle)]

    def _render(self) -> bytes:
        columns: dict[str, None] = {}
        for row in self.rows:
            columns.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows:
            writer.writerow([_csv_cell(row.get(column)) for column in columns])
        return buffer.getvalue().encode()

    def __repr__(self) -> str:
        return f"CSVLogger({os.fspath(self.path)!r}, append={self.append})"


def _strict_json(value: Any) -> Any:
    # JSON has no NaN or infinity: write null, so any JSON parser reads the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_strict_json(item) for item in value]
    return value


class JSONLogger(_EpochLogger):
    """Writes a JSON array with one object per epoch: ``{"epoch": 0, "loss": ..., ...}``.

    Non-finite numbers are written as ``null`` (strict JSON).

    Args:
        path: the JSON file.
        append: keep the records the file already holds when first used (to continue a
            run); otherwise the file is replaced at the first epoch.

    Raises:
        ValueError: with ``append=True``, the existing file is not a JSON array.

    Example:
        >>> log = gm.callbacks.JSONLogger("runs/a/log.json")
        >>> trainer.fit((x, y), 5, callbacks=[log])  # doctest: +SKIP
    """

    owner = "JSONLogger"

    def _read(self) -> list[dict[str, Any]]:
        try:
            rows = json.loads(self.path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"JSONLogger cannot append to {self.path}: {err}") from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(
                f"JSONLogger cannot append to {self.path}: not a JSON array of objects"
            )
        return rows

    def _render(self) -> bytes:
        records = [{k: _strict_json(v) for k, v in row.items()} for row in self.rows]
        return (json.dumps(records, indent=1, allow_nan=False) + "\n").encode()

    def __repr__(self) -> str:
        return f"JSONLogger({os.fspath(self.path)!r}, append={self.append})"
