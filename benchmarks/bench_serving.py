"""Benchmark G: serving workload C's CNN (3x64x64 images, eval mode) with ``gometal serve``
to 1, 8 and 64 concurrent clients, one image per request: throughput and p50/p99 latency.

    python benchmarks/bench_serving.py [--clients 1,8,64] [--window-s 5] [--threads N]
                                       [--server-threads N] [--grpc] [--load tritonclient,wrk]
                                       [--variant JSON ...] [--rounds N]

The model is saved as a model file and served by ``gometal serve`` in its own process (HTTP,
--max-batch-size 64, so that 64 clients' requests fit one batch, and otherwise the server's
defaults unless --max-queue-delay-ms, --instances or --server-threads say otherwise: no
batching delay, as Triton's, and on 2 cores one engine thread per instance and an instance
per core). --variant serves other settings beside it, and --rounds alternates the servers
several times. On an AMD EPYC of 2 cores shared with other work, 3 rounds: the old defaults
(--max-queue-delay-ms 2, one instance) against these, 64 wrk clients 1,903 -> 2,507 req/s
(ranges 1,711-2,098 and 2,300-2,509), 64 tritonclient clients 1,111 -> 1,374, 8 wrk clients
1,263 -> 1,996; at 2 ms, two instances ran no faster than one. A free instance that waits
for as many rows as the busy one's batch (gather_while_busy, now on), against taking single
rows at once, 2 x 3 and 5 rounds: 8 wrk clients 1,122 -> 1,529 and 1,311 -> 1,899 req/s, 64
wrk clients 519 -> 539 and 1,590 -> 1,552 (the machine's load set the level); 64 clients in
_serving_profile.py, 6 runs each in turn: mean rows per batch 9.3 -> 15.6, faster in all 6
pairs (medians 915 -> 1,187 req/s); 3 more rounds, 64 tritonclient clients 1,051 -> 1,273,
64 wrk clients 2,378 -> 2,292 (ranges 2,093-2,797 and 1,423-3,115). The GIL switch interval
at 0.2 ms against Python's 5 ms (--variant '{"switch_interval_ms": 5}'), 2 rounds: 64 wrk
clients 1,795 -> 2,808 req/s (ranges 1,679-1,911 and 2,561-3,055), p99 89 -> 70 ms, 8 wrk
clients 2,430 -> 2,733; 8 tritonclient clients 883 -> 1,096, 64 1,605 -> 1,560 (there the
Python clients' own CPU sets the pace). uvloop against asyncio over gRPC (three servers in
turn, tritonclient.grpc.aio, 3 rounds): 64 clients 849/879/949 -> 1,002/1,322/1,295 req/s,
p99 195/168/150 -> 110/74/92 ms; 8 clients 651/1,208/866 -> 1,076/1,089/1,298. At 0.2 ms,
2 rounds, three instances, one instance of 2 threads and gather_while_busy off all fell
within the defaults' ranges at 1, 8 and 64 clients of either load (64 wrk clients: 2,204-2,538
req/s against 2,502-2,506, 2,120-2,833 and 2,003-2,595). The load generator is
another process (``_serving_load.py``): N tritonclient HTTP async clients, each sending one
image per request in a loop, a warm-up, then a timed window; every answer is checked against
offline ``model.predict``. With --grpc the same server is also loaded over gRPC, with unary
calls and with one ``ModelStreamInfer`` stream per client. With --load wrk (or
tritonclient,wrk) the HTTP servers are also loaded by ``wrk`` (``_serving_wrk.py``): N
connections from one C thread, each request the binary tensor POST tritonclient sends, every
answer checked too; on a small machine the Python clients' own CPU per request is about the
server's, and wrk's is a small fraction of it (the table prints both).

Beside it: offline ``model.predict`` at batch 64 (images/s) in this process, and the baseline
a user would write (``_serving_fastapi.py``): the same model exported by gometal to ONNX, in
onnxruntime (intra_op_num_threads = gometal's threads) behind a plain FastAPI endpoint with no
batching, served by uvicorn, hit by the same load generator over the same protocol. Both
servers stay up and the client counts alternate between them, so each pair meets the same
machine. Every run also says how many cores the server, the load generator and other
processes used (on a small machine the load generator's own CPU is taken from the servers),
and the server's CPU time per answered request, beside offline predict's per image.

With --floor (and --load wrk), a native HTTP/1.1 server with no model (``_serving_floor.py``,
``cpp/http_floor.c``), answering gometal's own answer to image 0, is loaded by wrk in each round
beside them, once answering at once and once paced to the target's rate (all answers held and
written together every clients / target seconds, as a batch), offline predict is timed again before each round, and the throughput this machine
allows is printed: 2 cores / (offline predict's core-ms per image + the floor server's and
wrk's core-ms per request), against 80 % of offline predict. Shared AMD EPYC, 64 wrk clients,
4 rounds (others used ~0.95 cores in them; offline predict quiet before them: 10,833 images/s,
0.184 core-ms of its own an image, 2 / rate = 0.185): floor at once 25,693 req/s (24,227-29,986),
0.014 server + 0.023 wrk core-ms per request; paced 8,675 req/s, 0.020 + 0.030. At 0.190 ms an
image (the rounds' median) the ceiling is 8,799 req/s at once and 8,311 paced, against a target
of 8,422: out of reach paced, and at once it leaves 10 us a request beyond the floor (a second
run: floor 33,340 and 8,943 req/s paced, ceilings 9,203 and 8,594 against 8,540). gometal
serve in the same rounds: 2,914 req/s, 0.321 server core-ms a request (_serving_profile.py, 3
runs: event loop 0.089-0.110, 0.024-0.028 of it system; engines 0.222-0.246 at 19 rows a batch).

Targets at 64 clients: throughput >= 80 % of offline predict at batch 64, p99 <= 50 ms, and
>= 3x the onnxruntime + FastAPI baseline's throughput. The script exits 1 if any answer was
wrong or any request failed.

What one request costs the 2 cores at 64 wrk clients (``_serving_profile.py``, shared AMD
EPYC): the event loop 0.076-0.093 ms of CPU, 0.021-0.026 of it system (the socket reads and
writes); the engine threads 0.20-0.23 ms (offline predict: 0.19 core-ms per image at batch
64); wrk 0.031-0.041 ms, about 0.02 of it system. 80 % of offline predict (8,500 req/s of
10,617 images/s) would take 8,500 x 0.32 ms = 2.7 cores, and even with no Python per request
8,500 x (0.19 engine + 0.045 kernel) = 2.0: that target cannot be met with the load generator
on the same 2 cores. 3x the baseline (about 4,000 req/s of 1,341) takes 1.3 cores. One
instance of one thread (--variant '{"instances": 1}') costs less per request (64 clients
0.28 -> 0.27 server core-ms, 8 clients 0.35 -> 0.26; batches of 30 rows against 16) but takes
fewer cores of a loaded machine: 3 rounds, 64 clients 3,062 -> 3,051 req/s, 8 clients 2,670
-> 3,190; 8 rounds of _serving_ab.py, 64 clients 1.05x (0.79-1.47), 8 clients 0.86x
(0.63-1.69). A quiet machine decides it (the engine alone would cap it near 4,800 req/s).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _child import reexec_with_clean_environment
from _frameworks import cnn_model
from _serving_floor import FLOOR_LABEL, FLOOR_SOURCE, PACED_LABEL, floor_binary
from _serving_load import RESULT_TAG
from _serving_wrk import run_wrk, write_wrk_inputs, wrk_available
from _workload import IMAGE_SHAPE

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_NAME = "cnn"
OFFLINE_BATCH = 64
TARGET_OF_OFFLINE, TARGET_P99_MS, TARGET_OVER_BASELINE = 0.8, 50.0, 3.0
STARTUP_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


LOAD_GENERATORS = ("tritonclient", "wrk")
# --variant keys that are gometal serve's options rather than a model's config.json.
SERVER_OPTIONS = {"threads": "--threads", "loop": "--loop",
                  "switch_interval_ms": "--switch-interval-ms"}  # fmt: skip


class Server:
    """A server child process on a free loopback port, its output in ``log_dir``. The load
    goes to ``load_url`` (HTTP, or gRPC when ``grpc``) from ``generator`` (tritonclient or
    wrk); readiness is asked over HTTP."""

    def __init__(self, label: str, command: list[str], port: int, log_dir: str):
        self.label, self.port, self.url = label, port, f"127.0.0.1:{port}"
        self.load_url, self.grpc, self.stream = self.url, False, False
        self.generator = LOAD_GENERATORS[0]
        self.log_path = os.path.join(log_dir, f"{label.split()[0]}.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(
            f"{self.label} did not start in {STARTUP_TIMEOUT_S} s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return " | ".join(log.read().strip().splitlines()[-6:])

    def cpu_seconds(self) -> float:
        import psutil

        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    def loop_cpu_seconds(self) -> float:
        """CPU time of the server's main thread: its event loop (HTTP parsing, batching,
        answers), apart from the engine's and the batcher's threads."""
        import psutil

        try:
            threads = psutil.Process(self.process.pid).threads()
        except psutil.Error:
            return 0.0
        main = [t for t in threads if t.id == self.process.pid]
        return main[0].user_time + main[0].system_time if main else 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _tritonclient_load(server: Server, clients: int, files: tuple[str, str], args) -> dict:
    command = [sys.executable, os.path.join(HERE, "_serving_load.py"), server.load_url,
               MODEL_NAME, "input", *files, "--clients", str(clients), "--warmup-s",
               str(args.warmup_s), "--window-s", str(args.window_s)]  # fmt: skip
    if server.grpc:
        command.append("--grpc")
    if server.stream:
        command.append("--stream")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"the load generator failed against {server.label}: {tail}")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def run_load(server: Server, clients: int, files: tuple[str, str], args) -> dict:
    """One load generator process against ``server``: its summary, with the cores the
    server, the load generator and everything else used during the run."""
    import psutil

    # Everyone's CPU over the same interval: the machine's, the server's, and the load
    # generator's (a child this process reaps, so RUSAGE_CHILDREN grows by its total).
    gen0, busy0 = resource.getrusage(resource.RUSAGE_CHILDREN), _machine_busy(psutil)
    server0, loop0, t0 = server.cpu_seconds(), server.loop_cpu_seconds(), time.perf_counter()
    if server.generator == "wrk":
        result = run_wrk(server.load_url, MODEL_NAME, os.path.dirname(files[0]), clients,
                         args.warmup_s, args.window_s)  # fmt: skip
    else:
        result = _tritonclient_load(server, clients, files, args)
    elapsed = time.perf_counter() - t0
    server_cpu = server.cpu_seconds() - server0
    loop_cpu = server.loop_cpu_seconds() - loop0
    gen1, busy = resource.getrusage(resource.RUSAGE_CHILDREN), _machine_busy(psutil) - busy0
    generator_cpu = gen1.ru_utime + gen1.ru_stime - gen0.ru_utime - gen0.ru_stime
    result["server_cores"] = server_cpu / elapsed
    result["generator_cores"] = generator_cpu / elapsed
    result["other_cores"] = max(0.0, busy - server_cpu - generator_cpu) / elapsed
    # The server's CPU time per answer: what the share of the cores it got does not change.
    answered = result["answered"]
    result["server_ms_per_request"] = server_cpu / answered * 1e3 if answered else None
    result["generator_ms_per_request"] = generator_cpu / answered * 1e3 if answered else None
    result["loop_ms_per_request"] = loop_cpu / answered * 1e3 if answered else None
    return result


def _machine_busy(psutil) -> float:
    times = psutil.cpu_times()
    return (
        times.user
        + times.nice
        + times.system
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
    )


def offline_rate(model, x, seconds: float) -> tuple[float, float, float | None]:
    """Images/s of ``model.predict`` over the batch ``x``, this process's CPU ms per image
    meanwhile, and the cores other processes used (None where unknown)."""
    from _timing import time_window, warm_up

    warm_up(lambda: model.predict(x, batch_size=len(x)), 0.5, 2)
    own0, t0 = os.times(), time.perf_counter()
    calls, load = time_window(lambda: model.predict(x, batch_size=len(x)), seconds)
    own1, elapsed = os.times(), time.perf_counter() - t0
    cpu_s = own1.user + own1.system - own0.user - own0.system
    return calls * len(x), cpu_s / (calls * len(x) * elapsed) * 1e3, load


def describe_offline(rate: float, cpu_ms: float, load: float | None, cores: int) -> str:
    other = "" if load is None else f"; other processes used {load:.2f} cores meanwhile"
    return (f"offline model.predict at batch {OFFLINE_BATCH}: {rate:.1f} images/s ({cores / rate * 1e3:.3f} "
            f"core-ms per image at most, its own CPU {cpu_ms:.3f}{other})")  # fmt: skip


def _variant_config(parser: argparse.ArgumentParser, text: str) -> dict:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        parser.error(f"--variant takes a JSON object, got {text!r}: {err}")
    if not isinstance(config, dict) or not config:
        parser.error(f"--variant takes a non-empty JSON object, got {text!r}")
    return config


def split_server_options(variant: dict) -> tuple[list[str], dict]:
    """A --variant's ``gometal serve`` options (the keys of :data:`SERVER_OPTIONS`, as
    command-line arguments) and the rest of it: its model's config.json."""
    config = dict(variant)
    options = [item for key, option in SERVER_OPTIONS.items() if key in config
               for item in (option, str(config.pop(key)))]  # fmt: skip
    return options, config


