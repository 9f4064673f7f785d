"""Where a served request's time goes: benchmark G's CNN under ``wrk``, the server's event loop
under cProfile, the batches it formed from its own ``/metrics``.

    python benchmarks/_serving_profile.py [--clients 64] [--seconds 8] [--top 25]
                                          [--server-option=--instances=1 ...]

It serves the CNN with ``gometal serve`` (bench_serving.py's options unless ``--server-option``
adds more), loads it with ``wrk`` for a warm-up and a timed run, then prints:

- the batches: how many, their mean rows, the rows histogram, and the engine's compute time per
  batch and per row (the batcher's own ``gometal_inference_compute_seconds``);
- the server's CPU per request (all threads) and its main thread's (the event loop's);
- the event loop's functions by their own time (cProfile of the main thread; the engine and
  batcher threads are not in it), per request.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import signal
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _serving_wrk import run_wrk, write_wrk_inputs
from bench_serving import MODEL_NAME, Server, _free_port


def _metric_samples(text: str, name: str) -> dict[str, float]:
    """``name``'s samples in a Prometheus text page: the label text (or "") -> value."""
    samples = {}
    for line in text.splitlines():
        match = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            samples[match.group(1) or ""] = float(match.group(2))
    return samples


def _batches(url: str) -> dict:
    """The server's batch counts and times so far, from its ``/metrics``."""
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as answer:
        return batch_counts(answer.read().decode())


def batch_counts(text: str) -> dict:
    """A metrics page's batches: their count, rows, compute seconds, and the rows histogram
    (cumulative counts by upper bound, as Prometheus gives them), all models summed."""
    sizes = _metric_samples(text, "gometal_inference_batch_size_bucket")
    buckets = {}
    for labels, count in sizes.items():
        bound = re.search(r'le="([^"]+)"', labels).group(1)
        buckets[bound] = count
    return {
        "batches": sum(_metric_samples(text, "gometal_inference_batch_size_count").values()),
        "rows": sum(_metric_samples(text, "gometal_inference_batch_size_sum").values()),
        "compute_s": sum(_metric_samples(text, "gometal_inference_compute_seconds_sum").values()),
        "buckets": buckets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="no cProfile (its cost)")
    parser.add_argument("--server-option", action="append", default=[],
                        help="an option of gometal serve, as --server-option=--name=value")  # fmt: skip
    args = parser.parse_args()

    import numpy as np

    import gometal as gm
    from _frameworks import cnn_model
    from _workload import IMAGE_SHAPE

    model = cnn_model(gm)
    images = np.random.default_rng(0).standard_normal((64, *IMAGE_SHAPE), dtype=np.float32)
    expected = model.predict(images)
    with tempfile.TemporaryDirectory(prefix="gm-serving-profile-") as folder:
        model_path = os.path.join(folder, f"{MODEL_NAME}.safetensors")
        model.save(model_path)
        write_wrk_inputs(folder, images, expected)
        stats_path = os.path.join(folder, "loop.prof")
        port = _free_port()
        profiler = [] if args.no_profile else ["-m", "cProfile", "-o", stats_path]
        command = [sys.executable, *profiler, "-m", "gometal.apps.cli", "serve", model_path,
                   "--port", str(port), "--grpc-port", "0", "--max-batch-size", "64",
                   "--max-queue", "1024",
                   *args.server_option]  # fmt: skip
        server = Server("gometal serve", command, port, folder)
        try:
            server.wait_ready()
            print(server.log_tail())
            run_wrk(server.url, MODEL_NAME, folder, args.clients, args.warmup_s, 0)
            before, cpu0, loop0 = (
                _batches(server.url),
                server.cpu_seconds(),
                server.loop_cpu_seconds(),
            )
            t0 = time.perf_counter()
            result = run_wrk(server.url, MODEL_NAME, folder, args.clients, 0, args.seconds)
            elapsed = time.perf_counter() - t0
            after, cpu1, loop1 = (
                _batches(server.url),
                server.cpu_seconds(),
                server.loop_cpu_seconds(),
            )
        finally:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(60)
        answered = result["answered"]
        batches = after["batches"] - before["batches"]
        rows = after["rows"] - before["rows"]
        compute = after["compute_s"] - before["compute_s"]
        print(f"\n{args.clients} connections, {elapsed:.1f} s: {result['throughput']:.1f} req/s, "
              f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors "
              f"{result['errors']}, wrong {result['wrong']}")  # fmt: skip
        print(f"batches: {batches:.0f}, mean rows {rows / max(batches, 1):.1f}; compute "
              f"{compute / max(batches, 1) * 1e3:.2f} ms per batch, "
              f"{compute / max(rows, 1) * 1e3:.3f} ms per row, engine busy "
              f"{compute / elapsed:.0%} of the time")  # fmt: skip
        previous = 0.0
        shown = []
        for bound, count in sorted(after["buckets"].items(), key=lambda kv: float(kv[0])):
            total = count - before["buckets"].get(bound, 0.0)
            shown.append(f"<={bound}: {total - previous:.0f}")
            previous = total
        print("rows per batch: " + ", ".join(shown))
        print(f"server CPU {(cpu1 - cpu0) / answered * 1e3:.3f} ms/request, event loop "
              f"{(loop1 - loop0) / answered * 1e3:.3f} ms/request (main thread)")  # fmt: skip
        if not args.no_profile:
            print(f"\nevent loop, own time per request (us), over the whole run "
                  f"({answered} + warm-up requests):")  # fmt: skip
            stats = pstats.Stats(stats_path)
            total = stats.total_tt
            entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: args.top]
            for (file, line, name), (_cc, calls, own, cumulative, _callers) in entries:
                where = f"{os.path.basename(file)}:{line}({name})"
                print(f"  {own / total:6.1%}  calls {calls:>8}  own {own * 1e6 / calls:7.2f} us"
                      f"/call  cum {cumulative:6.2f} s  {where}")  # fmt: skip


if __name__ == "__main__":
    main()
