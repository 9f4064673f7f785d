"""Inference requests answered in the HTTP protocol itself, with no ASGI task per request.

Under load, the per-request ASGI machinery (a task, the scope, ``receive``/``send``
messages, the middleware chain) costs the event loop about as much as parsing, checking
and encoding the request together. :class:`DirectInferRoute` answers the common case of
``POST /v2/models/{name}[/versions/{v}]/infer`` from the connection's callbacks: the body
is collected by the protocol, the request is queued on the batcher, and the answer is
written from the batcher's future's callback.

It takes a request only when it can keep every rule the ASGI route keeps: a
``Content-Length`` of at most :data:`~.infer_route.THREAD_PARSE_BYTES` (larger bodies are
parsed in a worker thread), no ``Expect: 100-continue``, no content encoding. Everything
else, and every other path, goes to the ASGI application unchanged. The request guard
(host, API key), the body's arrival deadline, the upload slots, the queue bound (503 with
``Retry-After``), metrics and the request log line are the ASGI route's. Pipelining and
graceful shutdown need nothing of their own: each request is the connection's current
uvicorn cycle, so uvicorn queues the requests behind it and, on shutdown, closes the
connection once it is answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from http import HTTPStatus
from typing import Any

from ..viz.server_guard import UploadSlots
from .guard import RequestGuard, error_body
from .infer_route import CLIENT_GONE_STATUS, THREAD_PARSE_BYTES, infer_target
from .metrics import ServingMetrics
from .protocol import HEADER_LENGTH, ProtocolError, encode_infer_response, parse_infer_request
from .request_log import log_request
from .served_model import RETRY_AFTER_S, ServedModels, ServedVersion

__all__ = ["BodyCollector", "DirectInferRoute"]

_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode("latin-1")
_JSON_TYPE = b"content-type: application/json\r\n"
_BINARY_TYPE = b"content-type: application/octet-stream\r\n"
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


def _encoded_headers(headers: dict[str, str]) -> bytes:
    return b"".join(
        f"{name.lower()}: {value}\r\n".encode("latin-1") for name, value in headers.items()
    )


class DirectInferRoute:
    """Answers small inference requests from the HTTP connection's callbacks.

    Args:
        models: the served model versions.
        metrics: where requests are counted.
        guard: the request guard of the ASGI application (host and API key checks).
        max_body_bytes: the largest request body.
        body_timeout_s: the time a body may take to arrive.
        slots: the bodies received at once, shared with the ASGI routes.

    Example:
        >>> route = DirectInferRoute(models, metrics, guard, 2**24, 30.0, slots)  # doctest: +SKIP
        >>> serving_protocol(10.0, direct_infer=route)  # doctest: +SKIP
    """

    def __init__(
        self,
        models: ServedModels,
        metrics: ServingMetrics,
        guard: RequestGuard,
        max_body_bytes: int,
        body_timeout_s: float,
        slots: UploadSlots,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.guard = guard
        self.body_limit = min(max_body_bytes, THREAD_PARSE_BYTES)
        self.body_timeout_s = body_timeout_s
        self.slots = slots

    def start(self, connection: Any, cycle: Any) -> bool:
        """Takes the request of ``cycle`` (a uvicorn request cycle, the connection's current
        one) when it is an inference request this route answers.

        Args:
            connection: the uvicorn HTTP protocol (its transport, flow control, loop and
                server state).
            cycle: the request's cycle: its scope, the body received so far, and the
                completion flags the protocol reads.

        Returns:
            Whether the request was taken; if not, the caller runs the ASGI application.
        """
        scope = cycle.scope
        if scope["method"] != "POST" or cycle.waiting_for_100_continue:
            return False
        target = infer_target(scope["path"])
        if target is None:
            return False
        length = encoding = header_length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-encoding":
                encoding = value
            elif name == _HEADER_LENGTH_KEY:
                header_length = value.decode("latin-1")
        if length is None or not length.isdigit() or int(length) > self.body_limit:
            return False
        if encoding is not None and encoding.strip().lower() != b"identity":
            return False
        _DirectRequest(self, connection, cycle, target, header_length).begin()
        return True


class BodyCollector:
    """Stands in for a taken request's ``message_event`` (uvicorn's cycle sets it on each
    part of the body, at its end and when the client goes) and keeps the body's parts:
    the connection hands them over (:meth:`add`) instead of appending them to the cycle's
    buffer, so a body that comes in one part is never copied."""

    __slots__ = ("chunks", "request")

    def __init__(self, request: _DirectRequest, received: bytes | bytearray) -> None:
        self.request = request
        self.chunks: list[bytes | bytearray] = [received] if received else []

    def add(self, body: bytes) -> None:
        """Keeps one part of the body, then reports progress."""
        self.chunks.append(body)
        self.request.body_progress()

    def body(self) -> bytes | bytearray:
        """The parts kept so far, as one buffer."""
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def set(self) -> None:
        self.request.body_progress()

    def clear(self) -> None:
        """Nothing to clear: progress is read from the cycle."""


class _DirectRequest:
    """One inference request answered by :class:`DirectInferRoute`."""

    def __init__(
        self,
        route: DirectInferRoute,
        connection: Any,
        cycle: Any,
        target: tuple[str, str | None],
        header_length: str | None,
    ) -> None:
        self.route = route
        self.connection = connection
        self.cycle = cycle
        self.name, self.version = target
        self.header_length = header_length
        self.started = time.perf_counter()
        self.served: ServedVersion | None = None
        self.log_fields: dict[str, Any] = {}
        self.body_timer: asyncio.TimerHandle | None = None
        self.holds_slot = False
        self.parsed: Any = None
        self.counted = True
        self.collector: BodyCollector | None = None

    def begin(self) -> None:
        route = self.route
        try:
            problem = route.guard.problem(self.cycle.scope)
            if problem is not None:
                status, message, headers = problem
                self.counted = False  # as the ASGI guard: refused before the route counts
                self.answer_error(status, message, headers)
                return
            self.served = route.models.resolve(self.name, self.version)
            cycle = self.cycle
            if not cycle.more_body:  # the body came before the request's turn: all of it
                body, cycle.body = cycle.body, bytearray()
                self.body_complete(body)
                return
            if not route.slots.try_acquire():
                raise ProtocolError(
                    503, f"{route.slots.limit} request bodies are being received; retry later",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )  # fmt: skip
            self.holds_slot = True
            self.body_timer = self.connection.loop.call_later(route.body_timeout_s, self.late)
            self.collector = BodyCollector(self, cycle.body)
            cycle.body = bytearray()
            cycle.message_event = self.collector
            self.connection.flow.resume_reading()
        except ProtocolError as err:
            self.answer_error(err.status, err.message, err.headers)
        except Exception as err:  # noqa: BLE001  (the client learns why, the server goes on)
            self.answer_error(500, f"internal error: {type(err).__name__}: {err}", {})

    def body_progress(self) -> None:
        """The protocol received more of the body, all of it, or lost the connection."""
        cycle = self.cycle
        if cycle.response_complete or not self.holds_slot:
            return
        if cycle.disconnected:
            self.end_body()
            cycle.response_complete = True
            self.finish(CLIENT_GONE_STATUS)
        elif not cycle.more_body:
            self.end_body()
            self.body_complete(self.collector.body())
        else:
            self.connection.flow.resume_reading()

    def late(self) -> None:
        """The body's deadline passed."""
        self.body_timer = None
        if not self.cycle.response_complete:
            self.end_body()
            limit = self.route.body_timeout_s
            self.answer_error(408, f"the body must arrive within {limit:g} s", {})

    def end_body(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        if self.holds_slot:
            self.holds_slot = False
            self.route.slots.release()

    def body_complete(self, body: bytes | bytearray) -> None:
        served = self.served
        try:
            parsed = self.parsed = parse_infer_request(body, self.header_length)
            first = parsed.inputs[0].array
            self.log_fields = {
                "model": self.name, "version": served.version, "id": parsed.id,
                "rows": int(first.shape[0]) if first.ndim else 0,
            }  # fmt: skip
            future = served.submit_checked(parsed)
            if future is None:  # encoded images: decoded off the loop by the async route
                future = asyncio.ensure_future(served.infer(parsed))
                future.add_done_callback(self.selected_outputs_done)
            else:
                future.add_done_callback(self.outputs_done)
        except ProtocolError as err:
            self.answer_error(err.status, err.message, err.headers)
        except Exception as err:  # noqa: BLE001
            self.answer_error(500, f"internal error: {type(err).__name__}: {err}", {})

    def outputs_done(self, future: asyncio.Future) -> None:
        self.answer_outputs(future, select=True)

    def selected_outputs_done(self, future: asyncio.Future) -> None:
        self.answer_outputs(future, select=False)

    def answer_outputs(self, future: asyncio.Future, select: bool) -> None:
        served = self.served
        try:
            outputs = future.result()
            if select:
                outputs = served.requested_outputs(self.parsed, outputs)
            content, binary = encode_infer_response(self.name, served.version, self.parsed, outputs)
        except ProtocolError as err:
            self.answer_error(err.status, err.message, err.headers)
            return
        except BaseException as err:  # noqa: BLE001  (a cancelled future included)
            self.answer_error(500, f"internal error: {type(err).__name__}: {err}", {})
            return
        if binary:
            self.answer(200, content, _BINARY_TYPE + _encoded_headers(binary))
        else:
            self.answer(200, content, _JSON_TYPE)

    def answer_error(self, status: int, message: str, headers: dict[str, str]) -> None:
        content = json.dumps(error_body(message)).encode()
        self.answer(status, content, _JSON_TYPE + _encoded_headers(headers))

    def answer(self, status: int, content: bytes, headers: bytes) -> None:
        """Writes the answer (unless the client went), then lets the connection go on to
        its next request, as uvicorn's cycle does when an ASGI response completes."""
        cycle = self.cycle
        cycle.response_complete = True
        if not cycle.disconnected:
            connection = self.connection
            head = [_status_line(status)]
            head.extend(b"%s: %s\r\n" % pair for pair in connection.server_state.default_headers)
            head.append(headers)
            head.append(b"content-length: %d\r\n" % len(content))
            if not cycle.keep_alive:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            head.append(content)
            connection.transport.write(b"".join(head))
            if not cycle.keep_alive:
                connection.transport.close()
        self.finish(status)
        cycle.on_response()

    def finish(self, status: int) -> None:
        """Counts the request and writes its log line."""
        self.end_body()
        served = self.served
        # Unknown names share one label: clients must not grow the metrics without bound.
        if not self.counted:
            pass
        elif served is None:
            self.route.metrics.count_request("", "", status)
        else:
            self.route.metrics.count_request(served.name, served.version, status)
        scope = self.cycle.scope
        log_request({
            "method": scope["method"], "path": scope["path"], "status": status,
            "ms": round((time.perf_counter() - self.started) * 1000, 3),
            **self.log_fields,
        })  # fmt: skip
