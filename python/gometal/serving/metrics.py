"""The server's Prometheus metrics, in a registry of their own (one per application).

- ``gometal_inference_requests_total{model, version, status}``: requests answered.
- ``gometal_inference_queue_seconds{model, version}``: time in the batching queue.
- ``gometal_inference_compute_seconds{model, version}``: time of each merged batch's pass.
- ``gometal_inference_batch_size{model, version}``: rows per merged batch.
- ``gometal_inference_queue_depth{model, version}``: requests waiting now.
- ``gometal_streamed_tokens_total{model, version}``: tokens generated for ``generate_stream``.
- ``gometal_generate_requests{model, version}``: generate requests admitted and not finished
  (the one generating and those waiting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .batcher import BatchStats

__all__ = ["CONTENT_TYPE", "ServingMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServingMetrics:
    """Counters and histograms of one server, exported in Prometheus' text format.

    Args:
        max_batch_size: the largest batch any model runs (sets the batch-size buckets).

    Example:
        >>> metrics = ServingMetrics(64)
        >>> metrics.count_request("mlp", 1, 200)
        >>> b"gometal_inference_requests_total" in metrics.render()
        True
    """

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        self.requests = Counter(
            "gometal_inference_requests", "Inference requests answered, by HTTP status",
            (*labels, "status"), registry=self.registry,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "gometal_inference_queue_seconds", "Time a request waited in the batching queue",
            labels, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "gometal_inference_compute_seconds", "Time of one merged batch's forward pass",
            labels, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        sizes, size = [], 1
        while size < max_batch_size:
            sizes.append(size)
            size *= 2
        self.batch_size = Histogram(
            "gometal_inference_batch_size", "Rows per merged batch",
            labels, buckets=(*sizes, max_batch_size), registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "gometal_inference_queue_depth", "Requests waiting in the batching queue",
            labels, registry=self.registry,
        )  # fmt: skip

        self.generate_requests = Gauge(
            "gometal_generate_requests",
            "Generate requests admitted and not finished (generating or waiting)",
            labels, registry=self.registry,
        )  # fmt: skip
        self._request_counters: dict[tuple[str, int | str, int], Any] = {}
        self.streamed_tokens = Counter(
            "gometal_streamed_tokens", "Tokens generated for generate_stream requests",
            labels, registry=self.registry,
        )  # fmt: skip

    def streamed_token_counter(self, model: str, version: int | str) -> Callable[[], None]:
        """Counts one token streamed by a model version, each time it is called."""
        return self.streamed_tokens.labels(model, str(version)).inc

    def count_request(self, model: str, version: int | str, status: int) -> None:
        """Counts one answered inference request."""
        key = (model, version, status)
        counter = self._request_counters.get(key)
        if counter is None:  # label lookups cost more than the count: keep each child
            counter = self.requests.labels(model, str(version), str(status))
            self._request_counters[key] = counter
        counter.inc()

    def batch_observer(self, model: str, version: int) -> Callable[[BatchStats], None]:
        """The ``on_batch`` callback of one model version's batcher."""
        queue = self.queue_seconds.labels(model, str(version))
        compute = self.compute_seconds.labels(model, str(version))
        sizes = self.batch_size.labels(model, str(version))

        def observe(stats: BatchStats) -> None:
            for wait in stats.queue_waits_s:
                queue.observe(wait)
            compute.observe(stats.compute_s)
            sizes.observe(stats.rows)

        return observe

    def watch_queue(self, model: str, version: int, depth: Callable[[], int]) -> None:
        """Reports ``depth()`` as the queue depth of a model version at each scrape."""
        self.queue_depth.labels(model, str(version)).set_function(depth)

    def watch_generations(self, model: str, version: int, admitted: Callable[[], int]) -> None:
        """Reports ``admitted()`` as the generate requests of a model version at each scrape."""
        self.generate_requests.labels(model, str(version)).set_function(admitted)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
