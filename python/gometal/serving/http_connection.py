"""The inference server's HTTP/1.1 connections: uvicorn's httptools protocol with a
deadline for request headers, JSON answers to requests that are not HTTP, and the writes
within one turn of the event loop leaving as one.

httptools (llhttp, in C) parses a request in a fraction of h11's time, which is most of
what the server spends per request besides the model. The connection keeps the rules of
the plotting sidecar's h11 protocol (:mod:`gometal.viz.server_http`): a request's headers
must be complete within ``header_timeout_s`` of its first byte (or of the connection
opening), else a JSON 408 and the connection closes; a request answered before its body
was read may send the rest of it, which is dropped, for ``header_timeout_s`` more.

uvicorn writes an answer's head and its body separately: two system calls per answer,
and the client reads the head alone before its body. Here each write is kept until the
end of the loop's turn (``call_soon``), then everything kept goes out in one write;
closing the connection writes what is kept first.

Given a :class:`~.fast_infer.DirectInferRoute`, the connection shows it each request once
its headers are read, before it builds an ASGI scope: an inference request it takes
becomes a :class:`~.fast_infer.DirectRequest`, which stands as the connection's request
cycle and is answered from the parser's and the batcher's callbacks (no scope, cycle or
task). It starts when the requests before it are answered and its body is in, or at the
end of the data received: only a body still coming then holds an upload slot and a
deadline. Every other request goes through uvicorn's cycle to the ASGI application.

uvicorn arms a keep-alive timer at every answer and cancels it at the next request; here
an answer records when the connection fell idle, and one timer checks it (the same
timeout, without a timer per answer).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..viz.server_http import HeaderDeadline
from .fast_infer import DirectRequest

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

    def write_now(self, data: bytes) -> None:
        """Writes ``data`` at once, after anything kept (a whole answer in one piece)."""
        if self._kept:
            self._kept.append(data)
            self.flush()
        elif not self._transport.is_closing():
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


class _ServingHttpToolsProtocol(HeaderDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, coalesced writes, and the
    inference requests its :class:`~.fast_infer.DirectInferRoute` takes answered from the
    parser's callbacks (no scope, request cycle or ASGI task for them)."""

    direct_infer: Any = None  # a DirectInferRoute, or None: every request goes to ASGI

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._start_deadlines()
        # Until a request's headers are complete; the connection opening counts as a start.
        self._headers_pending = True
        self._started = False
        self._body_done = True
        self._unstarted: DirectRequest | None = None
        self._idle_since: float | None = None
        super().connection_made(CoalescedWrites(transport, asyncio.get_running_loop()))
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.parser is None or self.transport.is_closing():
            self._cancel_header_timer()
            self._unstarted = None
            return
        if self._headers_pending:
            self._arm_header_timer()
        else:
            self._cancel_header_timer()
        request = self._unstarted
        if request is not None:  # its body is still coming: it waits for it, with a deadline
            self._unstarted = None
            request.start()

    def on_message_begin(self) -> None:
        # The scope is built only for a request that goes to ASGI (on_headers_complete).
        self.url = b""
        self.headers = []
        self.expect_100_continue = False
        self._headers_pending = self._started = True
        self._body_done = False

    def on_headers_complete(self) -> None:
        self._headers_pending = False
        route, parser = self.direct_infer, self.parser
        if route is not None and not parser.should_upgrade():
            keep_alive = parser.get_http_version() == "1.1" and parser.should_keep_alive()
            request = route.request(self, parser.get_method(), self.url, self.headers, keep_alive)
            if request is not None:
                previous, self.cycle = self.cycle, request
                if previous is None or previous.response_complete:
                    self._unstarted = request  # starts when its body is in, or data ends
                else:  # pipelined: waits for the answers before it, as uvicorn's cycles
                    self.flow.pause_reading()
                    self.pipeline.appendleft((request, None))
                return
        headers, url, expect = self.headers, self.url, self.expect_100_continue
        super().on_message_begin()  # uvicorn's: the scope, with a fresh header list
        self.headers.extend(headers)
        self.url, self.expect_100_continue = url, expect
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # Called for a pipelined request once the ones before it are answered.
        if type(cycle) is DirectRequest:
            cycle.start()
        else:
            super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is DirectRequest:
            cycle.add_body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done = True
        self._cancel_drain_timer()  # the dropped body is over
        cycle = self.cycle
        if type(cycle) is not DirectRequest:
            super().on_message_complete()
        elif cycle is self._unstarted:  # all of it came with the headers: no deadline
            self._unstarted = None
            cycle.more_body = False
            cycle.start()
        else:
            cycle.end_body()

    # The keep-alive timeout, as uvicorn's, without a timer per answer: uvicorn arms one
    # when an answer completes and cancels it at the next data. Here the answer records
    # when the connection fell idle, and one timer, armed only when none is, checks then.
    def on_response_complete(self) -> None:
        # uvicorn's, but for the keep-alive timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
        if not self._body_done and not self.transport.is_closing():
            self._arm_drain_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # data came (or the connection ends): not idle

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        if idle_since is None or self.transport.is_closing():
            return  # busy: the answer in progress arms the next check
        left = idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(
                left, self.timeout_keep_alive_handler
            )
        else:
            self.transport.close()

    def _awaiting_headers(self) -> bool:
        return self._headers_pending

    def _request_started(self) -> bool:
        return self._started

    def _body_unfinished(self) -> bool:
        return not self._body_done


def serving_protocol(header_timeout_s: float, direct_infer: Any = None) -> type:
    """uvicorn's httptools protocol with a header deadline and coalesced writes.

    Pass it as uvicorn's ``http`` setting.

    Args:
        header_timeout_s: seconds allowed for a request's headers (> 0).
        direct_infer: a :class:`~.fast_infer.DirectInferRoute` answering the inference
            requests it takes without an ASGI task, or ``None``.

    Returns:
        The protocol class.

    Raises:
        TypeError: ``header_timeout_s`` is not a number.
        ValueError: ``header_timeout_s`` is not above 0 and finite.

    Example:
        >>> uvicorn.Config(app, http=serving_protocol(10.0))  # doctest: +SKIP
    """
    if isinstance(header_timeout_s, bool) or not isinstance(header_timeout_s, (int, float)):
        raise TypeError(f"header_timeout_s must be seconds > 0, got {header_timeout_s!r}")
    if not 0 < header_timeout_s < float("inf"):
        raise ValueError(f"header_timeout_s must be seconds > 0, got {header_timeout_s!r}")
    return type(
        "ServingHttpToolsProtocol",
        (_ServingHttpToolsProtocol,),
        {"header_timeout_s": float(header_timeout_s), "direct_infer": direct_infer},
    )
