"""``gometal serve --loop`` and ``--switch-interval-ms``: the event loop the server runs
(uvloop when installed, or asyncio) and the GIL's switch interval while it runs. Each
server answers tritonclient over HTTP and gRPC as offline ``model.predict`` does, the startup
line names both settings, and the process runs the loop it names (on Linux, its memory maps
hold uvloop's extension module exactly when it runs uvloop); bad values are refused with
the option named. bench_serving.py's ``--variant`` passes both as the server's options."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from bench_serving import split_server_options
from gometal.serving import serve
from gometal.serving.server import DEFAULT_SWITCH_INTERVAL_MS, EVENT_LOOPS, resolve_event_loop
from serving_helpers import ServerProcess, offline, running_server, write_repository

RTOL, ATOL = 1e-5, 1e-6
STARTUP_LINE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"), ("mlp", "cnn"))


def _startup_line(server: ServerProcess) -> str:
    deadline = time.monotonic() + STARTUP_LINE_TIMEOUT_S
    while time.monotonic() < deadline:
        lines = server.stdout_path.read_text(errors="replace").splitlines()
        if lines:
            return lines[0]
        time.sleep(0.1)
    raise AssertionError(f"no startup line:\n{server.stderr()}")


def _uvloop_mapped(pid: int) -> bool:
    """Whether uvloop's compiled loop is loaded in process ``pid`` (Linux: its maps)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any("uvloop" in line and "loop." in line for line in maps.splitlines())


def test_resolve_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EVENT_LOOPS == ("auto", "uvloop", "asyncio")
    assert resolve_event_loop("asyncio") == "asyncio"
    installed = importlib.util.find_spec("uvloop") is not None
    assert resolve_event_loop("auto") == ("uvloop" if installed else "asyncio")
    with pytest.raises(ValueError, match=r"loop must be one of auto, uvloop, asyncio, got 'tokio'"):
        resolve_event_loop("tokio")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "uvloop" else real_find_spec(name, *a),
    )
    assert resolve_event_loop("auto") == "asyncio"
    with pytest.raises(ValueError, match=r"loop 'uvloop' needs the uvloop package"):
        resolve_event_loop("uvloop")


def test_unknown_loop_is_a_usage_error(tmp_path: Path) -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "gometal.apps.cli", "serve", str(tmp_path), "--loop", "tokio"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert answer.returncode == 2
    assert "--loop" in answer.stderr and "'tokio'" in answer.stderr


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "1001", "fast"])
def test_switch_interval_must_be_milliseconds_in_range(tmp_path: Path, interval: str) -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "gometal.apps.cli", "serve", str(tmp_path),
         f"--switch-interval-ms={interval}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert answer.returncode == 2, answer.stderr
    assert "--switch-interval-ms" in answer.stderr and "(0, 1000]" in answer.stderr
    with pytest.raises(ValueError, match=r"switch_interval_ms must be milliseconds in \(0, 1000\]"):
        serve(tmp_path, switch_interval_ms=float(interval) if interval != "fast" else interval)


@pytest.mark.parametrize(
    ("loop", "interval"), [("auto", None), ("uvloop", "1"), ("asyncio", "0.05")]
)
def test_each_loop_serves_http_and_grpc(
    loop: str, interval: str | None, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    expected_loop = resolve_event_loop(loop)
    shown = interval if interval is not None else f"{DEFAULT_SWITCH_INTERVAL_MS:g}"
    options = ["--loop", loop, *(["--switch-interval-ms", interval] if interval else [])]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    images = rng.random((4, 3, 16, 16), dtype=np.float32)
    for server in running_server(repository, tmp_path_factory.mktemp("logs"), *options):
        line = _startup_line(server)
        assert f"{expected_loop} event loop, GIL switch interval {shown} ms)" in line, line
        if Path("/proc/self/maps").exists():  # Linux: what the process loaded
            assert _uvloop_mapped(server.process.pid) == (expected_loop == "uvloop")
        http = triton_http.InferenceServerClient(server.url, concurrency=4)
        grpc = triton_grpc.InferenceServerClient(server.grpc_url)
        for name, version, data in (("mlp", 2, x), ("cnn", 1, images)):
            reference = offline(repository, name, version, data)
            output = http.get_model_metadata(name)["outputs"][0]["name"]
            tensor = triton_http.InferInput("input", list(data.shape), "FP32")
            tensor.set_data_from_numpy(data, binary_data=True)
            # Several requests in flight at once: they meet in the batcher and come back
            # through the loop's thread-safe hand-off.
            pending = [http.async_infer(name, [tensor]) for _ in range(8)]
            for request in pending:
                got = request.get_result().as_numpy(output)
                np.testing.assert_allclose(got, reference, rtol=RTOL, atol=ATOL)
            tensor = triton_grpc.InferInput("input", list(data.shape), "FP32")
            tensor.set_data_from_numpy(data)
            got = grpc.infer(name, [tensor]).as_numpy(output)
            np.testing.assert_allclose(got, reference, rtol=RTOL, atol=ATOL)
        http.close()
        grpc.close()


def test_bench_variants_pass_loop_and_switch_interval_as_server_options() -> None:
    variant = {"loop": "asyncio", "instances": 3, "switch_interval_ms": 5, "threads": 1}
    options, config = split_server_options(variant)
    assert options == ["--threads", "1", "--loop", "asyncio", "--switch-interval-ms", "5"]
    assert config == {"instances": 3}  # the model's config.json: batching settings only
    assert variant["loop"] == "asyncio"  # the variant itself is left as it was
