"""Ctrl-C during ``fit``: the first SIGINT asks the loop to stop after the current batch."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self


class InterruptGuard:
    """Context manager that turns the first SIGINT into a flag and the second into
    ``KeyboardInterrupt``.

    The handler only sets a flag: the loop checks it between batches, so an engine call is
    never cut in half and the trainer's state stays consistent. Printing is left to the
    loop, because writing to a stream from a signal handler can collide with a write in
    progress. The handler is installed only in the main thread (the only one Python
    delivers signals to) and only when SIGINT is not ignored; the previous handler comes
    back on exit.

    Example:
        >>> with InterruptGuard() as guard:  # doctest: +SKIP
        ...     while not guard.interrupted:
        ...         train_one_batch()
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, as Python would
        self.interrupted = True

    def __enter__(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGINT)
        # None: a handler set outside Python, which could not be restored afterwards.
        if previous is None or previous == signal.SIG_IGN:
            return self
        signal.signal(signal.SIGINT, self._handle)
        self._previous, self._installed = previous, True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
