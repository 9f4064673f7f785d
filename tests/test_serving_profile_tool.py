"""benchmarks/_serving_profile.py reads the batches a server formed from its ``/metrics``: the
counts it reports are the batches fed to the server's metrics."""

from __future__ import annotations

import sys
from pathlib import Path

from gometal.serving.batcher import BatchStats
from gometal.serving.metrics import ServingMetrics

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _serving_profile import batch_counts


def test_batch_counts_are_the_batches_the_metrics_saw() -> None:
    metrics = ServingMetrics(64)
    observe = metrics.batch_observer("cnn", 1)
    rows = [1, 3, 17, 64, 30]
    for count, compute_s in zip(rows, [0.001, 0.002, 0.004, 0.012, 0.006]):
        observe(BatchStats(requests=count, rows=count, queue_waits_s=(0.0,) * count,
                           compute_s=compute_s))  # fmt: skip
    counts = batch_counts(metrics.render().decode())
    assert counts["batches"] == len(rows)
    assert counts["rows"] == sum(rows)
    assert abs(counts["compute_s"] - 0.025) < 1e-9
    bounds = {"1.0": 1, "2.0": 1, "4.0": 2, "8.0": 2, "16.0": 2, "32.0": 4, "64.0": 5, "+Inf": 5}
    assert counts["buckets"] == bounds
