"""``gometal serve --loop``: the event loop the server runs (uvloop when installed, or
asyncio) answers tritonclient over HTTP and gRPC as offline ``model.predict`` does, the
startup line names it, and the process runs the loop it names (on Linux, its memory maps
hold uvloop's extension module exactly when it runs uvloop)."""

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

from gometal.serving.server import EVENT_LOOPS, resolve_event_loop
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


@pytest.mark.parametrize("loop", ["auto", "uvloop", "asyncio"])
def test_each_loop_serves_http_and_grpc(
    loop: str, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    expected_loop = resolve_event_loop(loop)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    images = rng.random((4, 3, 16, 16), dtype=np.float32)
    for server in running_server(repository, tmp_path_factory.mktemp("logs"), "--loop", loop):
        assert f"{expected_loop} event loop" in _startup_line(server)
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
