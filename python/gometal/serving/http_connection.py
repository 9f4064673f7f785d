"""The inference server's HTTP/1.1 connections: the plotting sidecar's h11 protocol with a
deadline for request headers (:mod:`gometal.viz.server_http`), whose writes within one
turn of the event loop leave as one.

uvicorn writes an answer's head and its body separately: two system calls per answer,
and the client reads the head alone before its body. Here each write is kept until the
end of the loop's turn (``call_soon``), then everything kept goes out in one write;
closing the connection writes what is kept first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..viz.server_http import protocol_with_header_timeout

__all__ = ["CoalescedWrites", "serving_protocol"]


class CoalescedWrites:
    """A transport whose writes within one turn of ``loop`` are sent as one write.

    Everything but writing, closing and aborting goes to the wrapped transport.

    Args:
        transport: the connection's asyncio transport.
        loop: the event loop it runs in.

    Example:
        >>> writes = CoalescedWrites(transport, loop)  # doctest: +SKIP
        >>> writes.write(b"HTTP/1.1 200 OK\\r\\n...\\r\\n\\r\\n"); writes.write(b"{}")  # doctest: +SKIP
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._kept: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Keeps ``data`` until the end of this turn of the loop."""
        if not data:
            return
        if not self._kept:
            self._loop.call_soon(self.flush)
        self._kept.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        """Keeps each chunk, as :meth:`write`."""
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Writes what was kept, in one write (nothing once the connection is closing)."""
        if not self._kept:
            return
        data = self._kept[0] if len(self._kept) == 1 else b"".join(self._kept)
        self._kept.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """Writes what was kept, then closes the connection."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """Drops what was kept and closes the connection at once."""
        self._kept.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def serving_protocol(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a header deadline and coalesced writes.

    Pass it as uvicorn's ``http`` setting.

    Args:
        header_timeout_s: seconds allowed for a request's headers (> 0).

    Returns:
        The protocol class.

    Raises:
        TypeError, ValueError: as :func:`gometal.viz.server_http.protocol_with_header_timeout`.

    Example:
        >>> uvicorn.Config(app, http=serving_protocol(10.0))  # doctest: +SKIP
    """
    base: Any = protocol_with_header_timeout(header_timeout_s)

    class CoalescingH11Protocol(base):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(CoalescedWrites(transport, asyncio.get_running_loop()))

    return CoalescingH11Protocol
