"""The generate extension's streaming form: ``POST /v2/models/{name}/generate_stream``
answers with server-sent events (``text/event-stream``), one per generated token as it is
produced, as Triton's ``generate_stream`` does::

    data: {"model_name": "gpt", "model_version": "1", "text_output": "def m"}

    data: {"model_name": "gpt", "model_version": "1", "text_output": "a"}

The pieces joined are ``/generate``'s ``text_output`` for the same request (the first one
holds the prompt). An error before the first token is an ordinary JSON 4xx answer; one
after it is a last event ``data: {"error": message}``. Generation runs in a worker thread
and never waits on the client; it stops at the next token once the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .generation import TextGenerator
from .guard import error_body
from .protocol import ProtocolError

__all__ = ["EVENT_STREAM", "TokenStream", "event_stream_response", "server_sent_event"]

EVENT_STREAM = "text/event-stream"


class _ClientGone(Exception):
    """Raised in the worker thread to stop a generation nobody reads any more."""


def server_sent_event(document: dict[str, Any]) -> bytes:
    """One server-sent event whose data is ``document`` as JSON.

    Example:
        >>> server_sent_event({"text_output": "a"})
        b'data: {"text_output": "a"}\\n\\n'
    """
    return f"data: {json.dumps(document)}\n\n".encode()


class TokenStream:
    """A text generation in a worker thread, its pieces handed to the event loop.

    Args:
        generator: the model version's generator.
        text: the prompt.
        parameters: the parsed generation parameters.
        on_piece: called in the worker thread for each piece (e.g. a metric), or ``None``.

    Example:
        >>> stream = TokenStream(generator, "def ", {"max_tokens": 8})  # doctest: +SKIP
        >>> stream.start(); kind, value = await stream.next()  # doctest: +SKIP
    """

    def __init__(
        self,
        generator: TextGenerator,
        text: str,
        parameters: dict[str, Any],
        on_piece: Callable[[], None] | None = None,
    ) -> None:
        self._generator = generator
        self._text = text
        self._parameters = parameters
        self._on_piece = on_piece
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stopped = threading.Event()
        self._worker: asyncio.Task[None] | None = None

    def start(self, on_end: Callable[[], None] | None = None) -> None:
        """Starts the generation in a worker thread.

        Args:
            on_end: called in the event loop once the generation has ended, however
                (finished, failed, stopped, or cancelled before it began).
        """
        self._worker = asyncio.ensure_future(anyio.to_thread.run_sync(self._run))
        if on_end is not None:
            self._worker.add_done_callback(lambda _: on_end())

    def stop(self) -> None:
        """Stops the generation at its next token (the client went away)."""
        self._stopped.set()

    async def next(self) -> tuple[str, Any]:
        """The next ``("text", piece)``, ``("error", exception)`` or ``("end", None)``."""
        return await self._queue.get()

    def _put(self, item: tuple[str, Any]) -> None:
        # The loop may be closed by a shutdown while the worker finishes: nobody listens.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _emit(self, piece: str) -> None:
        if self._stopped.is_set():
            raise _ClientGone
        if self._on_piece is not None:
            self._on_piece()
        self._put(("text", piece))

    def _run(self) -> None:
        try:
            self._generator.stream(self._text, self._parameters, self._emit)
        except _ClientGone:
            return
        except Exception as err:  # noqa: BLE001  (the client hears it: a 4xx or an error event)
            self._put(("error", err))
            return
        self._put(("end", None))


class _EventStreamResponse(StreamingResponse):
    """A streaming response that calls ``on_close`` however it ends (finished, client
    disconnected, or cancelled)."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type=EVENT_STREAM, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _error_message(err: BaseException) -> str:
    if isinstance(err, ProtocolError):
        return err.message
    return f"internal error: {type(err).__name__}: {err}"


async def event_stream_response(
    stream: TokenStream, model_name: str, model_version: int | str
) -> StreamingResponse:
    """Waits for the stream's first piece and answers with the events of all pieces.

    Args:
        stream: a started :class:`TokenStream`.
        model_name: the model's name, in every event.
        model_version: its version, in every event.

    Returns:
        The ``text/event-stream`` response; closing it (or the client leaving) stops the
        generation.

    Raises:
        ProtocolError: the generation failed before its first piece (a 400 for a prompt
            past the model's context); any other error before it propagates as is.

    Example:
        >>> return await event_stream_response(stream, "gpt", 1)  # doctest: +SKIP
    """
    try:
        kind, value = await stream.next()
    except BaseException:
        stream.stop()
        raise
    if kind == "error":
        raise value
    fields = {"model_name": model_name, "model_version": str(model_version)}

    async def events() -> AsyncIterator[bytes]:
        item = (kind, value)
        try:
            while item[0] == "text":
                yield server_sent_event({**fields, "text_output": item[1]})
                item = await stream.next()
            if item[0] == "error":
                yield server_sent_event(error_body(_error_message(item[1])))
        finally:
            stream.stop()

    return _EventStreamResponse(events(), stream.stop)
