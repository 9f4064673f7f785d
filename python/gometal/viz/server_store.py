"""On-disk storage of the plotting sidecar: one JSON file per plot and per batch.

Layout under the data directory::

    plots/<plot_id>.json      {"id", "batch_id", "created", "payload"}
    batches/<batch_id>.json   {"id", "title", "created", "updated", "plot_ids"}

Every file is replaced atomically (temporary file, fsync, rename), so a crash or a
concurrent reader never sees half a record. Ids are checked against :data:`ID_PATTERN`
before any path is built, which keeps every file inside the data directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from ..serialization.atomic import write_atomically

__all__ = ["ID_PATTERN", "PlotStore", "check_id", "new_id"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PLOTS = "plots"
BATCHES = "batches"

_log = logging.getLogger(__name__)


def new_id() -> str:
    """Returns a fresh random id (32 lowercase hex digits).

    Returns:
        A uuid4 in hex, which always matches :data:`ID_PATTERN`.

    Example:
        >>> len(new_id())
        32
    """
    return uuid.uuid4().hex


def check_id(value: Any, what: str = "id") -> str:
    """Returns ``value`` if it is a valid id, else raises ``ValueError``.

    Args:
        value: the candidate id.
        what: the argument's name, for the message (``"plot_id"``, ``"batch_id"``).

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: ``value`` is not 1 to 64 characters of ``A-Z a-z 0-9 _ -``.

    Example:
        >>> check_id("run-1")
        'run-1'
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} must be 1 to 64 characters of letters, digits, '_' or '-', got {value!r}"
        )
    return value


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