def _variant_label(config: dict) -> str:
    """One word (the server's log file is named by the label's first word)."""
    return "gometal[" + ",".join(f"{key}={value}" for key, value in config.items()) + "]"


def _variant_repository(folder: str, config: dict, index: int) -> str:
    """A repository of the one model with ``config`` as its config.json, in ``folder``."""
    import shutil

    root = os.path.join(folder, f"repository-{index}")
    os.makedirs(os.path.join(root, MODEL_NAME, "1"))
    shutil.copy(os.path.join(folder, f"{MODEL_NAME}.safetensors"),
                os.path.join(root, MODEL_NAME, "1", "model.safetensors"))  # fmt: skip
    with open(os.path.join(root, MODEL_NAME, "config.json"), "w") as out:
        json.dump(config, out)
    return root


def median_run(runs: list[dict]) -> dict:
    """One table cell from the rounds of one server at one client count: the median of each
    rate and latency (each round met its own moment of a shared machine), the errors and
    wrong answers of them all, and the throughput's range."""
    import statistics

    if len(runs) == 1:
        return runs[0]
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            values = [r[key] for r in runs if r.get(key) is not None]
            merged[key] = statistics.median(values) if values else None
    for key in ("errors", "wrong", "answered"):
        merged[key] = sum(r[key] for r in runs)
    merged["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), None)
    merged["throughput_range"] = (min(r["throughput"] for r in runs),
                                  max(r["throughput"] for r in runs))  # fmt: skip
    return merged


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: dict[str, dict[int, dict]], offline: float) -> None:
    width = max(28, *(len(label) for label in results))
    ranged = any("throughput_range" in r for by in results.values() for r in by.values())
    head = (f"  {'server':<{width}} {'clients':>7} {'req/s':>8} "
            + (f"{'req/s range':>15} " if ranged else "")
            + f"{'p50 ms':>8} {'p99 ms':>8} "
            f"{'of offline':>10} {'errors':>6} {'wrong':>5} {'srv core-ms/req':>15} "
            f"{'loop core-ms/req':>16} "
            f"{'gen core-ms/req':>15} {'cores srv/gen/other':>20}")  # fmt: skip
    print(head)
    print("  " + "-" * (len(head) - 2))
    for label, by_clients in results.items():
        for clients, r in by_clients.items():
            cores = f"{r['server_cores']:.2f}/{r['generator_cores']:.2f}/{r['other_cores']:.2f}"
            low, high = r.get("throughput_range", (r["throughput"], r["throughput"]))
            spread = f"{f'{low:.0f}-{high:.0f}':>15} " if ranged else ""
            print(f"  {label:<{width}} {clients:>7} {r['throughput']:>8.1f} {spread}"
                  f"{_fmt(r['p50_ms']):>8} "
                  f"{_fmt(r['p99_ms']):>8} {r['throughput'] / offline:>9.0%} {r['errors']:>6} "
                  f"{r['wrong']:>5} {_fmt(r['server_ms_per_request'], '.3f'):>15} "
                  f"{_fmt(r.get('loop_ms_per_request'), '.3f'):>16} "
                  f"{_fmt(r['generator_ms_per_request'], '.3f'):>15} {cores:>20}")  # fmt: skip


