"""Dynamic batching as NVIDIA Triton's: concurrent requests merged into one engine call.

Requests wait in one bounded FIFO queue per model version. An instance (a thread owning
its own copy of the model) takes the oldest request, then keeps adding the requests queued
behind it, of the same sample shape, until the batch holds ``max_batch_size`` rows or
``max_queue_delay_s`` has passed since the oldest arrived; it runs them as one batch and
hands each request its own rows of the outputs. With ``start_when_idle``, an idle instance
that finds one request alone in the queue runs it at once instead of waiting for company:
one client then pays no batching delay, while requests that arrive during a batch's pass
still queue up and merge. While one instance computes, the next
one gathers. With ``gather_while_busy``, a free instance waits for company only while
another instance computes: until the queue holds as many rows as that instance's batch,
or until it finishes; so the engine never idles and batches grow with the load instead of
running one row at a time. Past ``max_queue`` waiting requests, :meth:`DynamicBatcher.submit` refuses
at once (:class:`QueueFull`): memory stays bounded however fast clients send.

The request path stays cheap for the thread that submits: the queued rows are counted per
sample shape as they arrive, and an instance is woken only when it has something to do
(the queue was empty, or a batch is full), not at every request. Requests submitted from
an event loop (:meth:`DynamicBatcher.submit_async`) get their answers back in one
``call_soon_threadsafe`` per batch, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["AnswerReceiver", "BatchStats", "BatcherClosed", "DynamicBatcher", "QueueFull"]

_log = logging.getLogger(__name__)

# One instance's forward pass: the inputs of a merged batch -> its outputs, rows aligned.
BatchRunner = Callable[[list[np.ndarray]], list[np.ndarray]]
# A check of a merged batch's rows: row index -> why that row's request is refused.
RowScreen = Callable[[list[np.ndarray]], dict[int, Exception]]


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already; the client should retry later."""


class BatcherClosed(Exception):
    """The batcher is draining or closed and accepts no new request."""


@dataclass(frozen=True)
class BatchStats:
    """What one merged batch did, for metrics.

    Attributes:
        requests: how many requests it merged.
        rows: its rows (the batch size).
        queue_waits_s: each request's time in the queue, in seconds.
        compute_s: the forward pass's time, in seconds.
    """

    requests: int
    rows: int
    queue_waits_s: tuple[float, ...]
    compute_s: float


@dataclass
class _Pending:
    inputs: list[np.ndarray]
    rows: int
    shape_key: tuple[tuple[int, ...], ...]
    # A concurrent future (submit), or an AnswerReceiver of ``loop`` (submit_to).
    future: Any = None
    loop: asyncio.AbstractEventLoop | None = None
    enqueued: float = field(default_factory=time.perf_counter)

    def take(self) -> bool:
        """Whether the request still wants its answer (its client may have left)."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()
        return not self.future.done()


def _merged(batch: list[_Pending]) -> list[np.ndarray]:
    """The inputs of a batch's requests, concatenated along the rows."""
    if len(batch) == 1:
        return batch[0].inputs
    return [
        np.concatenate([p.inputs[i] for p in batch], axis=0) for i in range(len(batch[0].inputs))
    ]


def _refusals(batch: list[_Pending], refused: dict[int, Exception]) -> list[Exception | None]:
    """Each request's refusal: the exception of its first refused row, or None."""
    errors, offset = [], 0
    for pending in batch:
        rows = range(offset, offset + pending.rows)
        errors.append(next((refused[row] for row in rows if row in refused), None))
        offset += pending.rows
    return errors


class AnswerReceiver(Protocol):
    """What receives a request's answer in the event loop (an asyncio future is one)."""

    def done(self) -> bool:
        """Whether it wants no answer any more (a cancelled future)."""

    def set_result(self, result: Any) -> None:
        """Receives the request's outputs."""

    def set_exception(self, exception: BaseException) -> None:
        """Receives the error that failed the request."""


def _deliver(answers: list[tuple[AnswerReceiver, Any, bool]]) -> None:
    """Answers the receivers of one batch, in their loop (skips those done already)."""
    for receiver, value, failed in answers:
        try:
            if not receiver.done():
                if failed:
                    receiver.set_exception(value)
                else:
                    receiver.set_result(value)
        except Exception:  # noqa: BLE001  (one failing receiver must not starve the others)
            _log.exception("a batch's answer could not be delivered")


