"""Shared by the sidecar tests: one hand-written valid payload per plot type, an app on a
data folder (fixtures ``data_dir`` and ``client``), a real sidecar process on a free port,
and stand-in HTTP servers for the client's side."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

SIDECAR_START_TIMEOUT_S = 30.0
LOCAL = "http://127.0.0.1"  # TestClient's default host, "testserver", is not a local name
JSON = {"content-type": "application/json"}


def _series(name: str, kind: str, points: list[dict[str, Any]], **style: Any) -> dict:
    return {"name": name, "type": kind, "data": points, "style": style}


def _line(name: str, xs: list[float], ys: list[float], kind: str = "line") -> dict:
    return _series(name, kind, [{"x": x, "y": y} for x, y in zip(xs, ys)])


def _grid(names: list[str], values: list[list[float]]) -> dict:
    points = [
        {"x": names[j], "y": names[i], "z": values[i][j]}
        for i in range(len(names))
        for j in range(len(names))
    ]
    return _series("cells", "heatmap", points)


def _series_for(plot_type: str) -> list[dict]:
    """Series that make sense for each plot type, covering every series type."""
    steps = [float(i) for i in range(1, 11)]
    decay = [math.exp(-0.3 * s) for s in steps]
    grid = [i / 10 for i in range(11)]
    if plot_type == "training_curves":
        return [
            _line("train loss", steps, decay),
            _line("val loss", steps, [d + 0.05 for d in decay]),
        ]
    if plot_type == "learning_rate_schedule":
        return [_line("lr", steps, [1e-3 * 0.9**s for s in steps])]
    if plot_type == "roc_curve":
        return [_line("class 1", grid, [g**0.3 for g in grid]), _line("chance", [0, 1], [0, 1])]
    if plot_type == "precision_recall":
        return [_line("class 1", grid, [1 - 0.5 * g**2 for g in grid])]
    if plot_type == "confusion_matrix":
        return [_grid(["cat", "dog", "bird"], [[8, 1, 1], [2, 7, 1], [0, 1, 9]])]
    if plot_type in ("parameter_distribution", "gradient_histogram"):
        centers = [-1 + 0.2 * i for i in range(11)]
        counts = [math.exp(-4 * c * c) * 50 for c in centers]
        return [
            _line("dense_0.weight", centers, counts, kind="histogram"),
            _line("dense_1.weight", centers, [c * 0.5 for c in counts], kind="histogram"),
        ]
    if plot_type == "activation_pattern":
        box = [{"x": "relu_0", "y": v} for v in (0.0, 0.2, 0.4, 0.5, 0.9, 1.3)]
        means = [{"x": "relu_0", "y": 0.5, "error": 0.3}, {"x": "relu_1", "y": 0.7, "error": 0.2}]
        return [_series("values", "box", box), _series("mean ± std", "errorbar", means)]
    if plot_type in ("regression_scatter", "residual_plot", "qq_plot"):
        xs = [-2 + 0.4 * i for i in range(11)]
        ys = [x + 0.1 * math.sin(7 * x) for x in xs]
        return [_line("points", xs, ys, kind="scatter"), _line("y = x", [-2, 2], [-2, 2])]
    if plot_type == "feature_importance":
        points = [{"x": f"f{i}", "y": 1.0 / (i + 1), "error": 0.05} for i in range(5)]
        return [_series("importance", "bar", points)]
    if plot_type in ("learning_curve", "validation_curve"):
        sizes = [10.0, 20.0, 40.0, 80.0]
        band = [{"x": s, "y": 0.8, "lower": 0.75, "upper": 0.85} for s in sizes]
        return [
            _series("validation ± std", "band", band),
            _line("train", sizes, [0.99, 0.97, 0.95, 0.93]),
            _series("validation", "errorbar", [{"x": s, "y": 0.8, "error": 0.05} for s in sizes]),
        ]
    if plot_type == "prediction_interval":
        xs = [float(i) for i in range(8)]
        band = [{"x": x, "y": x, "lower": x - 1, "upper": x + 1} for x in xs]
        return [
            _series("90% interval", "band", band),
            _line("prediction", xs, xs),
            _line("observed", xs, [x + 0.3 for x in xs], kind="scatter"),
        ]
    if plot_type == "feature_correlation":
        return [_grid(["a", "b"], [[1.0, -0.4], [-0.4, 1.0]])]
    if plot_type == "partial_dependence":
        return [_line("feature 0", grid, [g * g for g in grid], kind="area")]
    raise KeyError(f"no sample series for plot type {plot_type!r}")


def sample_payload(plot_type: str, title: str | None = None) -> dict[str, Any]:
    """A schema-valid payload of ``plot_type`` with a few hand-picked points."""
    return {
        "plot_type": plot_type,
        "title": title or f"sample {plot_type}",
        "timestamp": "2026-01-02T03:04:05Z",
        "model_name": "mlp",
        "series": _series_for(plot_type),
        "config": {"x_label": "x", "y_label": "y"},
        "metrics": {"score": 0.5},
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data_dir: Path) -> TestClient:
    """The app with its default settings, called as the sidecar's own clients reach it."""
    # Imported here: the modules that only start a real sidecar need no web stack.
    from fastapi.testclient import TestClient

    from gometal.viz.server import create_app

    return TestClient(create_app(data_dir), base_url=LOCAL)


def stored_files(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextlib.contextmanager
def running_sidecar(data_dir: Path, *extra: str) -> Iterator[str]:
    """Runs ``gometal sidecar`` (through ``python -m gometal.apps.cli``) on a free port;
    yields its base URL and stops it on exit."""
    with sidecar_process(data_dir, *extra) as (url, _):
        yield url


@contextlib.contextmanager
def sidecar_process(data_dir: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """As :func:`running_sidecar`, yielding the base URL and the server's process."""
    port = free_port()
    log = open(data_dir.parent / f"sidecar-{port}.log", "wb")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "gometal.apps.cli", "sidecar", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--data-dir", str(data_dir), *extra], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SIDECAR_START_TIMEOUT_S
        while True:
            try:
                if get_json(url + "/health", timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                text = (data_dir.parent / f"sidecar-{port}.log").read_text(errors="replace")
                raise RuntimeError(f"sidecar did not start (exit {process.poll()}):\n{text}")
            time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Sends ``request`` as is over a new connection; returns all the server sends back
    until it closes the connection (or ``timeout`` passes). The request should say
    ``Connection: close``; the socket is not half-closed, as no HTTP client does that."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lowercase names) and body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return int(status_line.split()[1]), headers, body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class StubHandler(http.server.BaseHTTPRequestHandler):
    """A handler for stand-in servers: quiet, and able to send a whole answer at once."""

    def send_whole(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # the request log would bury the test output


@contextlib.contextmanager
def stub_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serves ``handler`` on a free local port from a thread; yields the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
