"""Inference requests answered in the HTTP protocol itself, with no ASGI task per request.

Under load, the per-request ASGI machinery (a scope, a task, ``receive``/``send`` messages,
the middleware chain, uvicorn's request cycle) costs the event loop more than parsing,
checking and encoding the request together. :class:`DirectInferRoute` answers the common
case of ``POST /v2/models/{name}[/versions/{v}]/infer`` from the connection's parser
callbacks: once its headers are read it becomes a :class:`DirectRequest` (no scope, no
cycle), the connection hands it the body, it is queued on the batcher, and the answer is
written from the batcher's future's callback.

It takes a request only when it can keep every rule the ASGI route keeps: a
``Content-Length`` of at most :data:`~.infer_route.THREAD_PARSE_BYTES` (larger bodies are
parsed in a worker thread), no ``Expect: 100-continue``, no content encoding, a plain path
(no query, no escapes). Everything else, and every other path, goes to the ASGI application
unchanged. The request guard (host, API key), the body's arrival deadline, the upload
slots, the queue bound (503 with ``Retry-After``), metrics and the request log line are
the ASGI route's. A :class:`DirectRequest` stands as the connection's request cycle, so
pipelined requests wait behind it in uvicorn's queue and a graceful shutdown closes the
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

__all__ = ["DirectInferRoute", "DirectRequest"]

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
        self._default_headers: tuple[Any, bytes] = (None, b"")

    def default_header_lines(self, server_state: Any) -> bytes:
        """uvicorn's headers of every answer (date, server) as header lines: encoded once
        per list (uvicorn makes a new one when the date changes, once a second)."""
        headers = server_state.default_headers
        source, lines = self._default_headers
        if source is not headers:
            lines = b"".join(b"%s: %s\r\n" % pair for pair in headers)
            self._default_headers = (headers, lines)
        return lines

    def request(
        self,
        connection: Any,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> DirectRequest | None:
        """The request whose headers the connection just read, when it is an inference
        request this route answers; ``None`` leaves it to the ASGI application.

        Args:
            connection: the HTTP protocol (its transport, flow control, loop, server state
                and ``on_response_complete``).
            method: the request's method, as parsed.
            target: the request target (the path; with a query or escapes it goes to ASGI).
            headers: ``(lowercase name, value)`` pairs, as uvicorn keeps them.
            keep_alive: whether the connection stays open after the answer.

        Returns:
            The request, not started: the connection starts it when it is its turn
            (:meth:`DirectRequest.start`) and hands it the body as it comes.
        """
        if method != b"POST" or b"?" in target or b"%" in target:
            return None
        path = target.decode("latin-1")
        found = infer_target(path)
        if found is None:
            return None
        length = encoding = header_length = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"content-encoding":
                encoding = value
            elif name == _HEADER_LENGTH_KEY:
                header_length = value.decode("latin-1")
            elif name == b"expect" and value.lower() == b"100-continue":
                return None
        if length is None or not length.isdigit() or int(length) > self.body_limit:
            return None
        if encoding is not None and encoding.strip().lower() != b"identity":
            return None
        scope = {"method": "POST", "path": path, "headers": headers}
        return DirectRequest(self, connection, scope, found, header_length, keep_alive)


class DirectRequest:
    """One inference request answered by :class:`DirectInferRoute`. It is also the
    connection's current request cycle: it has the fields and callbacks uvicorn's
    protocol reads of one (completion, disconnection, keep-alive, ``message_event``).

    The connection hands it the body's parts (:meth:`add_body`, :meth:`end_body`) and
    starts it when the requests before it are answered (:meth:`start`). A body complete
    by then holds no upload slot and arms no deadline."""

    __slots__ = (
        "began", "body_timer", "chunks", "connection", "counted", "disconnected",
        "header_length", "holds_slot", "keep_alive", "log_fields", "more_body", "name",
        "on_response", "parsed", "response_complete", "route", "scope", "served", "version",
    )  # fmt: skip

    def __init__(
        self,
        route: DirectInferRoute,
        connection: Any,
        scope: dict[str, Any],
        target: tuple[str, str | None],
        header_length: str | None,
        keep_alive: bool,
    ) -> None:
        self.route = route
        self.connection = connection
        self.scope = scope
        self.name, self.version = target
        self.header_length = header_length
        self.keep_alive = keep_alive
        self.began = time.perf_counter()
        self.served: ServedVersion | None = None
        self.log_fields: dict[str, Any] = {}
        self.body_timer: asyncio.TimerHandle | None = None
        self.holds_slot = False
        self.parsed: Any = None
        self.counted = True
        self.chunks: list[bytes] = []
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.on_response = connection.on_response_complete if connection is not None else None

    # A property, not an attribute holding self: that cycle left every answered request
    # (its body included) to the garbage collector instead of freeing it at once.
    @property
    def message_event(self) -> DirectRequest:
        """uvicorn sets its cycle's ``message_event`` when the client goes: see :meth:`set`."""
        return self

    def add_body(self, chunk: bytes) -> None:
        """Keeps one part of the body (the connection's parser hands them over)."""
        if not self.response_complete:
            self.chunks.append(chunk)

    def end_body(self) -> None:
        """The body is complete; answers it if the request was waiting for it."""
        self.more_body = False
        self.body_progress()

    def set(self) -> None:
        """uvicorn's signal on a cycle's ``message_event``: the client went away."""
        self.body_progress()

    def start(self) -> None:
        """Runs the checks and queues the request, or waits for the rest of its body."""
        route = self.route
        try:
            problem = route.guard.problem(self.scope)
            if problem is not None:
                status, message, headers = problem
                self.counted = False  # as the ASGI guard: refused before the route counts
                self.answer_error(status, message, headers)
                return
            self.served = route.models.resolve(self.name, self.version)
            if not self.more_body:  # the body came before the request's turn: all of it
                self.body_complete(self.body())
                return
            if not route.slots.try_acquire():
                raise ProtocolError(
                    503, f"{route.slots.limit} request bodies are being received; retry later",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )  # fmt: skip
            self.holds_slot = True
            self.body_timer = self.connection.loop.call_later(route.body_timeout_s, self.late)
            self.connection.flow.resume_reading()
        except ProtocolError as err:
            self.answer_error(err.status, err.message, err.headers)
        except Exception as err:  # noqa: BLE001  (the client learns why, the server goes on)
            self.answer_error(500, f"internal error: {type(err).__name__}: {err}", {})

    def body(self) -> bytes | bytearray:
        """The parts of the body received, as one buffer (a body in one part is not copied)."""
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def body_progress(self) -> None:
        """The body is complete, or the connection was lost, while the request waited for
        its body (holding an upload slot)."""
        if self.response_complete or not self.holds_slot:
            return
        if self.disconnected:
            self.release_body()
            self.response_complete = True
            self.finish(CLIENT_GONE_STATUS)
        elif not self.more_body:
            self.release_body()
            self.body_complete(self.body())

    def late(self) -> None:
        """The body's deadline passed."""
        self.body_timer = None
        if not self.response_complete:
            self.release_body()
            limit = self.route.body_timeout_s
            self.answer_error(408, f"the body must arrive within {limit:g} s", {})

    def release_body(self) -> None:
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
            if not served.submit_checked(parsed, self):  # encoded images: decoded off the loop
                task = asyncio.ensure_future(served.infer(parsed))
                task.add_done_callback(self.selected_outputs_done)
        except ProtocolError as err:
            self.answer_error(err.status, err.message, err.headers)
        except Exception as err:  # noqa: BLE001
            self.answer_error(500, f"internal error: {type(err).__name__}: {err}", {})

    # The batcher hands the answer straight to the request (an AnswerReceiver): no future.
    def done(self) -> bool:
        """Whether the request wants no answer any more: never (its client may have left,
        but it is counted and logged as answered)."""
        return False

    def set_result(self, outputs: list[Any]) -> None:
        """The batcher's answer: every output of the model."""
        self.answer_outputs(outputs, select=True)

    def set_exception(self, exception: BaseException) -> None:
        """The batcher's answer: the error that failed the request."""
        self.answer_failure(exception)

    def selected_outputs_done(self, task: asyncio.Future) -> None:
        try:
            outputs = task.result()
        except BaseException as err:  # noqa: BLE001  (a cancelled task included)
            self.answer_failure(err)
            return
        self.answer_outputs(outputs, select=False)

    def answer_outputs(self, outputs: list[Any], select: bool) -> None:
        served = self.served
        try:
            if select:
                outputs = served.requested_outputs(self.parsed, outputs)
            content, binary = encode_infer_response(self.name, served.version, self.parsed, outputs)
        except Exception as err:  # noqa: BLE001
            self.answer_failure(err)
            return
        if binary:
            self.answer(200, content, _BINARY_TYPE + _encoded_headers(binary))
        else:
            self.answer(200, content, _JSON_TYPE)

    def answer_failure(self, err: BaseException) -> None:
        if isinstance(err, ProtocolError):
            self.answer_error(err.status, err.message, err.headers)
        else:
            self.answer_error(500, f"internal error: {type(err).__name__}: {err}", {})

    def answer_error(self, status: int, message: str, headers: dict[str, str]) -> None:
        content = json.dumps(error_body(message)).encode()
        self.answer(status, content, _JSON_TYPE + _encoded_headers(headers))

    def answer(self, status: int, content: bytes, headers: bytes) -> None:
        """Writes the answer (unless the client went), then lets the connection go on to
        its next request, as uvicorn's cycle does when an ASGI response completes."""
        self.response_complete = True
        if not self.disconnected:
            connection = self.connection
            head = [_status_line(status), self.route.default_header_lines(connection.server_state)]
            head.append(headers)
            head.append(b"content-length: %d\r\n" % len(content))
            if not self.keep_alive:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            head.append(content)
            connection.transport.write_now(b"".join(head))
            if not self.keep_alive:
                connection.transport.close()
        self.finish(status)
        self.on_response()

    def finish(self, status: int) -> None:
        """Counts the request and writes its log line."""
        self.release_body()
        served = self.served
        # Unknown names share one label: clients must not grow the metrics without bound.
        if not self.counted:
            pass
        elif served is None:
            self.route.metrics.count_request("", "", status)
        else:
            self.route.metrics.count_request(served.name, served.version, status)
        scope = self.scope
        log_request({
            "method": scope["method"], "path": scope["path"], "status": status,
            "ms": round((time.perf_counter() - self.began) * 1000, 3),
            **self.log_fields,
        })  # fmt: skip
