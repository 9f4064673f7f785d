"""The serving code of a git revision against the working tree's: benchmark G's CNN served by
both at once, ``wrk`` windows alternating between them (bench_serving.py's ``--variant`` compares
settings of one code; this compares code).

    python benchmarks/_serving_ab.py [--base HEAD] [--clients 64] [--seconds 4] [--rounds 8]
                                     [--base-option=--instances=3] [--option=--instances=3]

The base server imports ``gometal.serving`` from ``git archive BASE`` (the rest of gometal, the
engine included, is the working tree's: only the serving code differs). Both servers stay up;
each round runs one window on each, in turn (the first one alternating), so both meet the
shared machine's moments alike. Per window it prints the throughput, p99, the mean rows per
batch, the CPU per request of the event loop, the engine threads, the rest of the server and
wrk, the cores used and the server's resident memory; then each side's medians and the
tree's throughput over the base's, round by round. Every answer is checked against offline
predict.

On the shared 2-core machine one window of the same server varies up to 1.5x: trust a change
that wins most rounds, and say the spread.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SERVE_FROM = "--serve-from"  # this script as a server: --serve-from FOLDER serve ARGS...


class ServingFrom:
    """An import finder loading ``gometal.serving`` and its modules from ``folder``: placed
    first, it wins over the editable install's finder, which maps every module to the tree.

    Example:
        >>> sys.meta_path.insert(0, ServingFrom("/tmp/old/python/gometal/serving"))  # doctest: +SKIP
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(self, name: str, path: object = None, target: object = None):
        if name == "gometal.serving":
            return importlib.util.spec_from_file_location(
                name, os.path.join(self.folder, "__init__.py"),
                submodule_search_locations=[self.folder],
            )  # fmt: skip
        if name.startswith("gometal.serving."):
            return importlib.machinery.PathFinder.find_spec(name, [self.folder])
        return None


def serving_code_at(revision: str, into: str) -> str:
    """Extracts ``python/gometal/serving`` at ``revision`` into ``into``; returns its folder.

    Raises:
        RuntimeError: git could not read that revision.
    """
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = subprocess.run(["git", "-C", repository, "archive", revision, "python/gometal/serving"],
                             capture_output=True, check=False)  # fmt: skip
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {revision}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
    return os.path.join(into, "python", "gometal", "serving")


def _serve_from(folder: str, argv: list[str]) -> int:
    sys.meta_path.insert(0, ServingFrom(folder))
    import gometal.serving.batcher

    loaded = gometal.serving.batcher.__file__
    if not loaded.startswith(folder):
        raise RuntimeError(f"gometal.serving came from {loaded}, not {folder}")
    from gometal.apps.cli import main

    sys.argv = ["gometal", *argv]
    return main()


def _window(server, folder: str, clients: int, seconds: float, model_name: str) -> dict:
    import psutil

    from _serving_profile import _batches, cpu_split, thread_times
    from _serving_wrk import run_wrk

    batches0, threads0 = _batches(server.url), thread_times(server.process.pid)
    wrk0, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    result = run_wrk(server.url, model_name, folder, clients, 0, seconds)
    elapsed = time.perf_counter() - started
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    batches1, threads1 = _batches(server.url), thread_times(server.process.pid)
    if result["wrong"] or result["errors"]:
        raise RuntimeError(f"{server.label}: {result['wrong']} wrong answers, "
                           f"{result['errors']} errors ({result['first_error']})")  # fmt: skip
    split = cpu_split(threads0, threads1, server.process.pid, 2)
    split["wrk"] = (wrk1.ru_utime - wrk0.ru_utime, wrk1.ru_stime - wrk0.ru_stime)
    answered = result["answered"]
    formed = max(1.0, batches1["batches"] - batches0["batches"])
    return {
        "req/s": result["throughput"],
        "p99 ms": result["p99_ms"],
        "rows": (batches1["rows"] - batches0["rows"]) / formed,
        **{f"{part} ms": sum(times) / answered * 1e3 for part, times in split.items()},
        "cores": sum(sum(times) for times in split.values()) / elapsed,
        "rss MB": psutil.Process(server.process.pid).memory_info().rss / 2**20,
    }


def _shown(values: dict) -> str:
    return "  ".join(f"{key} {value:.0f}" if value >= 100 else f"{key} {value:.3f}"
                     for key, value in values.items())  # fmt: skip


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == SERVE_FROM:
        sys.exit(_serve_from(sys.argv[2], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the revision to compare with")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0, help="each window")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--base-option",
        action="append",
        default=[],
        help="an option of the base's gometal serve (--base-option=--name=value)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="an option of the tree's gometal serve (--option=--name=value)",
    )
    args = parser.parse_args()

    import numpy as np

    import gometal as gm
    from _frameworks import cnn_model
    from _serving_wrk import run_wrk, write_wrk_inputs
    from _workload import IMAGE_SHAPE
    from bench_serving import MODEL_NAME, Server, _free_port

    model = cnn_model(gm)
    images = np.random.default_rng(0).standard_normal((64, *IMAGE_SHAPE), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="gm-serving-ab-") as folder:
        path = os.path.join(folder, f"{MODEL_NAME}.safetensors")
        model.save(path)
        write_wrk_inputs(folder, images, model.predict(images))
        base_code = serving_code_at(args.base, folder)
        servers = {}
        for side, head, options in (
            (args.base, [os.path.abspath(__file__), SERVE_FROM, base_code], args.base_option),
            ("tree", ["-m", "gometal.apps.cli"], args.option),
        ):
            port = _free_port()
            command = [sys.executable, *head, "serve", path, "--port", str(port), "--grpc-port",
                       "0", "--max-batch-size", "64", "--max-queue", "1024", *options]  # fmt: skip
            servers[side] = Server(f"{side.replace(' ', '_')} server", command, port, folder)
        runs: dict[str, list[dict]] = {side: [] for side in servers}
        try:
            for side, server in servers.items():
                server.wait_ready()
                print(f"{side}: {server.log_tail().split(' | ')[0]}")
                run_wrk(server.url, MODEL_NAME, folder, args.clients, args.warmup_s, 0)
            for round_ in range(args.rounds):
                order = list(servers.items())
                for side, server in order if round_ % 2 == 0 else order[::-1]:
                    window = _window(server, folder, args.clients, args.seconds, MODEL_NAME)
                    runs[side].append(window)
                    print(f"round {round_ + 1} {side}: {_shown(window)}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    print(f"\n{args.clients} wrk clients, {args.rounds} rounds of {args.seconds:g} s, medians:")
    for side, windows in runs.items():
        medians = {key: statistics.median(w[key] for w in windows) for key in windows[0]}
        low, high = min(w["req/s"] for w in windows), max(w["req/s"] for w in windows)
        print(f"  {side}: {_shown(medians)}  (req/s {low:.0f}-{high:.0f})")
    ratios = [tree["req/s"] / base["req/s"] for base, tree in zip(runs[args.base], runs["tree"])]
    print("tree / base req/s by round: " + " ".join(f"{r:.2f}" for r in ratios)
          + f" (median {statistics.median(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