class PlotStore:
    """Plots and batches kept as JSON files under one data directory.

    Args:
        data_dir: the directory; it and its ``plots/`` and ``batches/`` folders are
            created when missing.

    Example:
        >>> store = PlotStore("/tmp/plots")  # doctest: +SKIP
        >>> [record] = store.add_plots([payload])  # doctest: +SKIP
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(os.fspath(data_dir)).resolve()
        for kind in (PLOTS, BATCHES):
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        # One writer at a time: a batch record is read, extended and rewritten.
        self._lock = threading.Lock()

    def _path(self, kind: str, item_id: str) -> Path:
        check_id(item_id, "plot_id" if kind == PLOTS else "batch_id")
        folder = self.root / kind
        path = folder / f"{item_id}.json"
        # The pattern already rules out separators and dots; this guards future edits.
        if path.resolve().parent != folder:
            raise ValueError(f"id {item_id!r} leaves the data directory")
        return path

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            _log.warning("skipping unreadable record %s: %s", path, err)
            return None
        return record if isinstance(record, dict) else None

    def has_plot(self, plot_id: str) -> bool:
        """Tells whether a plot with this id is stored.

        Args:
            plot_id: a valid id.

        Returns:
            True when ``plots/<plot_id>.json`` exists.

        Example:
            >>> store.has_plot("abc")  # doctest: +SKIP
            False
        """
        return self._path(PLOTS, plot_id).exists()

    def add_plots(
        self,
        payloads: list[dict[str, Any]],
        *,
        plot_ids: list[str | None] | None = None,
        batch_id: str | None = None,
        batch_title: str | None = None,
        replace: bool = False,
    ) -> list[dict[str, Any]]:
        """Stores validated payloads; appends them to a batch when ``batch_id`` is given.

        Args:
            payloads: plot payloads, already validated by the caller.
            plot_ids: one id (or ``None`` for a fresh one) per payload.
            batch_id: the batch or run to attach the plots to (created when new).
            batch_title: the batch's title, kept from the first request that names one.
            replace: make these plots the batch's only ones and delete its earlier plots
                (a run that re-sends its latest snapshot every epoch).

        Returns:
            The stored plot records, in order.

        Raises:
            FileExistsError: a requested plot id is already taken (nothing is written).

        Example:
            >>> store.add_plots([payload], batch_id="run-1")[0]["batch_id"]  # doctest: +SKIP
            'run-1'
        """
        ids = list(plot_ids) if plot_ids is not None else [None] * len(payloads)
        ids = [new_id() if item is None else check_id(item, "plot_id") for item in ids]
        if len(set(ids)) != len(ids):
            raise FileExistsError("plot ids within one request must be distinct")
        if batch_id is not None:
            check_id(batch_id, "batch_id")
        with self._lock:
            for plot_id in ids:
                if self.has_plot(plot_id):
                    raise FileExistsError(f"plot_id {plot_id!r} is already taken")
            created = _now()
            records = [
                {"id": plot_id, "batch_id": batch_id, "created": created, "payload": payload}
                for plot_id, payload in zip(ids, payloads)
            ]
            for record in records:
                write_atomically(self._path(PLOTS, record["id"]), _dump(record))
            if batch_id is not None:
                replaced = self._extend_batch(batch_id, ids, batch_title, created, replace)
                # Deleted only once the batch no longer lists them.
                for old_id in replaced:
                    old = self.get_plot(old_id)
                    if old is not None and old.get("batch_id") == batch_id:
                        self._path(PLOTS, old_id).unlink(missing_ok=True)
        return records

    def _extend_batch(
        self, batch_id: str, plot_ids: list[str], title: str | None, when: str, replace: bool
    ) -> list[str]:
        """Adds ``plot_ids`` to the batch record; returns the ids it dropped."""
        path = self._path(BATCHES, batch_id)
        batch = self._read(path) or {
            "id": batch_id,
            "title": None,
            "created": when,
            "plot_ids": [],
        }
        previous = [str(i) for i in batch.get("plot_ids", []) if ID_PATTERN.fullmatch(str(i))]
        batch["plot_ids"] = plot_ids if replace else previous + plot_ids
        if title and (replace or not batch.get("title")):
            batch["title"] = title
        batch["updated"] = when
        write_atomically(path, _dump(batch))
        return [i for i in previous if i not in plot_ids] if replace else []

    def get_plot(self, plot_id: str) -> dict[str, Any] | None:
        """Returns the stored record of one plot, or ``None`` when there is none.

        Args:
            plot_id: a valid id (``ValueError`` otherwise).

        Returns:
            ``{"id", "batch_id", "created", "payload"}`` or ``None``.

        Example:
            >>> store.get_plot("0" * 32)  # doctest: +SKIP
        """
        return self._read(self._path(PLOTS, plot_id))

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        """Returns the stored record of one batch, or ``None`` when there is none.

        Args:
            batch_id: a valid id (``ValueError`` otherwise).

        Returns:
            ``{"id", "title", "created", "updated", "plot_ids"}`` or ``None``.

        Example:
            >>> store.get_batch("run-1")["plot_ids"]  # doctest: +SKIP
        """
        return self._read(self._path(BATCHES, batch_id))

    def _records(self, kind: str) -> list[dict[str, Any]]:
        out = []
        for path in (self.root / kind).glob("*.json"):
            if not ID_PATTERN.fullmatch(path.stem):
                continue  # stray temporary files start with a dot
            record = self._read(path)
            if record is not None:
                out.append(record)
        out.sort(key=lambda r: (str(r.get("created", "")), str(r.get("id", ""))))
        return out

    def list_plots(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Returns every stored plot record, oldest first.

        Args:
            batch_id: keep only the plots of this batch.

        Returns:
            The plot records.

        Example:
            >>> len(store.list_plots())  # doctest: +SKIP
            3
        """
        records = self._records(PLOTS)
        if batch_id is not None:
            records = [r for r in records if r.get("batch_id") == batch_id]
        return records

    def list_batches(self) -> list[dict[str, Any]]:
        """Returns every stored batch record, oldest first.

        Returns:
            The batch records.

        Example:
            >>> [b["id"] for b in store.list_batches()]  # doctest: +SKIP
            ['run-1']
        """
        return self._records(BATCHES)
