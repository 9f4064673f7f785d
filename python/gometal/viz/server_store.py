"""On-disk storage of the plotting sidecar: one JSON file per plot and per batch.

Layout under the data directory::

    plots/<plot_id>.json      {"id", "batch_id", "created", "payload"}
    batches/<batch_id>.json   {"id", "title", "created", "updated", "plot_ids"}

Every file is replaced atomically (temporary file, fsync, rename), so a crash or a
concurrent reader never sees half a record. Ids are checked against :data:`ID_PATTERN`
before any path is built, which keeps every file inside the data directory.

A request's plots are stored whole or not at all: every record is encoded before the
first file is written, a failed write removes the plots written before it, and the batch
record is written last. A process killed in between leaves plots that their batch does
not list and ``.tmp`` files; :meth:`PlotStore.recover` removes both at start-up.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import threading
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base.atomic import TEMP_SUFFIX, write_atomically

__all__ = ["ID_PATTERN", "PlotStore", "Recovery", "check_id", "new_id"]

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


def _encoded(records: list[dict[str, Any]]) -> list[bytes]:
    """Every record's file content, or ``ValueError`` naming the first that has none."""
    out = []
    for record in records:
        try:
            out.append(_dump(record))
        except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as err:
            raise ValueError(
                f"plot {record['id']!r} cannot be stored as UTF-8 JSON: {err}"
            ) from None
    return out


@dataclass(frozen=True)
class Recovery:
    """What :meth:`PlotStore.recover` removed.

    Attributes:
        temp_files: stray temporary files of interrupted writes.
        orphan_plots: ids of plots that name a batch which does not list them.
        skipped: why nothing was removed (another sidecar uses the folder), else ``None``.
    """

    temp_files: int = 0
    orphan_plots: tuple[str, ...] = ()
    skipped: str | None = None


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
        self._release_folder: weakref.finalize | None = None
        self._sole_user = self._claim_folder()

    def close(self) -> None:
        """Lets go of the data directory, so another store may clean it up at its start.

        The store still reads and writes afterwards; only :meth:`recover` of a later
        store is affected. Done at the latest when the process ends.

        Example:
            >>> store.close()  # doctest: +SKIP
        """
        if self._release_folder is not None:
            self._release_folder()

    def _claim_folder(self) -> bool:
        """Holds a shared lock on the data directory while this store lives; tells whether
        no other process held one, i.e. no other sidecar's writes can be in flight."""
        try:
            import fcntl
        except ImportError:  # no advisory locks (Windows): taken as the only user
            return True
        fd = os.open(self.root, os.O_RDONLY)
        self._release_folder = weakref.finalize(self, os.close, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            sole = True
        except OSError:
            sole = False
        fcntl.flock(fd, fcntl.LOCK_SH)
        return sole

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
            ValueError: a payload cannot be encoded as UTF-8 JSON, e.g. it holds a lone
                surrogate (nothing is written).

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
            written = self._write_all(records, _encoded(records))
            if batch_id is not None:
                try:
                    replaced = self._extend_batch(batch_id, ids, batch_title, created, replace)
                except BaseException:
                    for path in written:  # not listed by their batch: not stored
                        path.unlink(missing_ok=True)
                    raise
                # Deleted only once the batch no longer lists them.
                for old_id in replaced:
                    old = self.get_plot(old_id)
                    if old is not None and old.get("batch_id") == batch_id:
                        self._path(PLOTS, old_id).unlink(missing_ok=True)
        return records

    def _write_all(self, records: list[dict[str, Any]], contents: list[bytes]) -> list[Path]:
        """Writes every plot file, or none: a failure removes those already written."""
        written: list[Path] = []
        try:
            for record, content in zip(records, contents):
                path = self._path(PLOTS, record["id"])
                write_atomically(path, content)
                written.append(path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return written

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

    def recover(self) -> Recovery:
        """Removes what a process killed while writing left behind; run it at start-up.

        That is the ``.tmp`` files of interrupted atomic writes, and the plots that name a
        batch which does not list them (written, but their batch record never was, so the
        request that sent them failed). Plots of a batch whose record exists but cannot be
        read are kept. Nothing is removed while another process (a second sidecar on this
        folder) holds the folder: its writes may be in flight.

        Returns:
            What was removed, or why nothing was.

        Example:
            >>> PlotStore("gometal-plots").recover().orphan_plots  # doctest: +SKIP
            ('3f2a...',)
        """
        if not self._sole_user:
            return Recovery(skipped="another process holds the data directory")
        temp_files = 0
        for kind in (PLOTS, BATCHES):
            for path in (self.root / kind).glob(f".*{TEMP_SUFFIX}"):
                path.unlink(missing_ok=True)
                temp_files += 1
        listed: dict[str, set[str] | None] = {}
        orphans = []
        for path in (self.root / PLOTS).glob("*.json"):
            record = self._read(path) if ID_PATTERN.fullmatch(path.stem) else None
            batch_id = record.get("batch_id") if record is not None else None
            if not isinstance(batch_id, str) or not ID_PATTERN.fullmatch(batch_id):
                continue  # a plot of no batch, or not a record this store wrote
            if batch_id not in listed:
                listed[batch_id] = self._listed_ids(batch_id)
            ids = listed[batch_id]
            if ids is not None and path.stem not in ids:
                path.unlink(missing_ok=True)
                orphans.append(path.stem)
        return Recovery(temp_files, tuple(sorted(orphans)))

    def _listed_ids(self, batch_id: str) -> set[str] | None:
        """The plot ids a batch lists (none without a record); ``None`` when its record
        exists but cannot be read."""
        path = self._path(BATCHES, batch_id)
        if not path.exists():
            return set()
        record = self._read(path)
        if record is None or not isinstance(record.get("plot_ids"), list):
            return None
        return {str(i) for i in record["plot_ids"]}

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
