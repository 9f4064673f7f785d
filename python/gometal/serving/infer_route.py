"""The inference route, ``POST /v2/models/{name}[/versions/{v}]/infer``, answered by a
plain ASGI layer in front of the FastAPI routes.

Inference requests are the server's hot path: under load, each costs the event loop more
than its share of the model's compute. This layer matches them by splitting the path,
reads the headers it needs from the ASGI scope, reads the body from ``receive``,
decodes it (``numpy.frombuffer`` for binary tensors), queues it on the model's batcher
and sends the encoded answer, with no router, request object, dependency resolution or
response class in between. Every other path goes on to the FastAPI application
unchanged; the request guard (host, API key, log line) still wraps both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from ..viz.server_guard import BodyTooLarge, UploadSlots, read_body
from .guard import LOG_FIELDS_KEY, error_body
from .metrics import ServingMetrics
from .protocol import HEADER_LENGTH, ProtocolError, encode_infer_response, parse_infer_request
from .served_model import RETRY_AFTER_S, ServedModels

__all__ = [
    "CLIENT_GONE_STATUS",
    "THREAD_PARSE_BYTES",
    "InferRoute",
    "infer_target",
    "read_limited_body",
]

# Bodies this large are parsed in a worker thread, so the event loop keeps answering.
THREAD_PARSE_BYTES = 256 * 1024
# The status counted for a request whose client closed the connection before its body came.
CLIENT_GONE_STATUS = 499
_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode("latin-1")
_JSON_HEADERS = [(b"content-type", b"application/json")]
_BINARY_HEADERS = [(b"content-type", b"application/octet-stream")]


class ClientGone(Exception):
    """The client closed the connection before its request body was complete."""


def infer_target(path: str) -> tuple[str, str | None] | None:
    """The ``(model, version)`` an inference path names, or ``None`` for any other path.

    Example:
        >>> infer_target("/v2/models/cnn/versions/2/infer"), infer_target("/v2/models/cnn")
        (('cnn', '2'), None)
    """
    parts = path.split("/")
    if len(parts) == 5 and parts[4] == "infer" and parts[3]:
        name, version = parts[3], None
    elif len(parts) == 7 and parts[6] == "infer" and parts[4] == "versions" and parts[5]:
        name, version = parts[3], parts[5]
    else:
        return None
    if parts[0] or parts[1] != "v2" or parts[2] != "models" or not name:
        return None
    return name, version


def _header(scope: Scope, key: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == key:
            return value.decode("latin-1")
    return None


async def _chunks(first: dict[str, Any], receive: Receive) -> AsyncIterator[bytes]:
    message = first
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
        message = await receive()


async def _first_message(receive: Receive, timeout_s: float) -> dict[str, Any]:
    """``receive()`` within ``timeout_s``: a plain timer, as the body usually came with
    the headers (an anyio cancel scope per request costs more than the read)."""
    task = asyncio.current_task()
    expired = []

    def expire() -> None:
        expired.append(True)
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await receive()
    except asyncio.CancelledError:
        if not expired:
            raise
        if hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is handled here
            task.uncancel()
        raise TimeoutError() from None
    finally:
        timer.cancel()


async def read_limited_body(
    scope: Scope, receive: Receive, limit: int, timeout_s: float, slots: UploadSlots
) -> bytes | bytearray:
    """A request's body, refused before it is read when its ``Content-Length`` is over the
    limit, and read within ``timeout_s`` otherwise.

    Args:
        scope: the request's ASGI scope (its headers).
        receive: the request's ASGI ``receive``.
        limit: the most bytes accepted.
        timeout_s: the time the whole body may take.
        slots: the bodies received at once, shared by the server's routes.

    Returns:
        The body.

    Raises:
        ProtocolError: 400 for a ``Content-Length`` that is not a count, 413 past the
            limit, 415 for a compressed body, 503 when every slot is taken, 408 when the
            body is late.
        ClientGone: the client left before the body was complete.

    Example:
        >>> body = await read_limited_body(scope, receive, 2**24, 30.0, slots)  # doctest: +SKIP
    """
    declared = _header(scope, b"content-length")
    if declared is not None and not declared.isdigit():
        raise ProtocolError(400, f"Content-Length must be a byte count, got {declared!r}")
    if declared is not None and int(declared) > limit:
        raise ProtocolError(
            413, f"the body must be at most {limit} bytes, Content-Length says {declared}"
        )
    encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise ProtocolError(415, f"Content-Encoding {encoding!r} is not supported; send identity")
    if not slots.try_acquire():
        raise ProtocolError(
            503, f"{slots.limit} request bodies are being received; retry later",
            {"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip
    try:
        first = await _first_message(receive, timeout_s)
        if first["type"] == "http.request" and not first.get("more_body", False):
            body = first.get("body", b"")  # the usual case: the whole body came at once
            if len(body) > limit:
                raise BodyTooLarge(limit)
            return body
        return await read_body(_chunks(first, receive), limit, timeout_s)
    except BodyTooLarge:
        raise ProtocolError(413, f"the body must be at most {limit} bytes") from None
    except TimeoutError:
        raise ProtocolError(408, f"the body must arrive within {timeout_s:g} s") from None
    finally:
        slots.release()


class InferRoute:
    """ASGI middleware: answers inference requests itself, passes everything else on.

    Args:
        app: the application behind it (the FastAPI routes).
        models: the served model versions.
        metrics: where requests are counted.
        max_body_bytes: the largest request body.
        body_timeout_s: the time a body may take to arrive.
        slots: the bodies received at once, shared with the other routes.

    Example:
        >>> app.add_middleware(InferRoute, models=models, metrics=metrics,
        ...                    max_body_bytes=2**24, body_timeout_s=30.0,
        ...                    slots=UploadSlots(256))  # doctest: +SKIP
    """

    def __init__(
        self,
        app: ASGIApp,
        models: ServedModels,
        metrics: ServingMetrics,
        max_body_bytes: int,
        body_timeout_s: float,
        slots: UploadSlots,
    ) -> None:
        self.app = app
        self.models = models
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = None
        if scope["type"] == "http" and scope["method"] == "POST":
            target = infer_target(scope["path"])
        if target is None:
            await self.app(scope, receive, send)
            return
        status, body, headers = await self._answer(scope, receive, *target)
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, scope: Scope, receive: Receive, name: str, version: str | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        status, served = 500, None
        try:
            served = self.models.resolve(name, version)
            body = await read_limited_body(
                scope, receive, self.max_body_bytes, self.body_timeout_s, self.slots
            )
            header_length = _header(scope, _HEADER_LENGTH_KEY)
            if len(body) > THREAD_PARSE_BYTES:
                parsed = await anyio.to_thread.run_sync(parse_infer_request, body, header_length)
            else:
                parsed = parse_infer_request(body, header_length)
            first = parsed.inputs[0].array
            scope.setdefault("state", {})[LOG_FIELDS_KEY] = {
                "model": name, "version": served.version, "id": parsed.id,
                "rows": int(first.shape[0]) if first.ndim else 0,
            }  # fmt: skip
            outputs = await served.infer(parsed)
            content, binary = encode_infer_response(name, served.version, parsed, outputs)
            status = 200
            if not binary:
                return status, content, list(_JSON_HEADERS)
            return status, content, [*_BINARY_HEADERS, *_raw_headers(binary)]
        except ProtocolError as err:
            status = err.status
            return status, _error_json(err.message), [*_JSON_HEADERS, *_raw_headers(err.headers)]
        except ClientGone:
            status = CLIENT_GONE_STATUS
            return status, b"", []
        except Exception as err:  # noqa: BLE001  (the client learns why, the server goes on)
            message = f"internal error: {type(err).__name__}: {err}"
            return status, _error_json(message), list(_JSON_HEADERS)
        finally:
            # Unknown names share one label: clients must not grow the metrics without bound.
            if served is None:
                self.metrics.count_request("", "", status)
            else:
                self.metrics.count_request(served.name, served.version, status)


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _error_json(message: str) -> bytes:
    return json.dumps(error_body(message)).encode()