def print_verdicts(gometal: dict, baseline: dict, offline: float, load: str = "",
                   server: str = "") -> None:  # fmt: skip
    """The issue's three targets at the largest client count that ran (``load``: which load
    generator's, when several ran; ``server``: which variant's, for a variant)."""
    named = ", ".join([*([server] if server else []), *([f"{load} load"] if load else [])])
    print(f"\nTargets at {gometal['clients']} clients{f' ({named})' if named else ''}:")
    share = gometal["throughput"] / offline
    ratio = gometal["throughput"] / baseline["throughput"] if baseline["throughput"] else None
    p99 = gometal["p99_ms"]
    throughput = (
        f"throughput {gometal['throughput']:.1f} req/s = {share:.0%} of offline predict at "
        f"batch {OFFLINE_BATCH} ({offline:.1f} images/s)"
    )
    over = f"{_fmt(ratio, '.2f')}x the onnxruntime + FastAPI baseline ({baseline['throughput']:.1f} req/s)"
    checks = [
        (throughput, f">= {TARGET_OF_OFFLINE:.0%}", share >= TARGET_OF_OFFLINE),
        (f"p99 latency {_fmt(p99)} ms", f"<= {TARGET_P99_MS:.0f} ms",
         p99 is not None and p99 <= TARGET_P99_MS),
        (over, f">= {TARGET_OVER_BASELINE:.0f}x", ratio is not None and ratio >= TARGET_OVER_BASELINE),
    ]  # fmt: skip
    for what, target, met in checks:
        print(f"  {what} (target {target}: {'met' if met else 'MISSED'})")


