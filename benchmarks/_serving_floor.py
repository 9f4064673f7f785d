"""The native floor under benchmark G's served requests (``bench_serving.py --floor``).

``cpp/http_floor.c`` does what any HTTP/1.1 keep-alive server must per request and nothing
else: one thread on epoll reads each request whole (headers and Content-Length body) and
writes back a fixed response, here gometal serve's own answer to image 0, which wrk's script
checks as it checks gometal's (so wrk does the same work per answer). Loaded by wrk at the
same concurrency for the same window, its CPU per request is the least the kernel's TCP, the
framing and the copies cost, and wrk's is what the load generator takes from the same cores.
With offline predict's CPU per image they bound the requests per second this machine can
serve at all (:func:`serving_ceiling`), which says whether the throughput target, 80 % of
offline predict at batch 64, fits on it. At its own rate (several times the target's) each
epoll wakeup of the floor and of wrk serves many requests, so the floor is loaded a second time
paced to the target's rate: it holds the answers and writes them all each tick, as a batching
server answers a batch, and 64 closed-loop clients then send 64 / tick requests a second.

    binary = floor_binary()                    # compiled on first use, None without cc
    response = capture_answer(url, model, folder)
    floor_command(binary, port, response_path) # for bench_serving's Server
    serving_ceiling(offline, floor_ms, wrk_ms, cores=2)
"""

from __future__ import annotations

import http.client
import os

from _core_probe import compiled
from _serving_wrk import BODIES_NAME, INDEX_NAME

FLOOR_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp", "http_floor.c")
FLOOR_LABEL = "native HTTP floor"
PACED_LABEL = "paced HTTP floor"  # the same, answering in batches at the target's rate
MAX_BODY = 1 << 20  # bytes of a request body; wrk's CNN requests are about 49 KB


def floor_binary() -> str | None:
    """The floor server's program, compiled on first use; None without a C compiler."""
    return compiled(FLOOR_SOURCE, "gometal-http-floor")


def floor_command(binary: str, port: int, response_path: str, max_body: int = MAX_BODY,
                  pace_us: int | None = None) -> list[str]:  # fmt: skip
    """The floor server's command line: it listens on 127.0.0.1:``port`` (0: a free one, which
    it prints) and answers every request with the bytes of ``response_path``; with
    ``pace_us``, all the answers held at once every ``pace_us`` microseconds."""
    command = [binary, str(port), response_path, str(max_body)]
    return command + ([str(pace_us)] if pace_us else [])


def first_request(folder: str) -> tuple[bytes, int]:
    """The first request body wrk sends from ``folder`` (``write_wrk_inputs``) and the length
    of its JSON header."""
    with open(os.path.join(folder, INDEX_NAME)) as index:
        header, total = (int(n) for n in index.readline().split())
    with open(os.path.join(folder, BODIES_NAME), "rb") as bodies:
        return bodies.read(total), header


def capture_answer(url: str, model: str, folder: str) -> bytes:
    """The whole HTTP response (status line, headers, body) the server at ``url`` gives to
    the first of wrk's requests: the floor replays it, so its answers are gometal's size."""
    body, header = first_request(folder)
    host, port = url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body,
                           {"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(header)})  # fmt: skip
        answer = connection.getresponse()
        content = answer.read()
    finally:
        connection.close()
    if answer.status != 200:
        raise RuntimeError(f"capture_answer: {url} answered {answer.status} {answer.reason}: "
                           f"{content[:200]!r}")  # fmt: skip
    head = f"HTTP/1.1 {answer.status} {answer.reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in answer.getheaders()
    )
    return head.encode("latin-1") + b"\r\n" + content


def serving_ceiling(offline_images_per_s: float, floor_ms: float, generator_ms: float,
                    cores: int, offline_cores: int | None = None,
                    target_share: float = 0.8) -> dict:  # fmt: skip
    """The most requests per second ``cores`` can answer when each costs the model's CPU at
    offline predict's efficiency (``offline_cores`` / ``offline_images_per_s``; default: all
    ``cores``) plus the floor server's CPU (``floor_ms``) plus the load generator's
    (``generator_ms``), all in core-ms per request; and the target, ``target_share`` of offline
    predict, against it.

    Returns: model_ms, per_request_ms, ceiling (req/s), target (req/s), target_of_ceiling,
    shortfall (req/s the ceiling lacks, 0 when the target fits), and budget_ms: the CPU per
    request left at the target for everything the server does outside the model (negative
    when it does not fit).

    Example: ``serving_ceiling(10_000, 0.01, 0.03, cores=2)["ceiling"]`` is 8,333.3.
    """
    offline_cores = cores if offline_cores is None else offline_cores
    positive = {"offline_images_per_s": offline_images_per_s, "cores": cores,
                "offline_cores": offline_cores, "target_share": target_share}  # fmt: skip
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"[serving_ceiling] {name} must be positive, got {value!r}")
    for name, value in {"floor_ms": floor_ms, "generator_ms": generator_ms}.items():
        if not value >= 0:
            raise ValueError(f"[serving_ceiling] {name} must be >= 0 core-ms, got {value!r}")
    model_ms = offline_cores / offline_images_per_s * 1e3
    per_request_ms = model_ms + floor_ms + generator_ms
    ceiling = cores / per_request_ms * 1e3
    target = target_share * offline_images_per_s
    return {
        "model_ms": model_ms,
        "per_request_ms": per_request_ms,
        "ceiling": ceiling,
        "target": target,
        "target_of_ceiling": target / ceiling,
        "shortfall": max(0.0, target - ceiling),
        "budget_ms": cores / target * 1e3 - model_ms - generator_ms,
    }


