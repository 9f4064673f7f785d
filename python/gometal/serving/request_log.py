"""The request log's handler: one line per request, written to a stream in bulk.

A line written and flushed per request costs the event loop a system call each, and the
thread that makes it gives up the GIL to the batcher in the middle of a request. This
handler only appends each formatted line to a queue; a background thread writes what
has gathered every ``interval_s`` seconds, in one write, and :meth:`close` writes the rest
(after it, each line is written at once).

While ``gometal serve`` runs with this handler as the request logger's only one, each request
skips logging's record altogether (:func:`log_request`): :meth:`BufferedLineHandler.append_fields`
queues the line's fields and the writer thread encodes them, which takes a tenth of the
event loop's time per request off it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any, TextIO

__all__ = [
    "FLUSH_INTERVAL_S",
    "REQUEST_LOGGER",
    "BufferedLineHandler",
    "log_request",
    "write_requests_to",
]

FLUSH_INTERVAL_S = 0.2
REQUEST_LOGGER = "gometal.serving.requests"

_request_log = logging.getLogger(REQUEST_LOGGER)
_direct: list[BufferedLineHandler] = []  # the handler request lines go straight to, if any


class BufferedLineHandler(logging.Handler):
    """A logging handler writing its records' lines to ``stream`` every ``interval_s``.

    Args:
        stream: where the lines go (``sys.stderr``).
        interval_s: the most a line waits before it is written (> 0).

    Raises:
        ValueError: ``interval_s`` is not above 0.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> handler = BufferedLineHandler(out, 0.05)
        >>> handler.handle(logging.makeLogRecord({"msg": "one"}))
        True
        >>> handler.close(); out.getvalue()
        'one\\n'
    """

    def __init__(self, stream: TextIO, interval_s: float = FLUSH_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be seconds > 0, got {interval_s!r}")
        super().__init__()
        self.stream = stream
        self.interval_s = interval_s
        self._lines: deque[str | dict[str, Any]] = deque()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_periodically, daemon=True,
                                        name="request-log")  # fmt: skip
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
            if self._stopping.is_set():  # closed (logging.shutdown): no writer any more
                self.flush()
        except Exception:  # noqa: BLE001  (logging's contract: report, never raise)
            self.handleError(record)

    def append_fields(self, fields: dict[str, Any]) -> None:
        """Queues one line, the JSON of ``fields``, encoded when it is written (the request
        path's shortcut past logging's records: see :func:`write_requests_to`)."""
        self._lines.append(fields)
        if self._stopping.is_set():
            self.flush()

    def flush(self) -> None:
        """Writes every line gathered so far."""
        lines = []
        while True:
            try:
                line = self._lines.popleft()
            except IndexError:
                break
            lines.append(line if isinstance(line, str) else json.dumps(line))
        if lines:
            with self.lock:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    def close(self) -> None:
        """Stops the writer and writes the lines left."""
        self._stopping.set()
        if self._writer is not threading.current_thread():
            self._writer.join()
        self.flush()
        super().close()

    def _write_periodically(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.flush()
            except (OSError, ValueError):  # the stream went away: keep the server running
                pass


def write_requests_to(handler: BufferedLineHandler | None) -> None:
    """Sends request log lines straight to ``handler`` (``None``: through logging again).

    ``gometal serve`` calls it with the handler it gave the request logger, when that logger
    had no other: levels, filters and other handlers are then not consulted per request.

    Example:
        >>> write_requests_to(handler)  # doctest: +SKIP
    """
    _direct[:] = [handler] if handler is not None else []


def log_request(fields: dict[str, Any]) -> None:
    """Writes one request's structured log line: the JSON of ``fields``.

    Args:
        fields: the line's fields (method, path, status, milliseconds, model, ...).

    Example:
        >>> log_request({"method": "POST", "path": "/v2/models/cnn/infer", "status": 200})
    """
    if _direct:
        _direct[0].append_fields(fields)
    elif _request_log.isEnabledFor(logging.INFO):
        _request_log.info(json.dumps(fields))