def _wrk_view(server: Server) -> Server:
    view = copy.copy(server)
    view.label, view.generator = f"{server.label} [wrk]", "wrk"
    return view


def start_floors(gometal: Server, folder: str, pace_us: int) -> list[Server]:
    """The native floor servers (``_serving_floor.py``), answering every request with the
    bytes gometal serve answers wrk's first request with: one at once, one every ``pace_us``
    (the target's rate at the largest client count); ready."""
    from _serving_floor import PACED_LABEL, capture_answer, floor_command

    response_path = os.path.join(folder, "floor-response.http")
    with open(response_path, "wb") as out:
        out.write(capture_answer(gometal.url, MODEL_NAME, folder))
    floors = []
    for label, pace in ((FLOOR_LABEL, None), (PACED_LABEL, pace_us)):
        port = _free_port()
        command = floor_command(floor_binary(), port, response_path, pace_us=pace)
        floors.append(Server(label, command, port, folder))
    for floor in floors:
        floor.wait_ready()
    return floors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,64", help="comma-separated client counts")
    parser.add_argument("--window-s", type=float, default=5.0, help="timed window per run")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="untimed load before it")
    parser.add_argument("--offline-s", type=float, default=3.0, help="offline predict timing")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="engine threads of every peer (default: the cores)")  # fmt: skip
    parser.add_argument("--server-threads", type=int, default=None,
                        help="gometal serve --threads (default: the server's own choice, every "
                        "core but one)")  # fmt: skip
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-ms", type=float, default=None,
                        help="gometal serve --max-queue-delay-ms (default: the server's)")  # fmt: skip
    parser.add_argument("--instances", type=int, default=None,
                        help="gometal serve --instances (default: the server's)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], metavar="JSON",
                        help="also serve the model with these batching settings (a model "
                        "config.json, e.g. '{\"start_when_idle\": true}'; \"threads\", "
                        "\"loop\" and \"switch_interval_ms\": gometal serve's options of "
                        "those names), beside the others in the same run; repeatable")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of every server at each client count, in turn; the table "
                        "shows each cell's median and the throughputs' range")  # fmt: skip
    parser.add_argument("--images", type=int, default=OFFLINE_BATCH, help="distinct images")
    parser.add_argument("--grpc", action="store_true",
                        help="also load gometal serve over gRPC (tritonclient.grpc.aio), unary "
                        "and on ModelStreamInfer streams")  # fmt: skip
    parser.add_argument("--load", default="tritonclient",
                        help="load generators, comma-separated: tritonclient (Python async "
                        "clients), wrk (C; the Debian package wrk)")  # fmt: skip
    parser.add_argument("--floor", action="store_true",
                        help="also load a native HTTP/1.1 server answering gometal's answer "
                        "with no model (cpp/http_floor.c) with wrk, and print the throughput "
                        "this machine allows at offline predict's cost per image")  # fmt: skip
    args = parser.parse_args()
    client_counts = [int(n) for n in args.clients.split(",")]
    if args.rounds < 1:
        parser.error(f"--rounds takes a count >= 1, got {args.rounds}")
    generators = [g.strip() for g in args.load.split(",") if g.strip()]
    unknown = sorted(set(generators) - set(LOAD_GENERATORS))
    if unknown or not generators:
        parser.error(f"--load takes {', '.join(LOAD_GENERATORS)}, got {args.load!r}")
    variants = [_variant_config(parser, text) for text in args.variant]
    if "wrk" in generators and not wrk_available():
        parser.error("--load wrk needs the wrk program on PATH (apt-get install wrk)")
    if args.floor and "wrk" not in generators:
        parser.error(
            f"--floor loads the floor server with wrk: add wrk to --load, got {args.load!r}"
        )
    if args.floor and floor_binary() is None:
        parser.error(f"--floor needs a C compiler (cc, gcc or $CC) to build {FLOOR_SOURCE}")
    reexec_with_clean_environment(args.threads)

    import numpy as np

    import gometal as gm
    from _builds import cpu_description
    from gometal import _core

    gm.set_num_threads(args.threads)
    model = cnn_model(gm)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((max(args.images, OFFLINE_BATCH), *IMAGE_SHAPE), dtype=np.float32)
    expected = model.predict(images)

    print(f"cpu: {cpu_description()}")
    print(f"threads: {args.threads} (gometal offline {gm.get_num_threads()}, onnxruntime "
          f"intra_op_num_threads {args.threads}; gometal serve's engine: see its options)")  # fmt: skip
    print(f"blas: {_core.blas_info()}")
    offline, offline_cpu_ms, load = offline_rate(model, images[:OFFLINE_BATCH], args.offline_s)
    print(describe_offline(offline, offline_cpu_ms, load, args.threads))
    offline_rounds = [(offline, offline_cpu_ms)]  # with --floor, again before each round

    with tempfile.TemporaryDirectory(prefix="gm-bench-serving-") as folder:
        model.save(os.path.join(folder, f"{MODEL_NAME}.safetensors"))
        model.export_onnx(os.path.join(folder, f"{MODEL_NAME}.onnx"))
        files = (os.path.join(folder, "images.npy"), os.path.join(folder, "expected.npy"))
        np.save(files[0], images[: args.images])
        np.save(files[1], expected[: args.images])
        if "wrk" in generators:
            write_wrk_inputs(folder, images[: args.images], expected[: args.images])
        tuning = ["--max-batch-size", str(args.max_batch_size)]
        if args.max_queue_delay_ms is not None:
            tuning += ["--max-queue-delay-ms", str(args.max_queue_delay_ms)]
        if args.instances is not None:
            tuning += ["--instances", str(args.instances)]
        if args.server_threads is not None:
            tuning += ["--threads", str(args.server_threads)]
        gometal_port, baseline_port, grpc_port = _free_port(), _free_port(), _free_port()
        server_cmd = [sys.executable, "-m", "gometal.apps.cli", "serve",
                      os.path.join(folder, f"{MODEL_NAME}.safetensors"), "--port",
                      str(gometal_port), "--grpc-port", str(grpc_port if args.grpc else 0),
                      "--max-queue", "1024", *tuning]  # fmt: skip
        baseline_cmd = [sys.executable, os.path.join(HERE, "_serving_fastapi.py"),
                        os.path.join(folder, f"{MODEL_NAME}.onnx"), MODEL_NAME, "--port",
                        str(baseline_port), "--threads", str(args.threads)]  # fmt: skip
        servers = [Server("gometal serve", server_cmd, gometal_port, folder),
                   Server("onnxruntime + FastAPI", baseline_cmd, baseline_port, folder)]  # fmt: skip
        for index, variant in enumerate(variants):  # the same command, on its own repository
            port, (options, config) = _free_port(), split_server_options(variant)
            served = _variant_repository(folder, config, index) if config else server_cmd[4]
            command = [sys.executable, "-m", "gometal.apps.cli", "serve", served, "--port",
                       str(port), "--grpc-port", "0", "--max-queue", "1024", *tuning,
                       *options]  # fmt: skip
            servers.append(Server(_variant_label(variant), command, port, folder))
        loads = []
        for generator in generators:  # each generator's runs: gometal's, then the baseline's
            suffix = "" if generator == LOAD_GENERATORS[0] else f" [{generator}]"
            for server in servers:
                view = copy.copy(server)
                view.label, view.generator = server.label + suffix, generator
                loads.append(view)
        # The same gometal process, loaded over gRPC: a view of it, not another server.
        if args.grpc and LOAD_GENERATORS[0] in generators:
            views = (("gometal serve (gRPC)", False), ("gometal (gRPC stream)", True))
            for place, (label, stream) in enumerate(views, start=1):
                over_grpc = copy.copy(servers[0])
                over_grpc.label, over_grpc.grpc, over_grpc.stream = label, True, stream
                over_grpc.load_url = f"127.0.0.1:{grpc_port}"
                loads.insert(place, over_grpc)
        try:
            for server in servers:
                server.wait_ready()
            if args.floor:  # after the variants: stopped with them, never verdicted
                target = TARGET_OF_OFFLINE * args.threads / offline_cpu_ms * 1e3
                floors = start_floors(servers[0], folder, round(client_counts[-1] / target * 1e6))
                servers += floors
                loads += [_wrk_view(floor) for floor in floors]
            started = servers[0].log_tail().split(" | ")
            print(f"gometal serve options: {' '.join(tuning)} --max-queue 1024 (HTTP): "
                  f"{started[0]}")  # fmt: skip
            for line in started[1:]:  # the batch sizes it compiled and their fitted times
                if "compiled for batch sizes" in line:
                    print(line)
            shown = {"tritonclient": "tritonclient.http.aio", "wrk": "wrk (1 thread)"}
            rounds_shown = f", {args.rounds} rounds in turn (medians)" if args.rounds > 1 else ""
            print(f"load: {' and '.join(shown[g] for g in generators)}, one image per request, "
                  f"{args.warmup_s} s warm-up, {args.window_s} s window{rounds_shown}; answers "
                  "checked against offline predict\n")  # fmt: skip
            results: dict[str, dict[int, dict]] = {s.label: {} for s in loads}
            for clients in client_counts:
                rounds: dict[str, list[dict]] = {s.label: [] for s in loads}
                for _round in range(args.rounds):
                    if args.floor:
                        again = offline_rate(model, images[:OFFLINE_BATCH], args.offline_s)
                        print("  " + describe_offline(*again, args.threads))
                        offline_rounds.append(again[:2])
                    for server in loads:
                        rounds[server.label].append(run_load(server, clients, files, args))
                for label, runs in rounds.items():
                    results[label][clients] = median_run(runs)
        finally:
            for server in servers:
                server.stop()
    print_table(results, offline)
    top = client_counts[-1]
    for generator in generators:
        suffix = "" if generator == LOAD_GENERATORS[0] else f" [{generator}]"
        for server in (servers[0], *servers[2 : 2 + len(variants)]):  # gometal, each variant
            print_verdicts(results[server.label + suffix][top],
                           results[servers[1].label + suffix][top], offline,
                           generator if len(generators) > 1 else "",
                           "" if server is servers[0] else server.label)  # fmt: skip
    if args.floor:
        from _serving_floor import ceiling_report

        floor, paced = (results[f"{label} [wrk]"][top] for label in (FLOOR_LABEL, PACED_LABEL))
        gometal = results["gometal serve [wrk]"][top]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print("\n".join(ceiling_report(floor, paced, gometal, offline_rounds, args.threads, cores)))
    runs = [r for by_clients in results.values() for r in by_clients.values()]
    failures = [r["first_error"] for r in runs if r["first_error"]]
    wrong = sum(r["wrong"] for r in runs)
    print(f"\nanswers: {'all equal offline predict' if not wrong else f'{wrong} WRONG'}; "
          f"failed requests: {sum(r['errors'] for r in runs)}"
          + (f" (first: {failures[0]})" if failures else ""))  # fmt: skip
    if wrong or failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
