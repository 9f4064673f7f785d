"""The plotting sidecar's HTTP connections: uvicorn's h11 protocol with a deadline for
request headers, and JSON answers to requests that are not HTTP.

uvicorn closes idle keep-alive connections, but a client that opens a connection and
sends its headers slowly, or never, would hold it forever. Here the headers of each
request must be complete within ``header_timeout_s`` of the connection opening (or of the
request's first byte on a kept-alive connection); otherwise the client gets a JSON 408
and the connection is closed. Bodies get their own deadline in the application (see
:func:`gometal.viz.server_guard.read_body`). A request answered before its body was read
(413, 415, 503) may send the rest of it, which is dropped, for ``header_timeout_s`` more.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "DEFAULT_HEADER_TIMEOUT_S",
    "HeaderDeadline",
    "HeaderDeadlineH11Protocol",
    "error_response_bytes",
    "protocol_with_header_timeout",
]

DEFAULT_HEADER_TIMEOUT_S = 10.0


def error_response_bytes(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 error response in the sidecar's JSON format, closing the
    connection.

    Args:
        status: the status code.
        reason: its reason phrase, e.g. ``"Request Timeout"``.
        message: the ``message`` field.
        code: the ``error_code`` field.

    Returns:
        The bytes to write to the socket.

    Example:
        >>> error_response_bytes(408, "Request Timeout", "too slow", "REQUEST_TIMEOUT")[:12]
        b'HTTP/1.1 408'
    """
    body = json.dumps({"success": False, "message": message, "error_code": code}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class HeaderDeadline:
    """The timers and JSON answers of a connection whose request headers have a deadline,
    mixed into a uvicorn HTTP protocol (this module's h11 one, the inference server's
    httptools one). The protocol provides ``loop`` and ``transport``."""

    header_timeout_s = DEFAULT_HEADER_TIMEOUT_S
    loop: asyncio.AbstractEventLoop
    transport: Any

    def _start_deadlines(self) -> None:
        self._header_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:  # the deadline runs from the first byte, not the last
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _arm_drain_timer(self) -> None:
        # Answered before the body was read (413, 415, 503): the rest is dropped as it
        # comes, so the client reads the answer rather than a reset; for a bounded time.
        self._drain_timer = self.loop.call_later(self.header_timeout_s, self._drain_late)

    def _cancel_drain_timer(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_drain_timer()
        super().connection_lost(exc)  # the uvicorn protocol mixed with this one

    def _drain_late(self) -> None:
        self._drain_timer = None
        if self._body_unfinished():
            self.transport.close()

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers():
            return
        if self._request_started():  # part of a request came: tell the client why
            message = f"request headers must arrive within {self.header_timeout_s:g} s"
            self.transport.write(
                error_response_bytes(408, "Request Timeout", message, "REQUEST_TIMEOUT")
            )
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers unparsable requests in plain text; clients expect JSON.
        self._cancel_header_timer()
        message = f"not a valid HTTP/1.1 request ({msg.rstrip('.')})"
        self.transport.write(error_response_bytes(400, "Bad Request", message, "INVALID_REQUEST"))
        self.transport.close()

    # What the parser knows, asked by the timers.
    def _awaiting_headers(self) -> bool:
        raise NotImplementedError

    def _request_started(self) -> bool:
        raise NotImplementedError

    def _body_unfinished(self) -> bool:
        raise NotImplementedError


class _HeaderDeadlineProtocol(HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers come too slowly."""

    def connection_made(self, transport: Any) -> None:
        self._start_deadlines()
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.SEND_BODY:
            self._cancel_drain_timer()  # the dropped body is over
        # IDLE: the next request's headers are not complete yet (none may have come).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()
        else:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._arm_drain_timer()

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _request_started(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _body_unfinished(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY


def protocol_with_header_timeout(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a deadline for request headers.

    Pass it as uvicorn's ``http`` setting.

    Args:
        header_timeout_s: seconds allowed for a request's headers (> 0).

    Returns:
        The protocol class.

    Raises:
        TypeError: ``header_timeout_s`` is not a number.
        ValueError: ``header_timeout_s`` is not above 0 and finite.

    Example:
        >>> uvicorn.run(app, http=protocol_with_header_timeout(10.0))  # doctest: +SKIP
    """
    if isinstance(header_timeout_s, bool) or not isinstance(header_timeout_s, (int, float)):
        raise TypeError(f"header_timeout_s must be seconds > 0, got {header_timeout_s!r}")
    if not 0 < header_timeout_s < float("inf"):
        raise ValueError(f"header_timeout_s must be seconds > 0, got {header_timeout_s!r}")
    return type(
        "HeaderDeadlineH11Protocol",
        (_HeaderDeadlineProtocol,),
        {"header_timeout_s": float(header_timeout_s)},
    )


# With the default deadline, for uvicorn's command line:
# ``uvicorn app:app --app-dir sidecar --http gometal.viz.server_http:HeaderDeadlineH11Protocol``
HeaderDeadlineH11Protocol = protocol_with_header_timeout(DEFAULT_HEADER_TIMEOUT_S)