class DynamicBatcher:
    """Merges concurrent requests into batches and runs them on one or more instances.

    Args:
        runners: one forward pass per instance (each runs in its own thread, so give
            each its own model copy: an engine runs one call at a time).
        max_batch_size: the most rows in a merged batch (a request may hold up to this).
        max_queue_delay_s: how long the oldest request waits for others to join it.
        max_queue: the most requests waiting; more are refused with :class:`QueueFull`.
        on_batch: called with a :class:`BatchStats` after each batch (metrics).
        screen: checks a merged batch's rows before it runs (one call per batch instead
            of one per request, off the submitting thread); a request with a refused row
            gets that row's exception, the others their outputs.
        start_when_idle: an instance that is free and finds a single request queued runs
            it at once; without it, that request waits ``max_queue_delay_s`` for others.
        gather_while_busy: while another instance computes, a free instance waits until
            the queue holds as many rows as that instance's batch (or it finishes) before
            it takes a batch; with no other instance busy, the rules above hold.

    Raises:
        ValueError: a setting out of range, or no runner.

    Example:
        >>> batcher = DynamicBatcher([lambda xs: [xs[0] * 2]], max_batch_size=8,
        ...                          max_queue_delay_s=0.002, max_queue=64)
        >>> batcher.submit([np.ones((1, 3), np.float32)]).result()[0].tolist()
        [[2.0, 2.0, 2.0]]
        >>> batcher.close()
    """

    def __init__(
        self,
        runners: Sequence[BatchRunner],
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        screen: RowScreen | None = None,
        start_when_idle: bool = False,
        gather_while_busy: bool = False,
    ) -> None:
        if not runners:
            raise ValueError("DynamicBatcher needs at least one runner (instance)")
        if max_batch_size < 1 or max_queue < 1 or not max_queue_delay_s >= 0:
            raise ValueError(
                f"DynamicBatcher needs max_batch_size >= 1, max_queue >= 1 and "
                f"max_queue_delay_s >= 0, got {max_batch_size}, {max_queue}, {max_queue_delay_s}"
            )
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = float(max_queue_delay_s)
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.screen = screen
        self.start_when_idle = bool(start_when_idle)
        self.gather_while_busy = bool(gather_while_busy)
        # The rows of each computing instance's batch (by thread name), and a count of
        # finished batches: a gathering instance stops waiting when either changes.
        self._busy_rows: dict[str, int] = {}
        self._batches_done = 0
        # The queued rows that wake a gathering instance (max_batch_size when none gathers).
        self._wake_rows = max_batch_size
        self._queue: deque[_Pending] = deque()
        self._rows_by_shape: dict[tuple[tuple[int, ...], ...], int] = {}
        self._changed = threading.Condition()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._serve, args=(runner,), daemon=True, name=f"batcher-{i}")
            for i, runner in enumerate(runners)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting in the queue now."""
        return len(self._queue)

    def submit(self, inputs: list[np.ndarray]) -> Future:
        """Queues one request: its inputs, all with the same rows (at most max_batch_size).

        Args:
            inputs: one array per model input, batch first.

        Returns:
            A future of the request's outputs (one array per model output, its rows only).

        Raises:
            QueueFull: ``max_queue`` requests are waiting already.
            BatcherClosed: the batcher is draining.
            ValueError: the request holds more than ``max_batch_size`` rows.
        """
        pending = self._pending(inputs, Future())
        self._enqueue(pending)
        return pending.future

    def submit_async(self, inputs: list[np.ndarray]) -> asyncio.Future:
        """:meth:`submit` from a coroutine: the answer comes back as an asyncio future of
        the running loop, set with the rest of its batch in one hand-off to the loop.

        Args:
            inputs: one array per model input, batch first.

        Returns:
            An asyncio future of the request's outputs (cancel it to drop the request
            while it still waits).

        Raises:
            QueueFull, BatcherClosed, ValueError: as :meth:`submit`.

        Example:
            >>> outputs = await batcher.submit_async([x])  # doctest: +SKIP
        """
        # No concurrent future: its condition and lock would cost the event loop for nothing.
        future = asyncio.get_running_loop().create_future()
        self.submit_to(inputs, future)
        return future

    def submit_to(self, inputs: list[np.ndarray], receiver: AnswerReceiver) -> None:
        """Queues a request whose answer goes to ``receiver`` in the running event loop,
        with the rest of its batch in one hand-off to the loop: ``set_result(outputs)``,
        or ``set_exception(error)``; none when ``receiver.done()`` is true by then. An
        asyncio future is one; a plain object answers with no future or callback handle.

        Args:
            inputs: one array per model input, batch first.
            receiver: what receives the answer (:class:`AnswerReceiver`).

        Raises:
            QueueFull, BatcherClosed, ValueError: as :meth:`submit`.

        Example:
            >>> batcher.submit_to([x], loop.create_future())  # doctest: +SKIP
        """
        pending = self._pending(inputs, receiver)
        pending.loop = asyncio.get_running_loop()
        self._enqueue(pending)

    def _pending(self, inputs: list[np.ndarray], future: Any) -> _Pending:
        rows = int(inputs[0].shape[0])
        if rows > self.max_batch_size:
            raise ValueError(f"a request may hold at most {self.max_batch_size} rows, got {rows}")
        return _Pending(inputs, rows, tuple(a.shape[1:] for a in inputs), future)

    def _enqueue(self, pending: _Pending) -> None:
        with self._changed:
            if self._closing:
                raise BatcherClosed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are queued, the most allowed")
            was_empty = not self._queue
            self._queue.append(pending)
            rows = self._rows_by_shape.get(pending.shape_key, 0) + pending.rows
            self._rows_by_shape[pending.shape_key] = rows
            # Waking an instance costs the submitting thread the GIL: only when it has work.
            if was_empty or rows >= self._wake_rows:
                self._changed.notify_all()

    def close(self) -> None:
        """Refuses new requests, finishes every queued one, and stops the instances."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()

    # -- instances ------------------------------------------------------------------------
    def _take_batch(self) -> list[_Pending] | None:
        """Waits for a batch (None when closing with an empty queue); holds no lock after."""
        with self._changed:
            while not self._queue:
                if self._closing:
                    return None
                self._changed.wait()
            if self.gather_while_busy and self._busy_rows:
                self._gather_while_busy()
                return self._pop_batch()  # whatever came: the engine must not idle
            if self.start_when_idle and len(self._queue) == 1:
                return self._pop_batch()  # alone and an instance is free: no one to wait for
            first = self._queue[0]
            deadline = first.enqueued + self.max_queue_delay_s
            while not self._closing and self._rows_ready(first) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._changed.wait(remaining):
                    break
                if not self._queue or self._queue[0] is not first:
                    break  # another instance took it: start over with the new oldest
            return self._pop_batch()

    def _gather_while_busy(self) -> None:
        """Waits (lock held) while another instance computes, until the oldest request's
        shape has as many rows queued as the smallest batch computing, or a batch ends."""
        done = self._batches_done
        while self._queue and self._busy_rows and not self._closing:
            if self._batches_done != done:
                break
            target = min(self.max_batch_size, *self._busy_rows.values())
            if self._rows_ready(self._queue[0]) >= target:
                return
            self._wake_rows = target
            self._changed.wait()
        self._wake_rows = self.max_batch_size

    def _rows_ready(self, first: _Pending) -> int:
        return self._rows_by_shape.get(first.shape_key, 0)

    def _pop_batch(self) -> list[_Pending]:
        if not self._queue:
            return []
        first = self._queue[0]
        batch, rows, kept = [], 0, deque()
        while self._queue:
            pending = self._queue.popleft()
            fits = (
                pending.shape_key == first.shape_key and rows + pending.rows <= self.max_batch_size
            )
            if fits:
                batch.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
                if pending.shape_key == first.shape_key:
                    break  # requests keep their order: none jumps over one that did not fit
        kept.extend(self._queue)
        self._queue = kept
        left = self._rows_by_shape[first.shape_key] - rows
        if left:
            self._rows_by_shape[first.shape_key] = left
        else:
            del self._rows_by_shape[first.shape_key]
        if self._queue:
            self._changed.notify_all()  # another idle instance may gather the rest
        if self.gather_while_busy:
            self._busy_rows[threading.current_thread().name] = rows
        return batch

    def _serve(self, runner: BatchRunner) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(runner, batch)
            if batch and self.gather_while_busy:
                with self._changed:
                    self._busy_rows.pop(threading.current_thread().name, None)
                    self._batches_done += 1
                    self._changed.notify_all()  # a gathering instance stops waiting

    def _run(self, runner: BatchRunner, batch: list[_Pending]) -> None:
        # A request whose client left is dropped; the others can no longer be cancelled.
        batch = [p for p in batch if p.take()]
        if not batch:
            return
        started = time.perf_counter()
        waits = tuple(started - p.enqueued for p in batch)
        try:
            inputs = _merged(batch)
            refused = self.screen(inputs) if self.screen is not None else {}
            errors = _refusals(batch, refused) if refused else [None] * len(batch)
            kept = [pending for pending, error in zip(batch, errors) if error is None]
            if len(kept) < len(batch):  # rare: the engine runs only the accepted requests
                inputs = _merged(kept) if kept else []
            outputs = runner(inputs) if kept else []
        except Exception as err:  # noqa: BLE001  (every request of the batch learns why)
            self._answer(batch, [(err, True)] * len(batch))
            return
        compute = time.perf_counter() - started
        answers, offset = [], 0
        for pending, error in zip(batch, errors):
            if error is not None:
                answers.append((error, True))
                continue
            answers.append(([out[offset : offset + pending.rows] for out in outputs], False))
            offset += pending.rows
        self._answer(batch, answers)
        if self.on_batch is not None:
            self.on_batch(BatchStats(len(batch), offset, waits, compute))

    @staticmethod
    def _answer(batch: list[_Pending], answers: list[tuple[Any, bool]]) -> None:
        """Hands each request its answer: asyncio futures in one hand-off per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for pending, (value, failed) in zip(batch, answers):
            if pending.loop is not None:
                by_loop.setdefault(pending.loop, []).append((pending.future, value, failed))
            elif failed:
                pending.future.set_exception(value)
            else:
                pending.future.set_result(value)
        for loop, delivered in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, delivered)
            except RuntimeError:  # the loop closed: nobody waits for these answers
                pass
