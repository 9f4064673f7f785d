"""benchmarks/_serving_profile.py reads the batches a server formed from its ``/metrics``: the
counts it reports are the batches fed to the server's metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gometal.serving.batcher import BatchStats
from gometal.serving.metrics import ServingMetrics

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _serving_ab import serving_code_at
from _serving_profile import batch_counts, cpu_split


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


def test_cpu_split_counts_the_loop_the_busiest_threads_and_the_rest() -> None:
    main, engines, small, gone, new = 10, (11, 12), 13, 14, 15
    before = {main: (1.0, 0.5), engines[0]: (2.0, 0.1), engines[1]: (3.0, 0.2),
              small: (0.1, 0.0), gone: (0.2, 0.0)}  # fmt: skip
    after = {main: (1.5, 0.7), engines[0]: (4.0, 0.2), engines[1]: (4.5, 0.3),
             small: (0.2, 0.1), new: (0.05, 0.0)}  # fmt: skip
    split = cpu_split(before, after, main, 2)
    expected = {"loop": (0.5, 0.2), "engines": (2.0 + 1.5, 0.1 + 0.1), "other": (0.1 + 0.05, 0.1)}
    assert split.keys() == expected.keys()
    for part, (user, system) in expected.items():
        assert split[part] == pytest.approx((user, system)), part


def test_the_ab_tool_serves_the_serving_code_of_a_revision(tmp_path: Path) -> None:
    folder = serving_code_at("HEAD", str(tmp_path))
    committed = subprocess.run(["git", "-C", str(BENCHMARKS.parent), "show",
                                "HEAD:python/gometal/serving/batcher.py"],
                               capture_output=True, check=True).stdout  # fmt: skip
    assert (Path(folder) / "batcher.py").read_bytes() == committed
    probe = (f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); "
             "from _serving_ab import ServingFrom; "
             f"sys.meta_path.insert(0, ServingFrom({folder!r})); "
             "import gometal.serving, gometal.serving.fast_infer as f; "
             "print(gometal.serving.__file__); print(f.__file__)")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.split()  # fmt: skip
    assert loaded == [str(Path(folder) / "__init__.py"), str(Path(folder) / "fast_infer.py")]
