"""Load generator for the plotting sidecar: many clients at once, plus one posting big plots.

Runs for a fixed time against a sidecar that is already running (``gometal sidecar``) and
prints requests per second and latency percentiles per kind of request::

    gometal sidecar --port 8090 --data-dir /tmp/load-plots &
    python sidecar/loadtest.py --url http://127.0.0.1:8090 --clients 16 --seconds 20

Each of ``--clients`` connections loops over: post a small plot (go-metal's
``training_curves`` with 2 x 100 points), read it back as JSON, ask ``/health``, and open
its view page. With ``--big`` one more connection keeps posting a 12 series x 6,000 point
plot (about 1.75 MB) and opening its view page, the load that used to stall every other
client. Only the loopback addresses are accepted as targets.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import sys
import time
import urllib.parse
from collections import defaultdict
from typing import Any

import httpx

JSON_HEADERS = {"Content-Type": "application/json"}


def plot_body(series_count: int, points: int, title: str) -> bytes:
    """A go-metal ``training_curves`` body with ``series_count`` series of ``points`` points.

    Args:
        series_count: how many line series.
        points: points per series.
        title: the plot's title.

    Returns:
        The JSON body, as the Go client would send it.
    """
    series = [
        {
            "name": f"series {k}",
            "type": "line",
            "data": [
                {"x": i, "y": round(math.exp(-i / points) + 0.01 * k, 6)} for i in range(points)
            ],
            "style": {},
        }
        for k in range(series_count)
    ]
    payload = {
        "plot_type": "training_curves",
        "title": title,
        "timestamp": "2026-12-05T01:18:00.123456789+01:00",
        "model_name": "load",
        "series": series,
        "config": {"x_axis_label": "step", "y_axis_label": "loss"},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


class Recorder:
    """Latencies and statuses per kind of request."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, int] = defaultdict(int)

    async def request(
        self, client: httpx.AsyncClient, kind: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            self.errors[f"{kind}: {type(err).__name__}"] += 1
            return None
        self.latencies[kind].append(time.perf_counter() - started)
        self.statuses[kind][response.status_code] += 1
        return response


async def small_client(client: httpx.AsyncClient, rec: Recorder, stop_at: float, n: int) -> None:
    body = plot_body(2, 100, f"small {n}")
    while time.perf_counter() < stop_at:
        posted = await rec.request(client, "post small", "POST", "/api/plot", content=body,
                                   headers=JSON_HEADERS)  # fmt: skip
        plot_id = posted.json().get("plot_id") if posted is not None else None
        await rec.request(client, "health", "GET", "/health")
        if plot_id:
            await rec.request(client, "get record", "GET", f"/api/plots/{plot_id}")
            await rec.request(client, "view page", "GET", f"/plot/{plot_id}")


async def big_client(client: httpx.AsyncClient, rec: Recorder, stop_at: float) -> None:
    body = plot_body(12, 6000, "big")
    while time.perf_counter() < stop_at:
        posted = await rec.request(client, "post big", "POST", "/api/plot", content=body,
                                   headers=JSON_HEADERS)  # fmt: skip
        plot_id = posted.json().get("plot_id") if posted is not None else None
        if plot_id:
            await rec.request(client, "view big", "GET", f"/plot/{plot_id}")


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def report(rec: Recorder, seconds: float) -> str:
    lines = [f"{'kind':<12} {'count':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
    total = 0
    for kind, values in sorted(rec.latencies.items()):
        values.sort()
        total += len(values)
        lines.append(
            f"{kind:<12} {len(values):>6} {len(values) / seconds:>7.1f} "
            f"{1000 * percentile(values, 0.50):>8.1f} {1000 * percentile(values, 0.99):>8.1f} "
            f"{1000 * values[-1]:>8.1f}   statuses {dict(rec.statuses[kind])}"
        )
    every = sorted(v for values in rec.latencies.values() for v in values)
    if every:
        lines.append(
            f"{'all':<12} {total:>6} {total / seconds:>7.1f} {1000 * percentile(every, 0.5):>8.1f} "
            f"{1000 * percentile(every, 0.99):>8.1f} {1000 * every[-1]:>8.1f}"
        )
    if rec.errors:
        lines.append(f"transport errors: {dict(rec.errors)}")
    return "\n".join(lines)


def check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"--url must point at this machine (loopback), got {url!r}")


async def run(url: str, clients: int, seconds: float, big: bool) -> Recorder:
    rec = Recorder()
    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    timeout = httpx.Timeout(120.0)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=timeout, trust_env=False
    ) as client:
        stop_at = time.perf_counter() + seconds
        tasks = [small_client(client, rec, stop_at, n) for n in range(clients)]
        if big:
            tasks.append(big_client(client, rec, stop_at))
        await asyncio.gather(*tasks)
    return rec


def main(argv: list[str] | None = None) -> int:
    """Parses the options, runs the load and prints the table.

    Args:
        argv: the arguments; ``None`` reads ``sys.argv``.

    Returns:
        0 (the numbers are for reading, not a pass or fail).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8090", help="the sidecar's base URL")
    parser.add_argument("--clients", type=int, default=16, help="concurrent small clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to run")
    parser.add_argument("--big", action="store_true", help="add one client posting 1.75 MB plots")
    args = parser.parse_args(argv)
    check_loopback(args.url)
    started = time.perf_counter()
    rec = asyncio.run(run(args.url, args.clients, args.seconds, args.big))
    print(report(rec, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