def describe_ceiling(bound: dict, floor: dict, gometal: dict | None, cores: int,
                     offline_images_per_s: float, offline_cores: int,
                     basis: str = "") -> list[str]:  # fmt: skip
    """The lines bench_serving prints under the table: the ceiling, the target against it, and
    gometal's own CPU per request beside the floor's (``floor`` and ``gometal``: their wrk
    runs at the largest client count, as run_load reports them; ``basis``: where
    ``offline_images_per_s`` came from, for the title)."""
    per_request = (
        f"  per request: model {bound['model_ms']:.4f} core-ms (offline predict: {offline_cores} "
        f"cores / {offline_images_per_s:,.0f} images/s) + native floor server "
        f"{floor['server_ms_per_request']:.4f} (at {floor['throughput']:,.0f} req/s) + wrk "
        f"{floor['generator_ms_per_request']:.4f} = {bound['per_request_ms']:.4f} core-ms"
    )
    ceiling = (
        f"  ceiling: {cores} / {bound['per_request_ms']:.4f} ms = {bound['ceiling']:,.0f} req/s; "
        f"the target, {bound['target'] / offline_images_per_s:.0%} of offline = "
        f"{bound['target']:,.0f} req/s, is {bound['target_of_ceiling']:.0%} of it"
    )
    title = (f"\nCeiling on this machine ({cores} cores, wrk on the same cores), at "
             f"{floor['clients']} clients{f', from {basis}' if basis else ''}:")  # fmt: skip
    lines = [title, per_request, ceiling]
    if bound["shortfall"] > 0:
        lines.append(
            f"  the target is OUT OF REACH on this machine: the ceiling is "
            f"{bound['shortfall']:,.0f} req/s ({bound['shortfall'] / bound['target']:.0%}) short "
            f"of it with no server work beyond the floor's"
        )
    else:
        left_us = (bound["budget_ms"] - floor["server_ms_per_request"]) * 1e3
        lines.append(
            f"  the target fits only if the server spends at most {bound['budget_ms']:.4f} "
            f"core-ms per request outside the model; the floor's framing and copies take "
            f"{floor['server_ms_per_request']:.4f}, leaving {left_us:.1f} us for the rest "
            "(parsing, batching, answering)"
        )
    if gometal is not None and gometal.get("server_ms_per_request") is not None:
        outside = gometal["server_ms_per_request"] - bound["model_ms"]
        lines.append(
            f"  gometal serve: {gometal['throughput']:,.0f} req/s = "
            f"{gometal['throughput'] / bound['ceiling']:.0%} of the ceiling; "
            f"{gometal['server_ms_per_request']:.4f} server core-ms per request, "
            f"{outside:.4f} beyond the model's offline cost (the floor: "
            f"{floor['server_ms_per_request']:.4f}); wrk {gometal['generator_ms_per_request']:.4f}"
        )
    return lines


def ceiling_report(floor: dict, paced: dict | None, gometal: dict | None,
                   offline_runs: list[tuple[float, float]], offline_cores: int,
                   cores: int) -> list[str]:  # fmt: skip
    """bench_serving's lines under its table: the ceiling the floor's wrk run sets, beside
    gometal serve's, from offline predict's ``(images/s, own CPU ms per image)`` medians over
    the run: its rate as measured, and the rate its own CPU per image gives with the cores to
    itself (the two agree on a quiet machine; other processes' load lowers only the first);
    then, from the second, the floor ``paced`` to the target's rate (its CPU and wrk's per
    request at that rate rather than at the floor's own)."""
    import statistics

    measured = statistics.median(rate for rate, _cpu in offline_runs)
    cpu_ms = statistics.median(cpu for _rate, cpu in offline_runs)
    by_cpu = offline_cores / cpu_ms * 1e3
    own_cpu = f"offline predict's own CPU ({cpu_ms:.4f} ms an image) on all the cores"
    blocks = [("offline predict's images/s as measured", measured, floor), (own_cpu, by_cpu, floor)]
    if paced is not None:
        blocks.append((f"{own_cpu}, the floor paced", by_cpu, paced))
    lines = []
    for index, (basis, rate, row) in enumerate(blocks):
        bound = serving_ceiling(rate, row["server_ms_per_request"],
                                row["generator_ms_per_request"], cores, offline_cores)  # fmt: skip
        shown = gometal if index == len(blocks) - 1 else None  # once, beside the last
        lines += describe_ceiling(bound, row, shown, cores, rate, offline_cores, basis)
    rates = [rate for rate, _cpu in offline_runs]
    cpus = [cpu for _rate, cpu in offline_runs]
    lines.append(f"  offline predict over the run, {len(rates)} times: {min(rates):,.0f}-"
                 f"{max(rates):,.0f} images/s, own CPU {min(cpus):.4f}-{max(cpus):.4f} ms an "
                 "image")  # fmt: skip
    return lines
