"""Dynamic batching as NVIDIA Triton's: concurrent requests merged into one engine call.

Requests wait in one bounded FIFO queue per model version. An instance (a thread owning
its own copy of the model) takes the oldest request, then keeps adding the requests queued
behind it, of the same sample shape, until the batch holds ``max_batch_size`` rows or
``max_queue_delay_s`` has passed since the oldest arrived; it runs them as one batch and
hands each request its own rows of the outputs. While one instance computes, the next
one gathers. Past ``max_queue`` waiting requests, :meth:`DynamicBatcher.submit` refuses
at once (:class:`QueueFull`): memory stays bounded however fast clients send.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BatchStats", "BatcherClosed", "DynamicBatcher", "QueueFull"]

# One instance's forward pass: the inputs of a merged batch -> its outputs, rows aligned.
BatchRunner = Callable[[list[np.ndarray]], list[np.ndarray]]


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
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Merges concurrent requests into batches and runs them on one or more instances.

    Args:
        runners: one forward pass per instance (each runs in its own thread, so give
            each its own model copy: an engine runs one call at a time).
        max_batch_size: the most rows in a merged batch (a request may hold up to this).
        max_queue_delay_s: how long the oldest request waits for others to join it.
        max_queue: the most requests waiting; more are refused with :class:`QueueFull`.
        on_batch: called with a :class:`BatchStats` after each batch (metrics).

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
        self._queue: deque[_Pending] = deque()
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
        rows = int(inputs[0].shape[0])
        if rows > self.max_batch_size:
            raise ValueError(f"a request may hold at most {self.max_batch_size} rows, got {rows}")
        pending = _Pending(inputs, rows, tuple(a.shape[1:] for a in inputs))
        with self._changed:
            if self._closing:
                raise BatcherClosed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are queued, the most allowed")
            self._queue.append(pending)
            self._changed.notify_all()
        return pending.future

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
            first = self._queue[0]
            deadline = first.enqueued + self.max_queue_delay_s
            while not self._closing and self._rows_ready(first) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._changed.wait(remaining):
                    break
                if not self._queue or self._queue[0] is not first:
                    break  # another instance took it: start over with the new oldest
            return self._pop_batch()

    def _rows_ready(self, first: _Pending) -> int:
        return sum(p.rows for p in self._queue if p.shape_key == first.shape_key)

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
        return batch

    def _serve(self, runner: BatchRunner) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(runner, batch)

    def _run(self, runner: BatchRunner, batch: list[_Pending]) -> None:
        # A request whose client left is dropped; the others can no longer be cancelled.
        batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not batch:
            return
        started = time.perf_counter()
        waits = tuple(started - p.enqueued for p in batch)
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = [
                    np.concatenate([p.inputs[i] for p in batch], axis=0)
                    for i in range(len(batch[0].inputs))
                ]
            outputs = runner(inputs)
        except Exception as err:  # noqa: BLE001  (every request of the batch learns why)
            for pending in batch:
                pending.future.set_exception(err)
            return
        compute = time.perf_counter() - started
        offset = 0
        for pending in batch:
            rows = slice(offset, offset + pending.rows)
            pending.future.set_result([out[rows] for out in outputs])
            offset += pending.rows
        if self.on_batch is not None:
            self.on_batch(BatchStats(len(batch), offset, waits, compute))
