"""Where a served request's time goes: benchmark G's CNN under ``wrk``, the server's event loop
under cProfile, the batches it formed from its own ``/metrics``.

    python benchmarks/_serving_profile.py [--clients 64] [--seconds 8] [--top 25]
                                          [--server-option=--instances=1 ...]

It serves the CNN with ``gometal serve`` (bench_serving.py's options unless ``--server-option``
adds more), loads it with ``wrk`` for a warm-up and a timed run, then prints:

- the batches: how many, their mean rows, the rows histogram, and the engine's compute time per
  batch and per row (the batcher's own ``gometal_inference_compute_seconds``);
- the CPU per request, user and system (the kernel's) apart: the server's event loop (its main
  thread), its engine threads (its busiest other threads: one per instance), the rest of it, and
  wrk itself: what a request costs the machine's cores;
- the event loop's functions by their own time (cProfile of the main thread; the engine and
  batcher threads are not in it), per request.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import resource
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


def thread_times(pid: int) -> dict[int, tuple[float, float]]:
    """Each thread of process ``pid``: its id -> (user, system) CPU seconds so far."""
    import psutil

    try:
        return {t.id: (t.user_time, t.system_time) for t in psutil.Process(pid).threads()}
    except psutil.Error:
        return {}


def cpu_split(before: dict, after: dict, main_id: int, engines: int) -> dict[str, tuple]:
    """The CPU (user, system) seconds each part of a server spent between two
    :func:`thread_times`: "loop" (the main thread), "engines" (the ``engines`` busiest other
    threads, one per instance) and "other" (the rest; a thread that ended between the two
    is not counted)."""
    spent = {tid: tuple(a - b for a, b in zip(times, before.get(tid, (0.0, 0.0))))
             for tid, times in after.items()}  # fmt: skip
    rest = sorted((tid for tid in spent if tid != main_id), key=lambda t: -sum(spent[t]))
    parts = {"loop": [main_id], "engines": rest[:engines], "other": rest[engines:]}
    return {name: (sum(spent.get(t, (0.0, 0.0))[0] for t in tids),
                   sum(spent.get(t, (0.0, 0.0))[1] for t in tids))
            for name, tids in parts.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="no cProfile (its cost)")
    parser.add_argument("--instances", type=int, default=2,
                        help="the server's instances: its engine threads, counted apart")  # fmt: skip
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
            before, threads0 = _batches(server.url), thread_times(server.process.pid)
            wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            result = run_wrk(server.url, MODEL_NAME, folder, args.clients, 0, args.seconds)
            elapsed = time.perf_counter() - t0
            wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            after, threads1 = _batches(server.url), thread_times(server.process.pid)
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
        split = cpu_split(threads0, threads1, server.process.pid, args.instances)
        split["wrk"] = (wrk1.ru_utime - wrk0.ru_utime, wrk1.ru_stime - wrk0.ru_stime)
        print("CPU ms/request (user + system): " + ", ".join(
            f"{name} {(user + system) / answered * 1e3:.3f} ({user / answered * 1e3:.3f} + "
            f"{system / answered * 1e3:.3f})" for name, (user, system) in split.items()))  # fmt: skip
        total = sum(user + system for user, system in split.values())
        print(
            f"cores used: {total / elapsed:.2f} (server "
            f"{(total - sum(split['wrk'])) / elapsed:.2f}, wrk {sum(split['wrk']) / elapsed:.2f})"
        )
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
