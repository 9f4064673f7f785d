"""The request log's handler: one line per request, written to a stream in bulk.

A line written and flushed per request costs the event loop a system call each, and the
thread that makes it gives up the GIL to the batcher in the middle of a request. This
handler only appends each formatted line to a queue; a background thread writes what
has gathered every ``interval_s`` seconds, in one write, and :meth:`close` writes the rest
(after it, each line is written at once).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TextIO

__all__ = ["FLUSH_INTERVAL_S", "BufferedLineHandler"]

FLUSH_INTERVAL_S = 0.2


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
        self._lines: deque[str] = deque()
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

    def flush(self) -> None:
        """Writes every line gathered so far."""
        lines = []
        while True:
            try:
                lines.append(self._lines.popleft())
            except IndexError:
                break
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
