"""What the sidecar stores stays whole, and every error answers in the documented JSON.

A batch is stored whole or not at all (text UTF-8 cannot hold, a failing write); hostile
bodies (a lone surrogate, 100,000 nested brackets) and requests that are not HTTP get the
JSON error body; a sidecar killed mid-write leaves nothing behind once it starts again."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

import sidecar_helpers
from gometal.viz import server_store
from gometal.viz.server import ERROR_CODES, create_app
from gometal.viz.server_store import PlotStore
from sidecar_helpers import (
    JSON,
    get_json,
    parse_response,
    raw_exchange,
    running_sidecar,
    sample_payload,
    stored_files,
)

if TYPE_CHECKING:
    from gometal.viz.server_store import Recovery

ERROR_KEYS = {"success", "message", "error_code"}

# Fixtures from sidecar_helpers (the app on a fresh data folder): pytest finds fixtures
# among a test module's names.
data_dir = sidecar_helpers.data_dir
client = sidecar_helpers.client


def assert_json_error(response_json: dict, code: str) -> None:
    assert ERROR_KEYS <= set(response_json), response_json
    assert response_json["success"] is False and response_json["error_code"] == code
    assert isinstance(response_json["message"], str) and response_json["message"]


# ---------------------------------------------------------------- batches: all or nothing


def surrogate_batch() -> bytes:
    """Two plots, the second titled with a lone surrogate: valid JSON, but no UTF-8 exists."""
    good, bad = sample_payload("qq_plot"), sample_payload("roc_curve")
    bad["title"] = "loss \ud800"
    return json.dumps({"plots": [good, bad], "batch_id": "run-s"}).encode()  # ASCII escapes


def test_a_batch_with_a_lone_surrogate_is_refused_whole(client: TestClient, data_dir: Path) -> None:
    response = client.post("/api/batch-plot", content=surrogate_batch(), headers=JSON)
    assert response.status_code == 400, response.text
    assert_json_error(response.json(), "INVALID_JSON")
    assert "plots[1].title" in response.json()["message"]
    assert stored_files(data_dir) == []
    single = json.dumps({**sample_payload("qq_plot"), "model_name": "\udfff"}).encode()
    response = client.post("/api/plot", content=single, headers=JSON)
    assert response.status_code == 400 and "body.model_name" in response.json()["message"]
    key = b'{"plot_type": "qq_plot", "\\ud800": 1}'
    assert client.post("/api/plot", content=key, headers=JSON).status_code == 400
    assert stored_files(data_dir) == []


def test_the_store_writes_a_batch_whole_or_not_at_all(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PlotStore(data_dir)
    bad = dict(sample_payload("roc_curve"), title="\ud800")
    with pytest.raises(ValueError, match="cannot be stored as UTF-8 JSON"):
        store.add_plots([sample_payload("qq_plot"), bad], batch_id="run-1")
    assert stored_files(data_dir) == []

    calls = []
    real_write = server_store.write_atomically

    def disk_full_on_the_third_file(path, data):  # two plots, then the batch record fails
        calls.append(Path(path).name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(server_store, "write_atomically", disk_full_on_the_third_file)
    with pytest.raises(OSError, match="No space"):
        store.add_plots([sample_payload("qq_plot"), sample_payload("roc_curve")], batch_id="b")
    assert calls[2] == "b.json" and stored_files(data_dir) == []
    calls.clear()
    with pytest.raises(OSError, match="No space"):
        store.add_plots([sample_payload("qq_plot")] * 3)  # the third plot fails
    assert stored_files(data_dir) == []


# ---------------------------------------------------------------- every error is JSON


def test_deeply_nested_json_gets_the_json_error(client: TestClient, data_dir: Path) -> None:
    for body in (b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        for path in ("/api/plot", "/api/batch-plot"):
            response = client.post(path, content=body, headers=JSON)
            assert response.status_code == 400, response.text
            assert_json_error(response.json(), "INVALID_JSON")
            assert "nested" in response.json()["message"]
    nested_config = sample_payload("qq_plot")
    deep: dict = {}
    nested_config["config"]["custom_options"] = deep
    for _ in range(100):  # parses, but deeper than any payload needs
        deep["x"] = deep = {}
    response = client.post("/api/plot", json=nested_config)
    assert response.status_code == 400 and "body.config.custom_options.x" in response.text
    assert stored_files(data_dir) == []


def _request(method: str, path: str, port: int, headers: str = "", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    head += headers
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_a_real_sidecar_answers_every_hostile_request_in_json(data_dir: Path) -> None:
    json_type = "Content-Type: application/json\r\n"
    with running_sidecar(data_dir, "--max-body-mb", "1") as url:
        port = int(url.rsplit(":", 1)[1])
        cases = [
            (b"GARBAGE\r\n\r\n", 400, "INVALID_REQUEST"),
            (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400, "INVALID_REQUEST"),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 400, "INVALID_REQUEST"),
            (_request("POST", "/api/plot", port, json_type, b"[" * 100_000), 400, "INVALID_JSON"),
            (
                _request("POST", "/api/batch-plot", port, json_type, surrogate_batch()),
                400,
                "INVALID_JSON",
            ),
            (
                _request("POST", "/api/plot", port, json_type + "Content-Length: x\r\n"),
                400,
                "INVALID_REQUEST",
            ),
            # Refused on its Content-Length, before the body is sent.
            (
                _request("POST", "/api/plot", port, json_type + "Content-Length: 1100000\r\n"),
                413,
                "PAYLOAD_TOO_LARGE",
            ),
            (_request("POST", "/api/plot", port, "", b"{}"), 415, "UNSUPPORTED_MEDIA_TYPE"),
            (_request("PUT", "/api/plot", port, json_type, b"{}"), 405, "METHOD_NOT_ALLOWED"),
            (_request("GET", "/api/plots?batch_id=a.b", port), 400, "INVALID_ID"),
            (_request("GET", "/nothing/here", port), 404, "NOT_FOUND"),
        ]
        for request, status, code in cases:
            raw = raw_exchange(port, request)
            got_status, headers, body = parse_response(raw)
            assert (got_status, headers.get("content-type")) == (status, "application/json"), raw
            assert_json_error(json.loads(body), code)
            assert code in ERROR_CODES or code in ("METHOD_NOT_ALLOWED", "NOT_FOUND")
    assert stored_files(data_dir) == []


# ---------------------------------------------------------------- a sidecar killed mid-write

KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[5])
    from sidecar_helpers import sample_payload
    from gometal.viz import server_store
    from gometal.base import atomic

    data_dir, plots, kill_on, replace = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    store = server_store.PlotStore(data_dir)
    if replace == "replace":
        store.add_plots([sample_payload("qq_plot")] * 2, batch_id="run", replace=True)
    calls = {"rename": 0, "unlink": 0}
    action, _, count = kill_on.partition(":")

    def dying(name, real):
        def call(*args):
            calls[name] += 1
            if name == action and calls[name] == int(count):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)
        return call

    # A rename comes after the temporary file was written and synced; an unlink removes
    # a replaced plot once its batch no longer lists it.
    atomic.os.replace = dying("rename", os.replace)
    os.unlink = dying("unlink", os.unlink)
    store.add_plots(
        [sample_payload("roc_curve")] * plots, batch_id="run", replace=replace == "replace"
    )
    """
)


def kill_a_writer(data_dir: Path, plots: int, kill_on: str, replace: bool = False) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(data_dir), str(plots), kill_on,
         "replace" if replace else "append", str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr  # SIGKILL, as in the report


def recovery_at_start(data_dir: Path) -> Recovery:
    """What a sidecar starting on ``data_dir`` in this process cleans up."""
    app = create_app(data_dir)
    app.state.store.close()  # as its shutdown does: another store may clean up next
    return app.state.recovery


def plot_files(data_dir: Path) -> list[str]:
    return sorted(p.stem for p in (data_dir / "plots").glob("*.json"))


def test_start_up_removes_what_a_killed_batch_write_left(data_dir: Path) -> None:
    kill_a_writer(data_dir, plots=3, kill_on="rename:2")  # plot 1 renamed, plot 2 a temp
    assert len(list((data_dir / "plots").glob(".*.tmp"))) == 1
    assert len(plot_files(data_dir)) == 1 and not (data_dir / "batches" / "run.json").exists()
    with running_sidecar(data_dir) as url:
        assert get_json(url + "/health")[1]["plots"] == 0
        assert get_json(url + "/api/plots")[1]["count"] == 0
    assert stored_files(data_dir) == []


def test_start_up_finishes_a_replace_killed_before_the_old_plots_went(data_dir: Path) -> None:
    # "run" holds two plots; replacing them with two others is killed after the new batch
    # record was written, as the first old plot is being removed.
    kill_a_writer(data_dir, plots=2, kill_on="unlink:1", replace=True)
    batch = json.loads((data_dir / "batches" / "run.json").read_text())
    assert len(plot_files(data_dir)) == 4
    recovery = recovery_at_start(data_dir)
    assert recovery.temp_files == 0 and len(recovery.orphan_plots) == 2
    assert plot_files(data_dir) == sorted(batch["plot_ids"])


def test_start_up_keeps_plots_of_no_batch_and_of_an_unreadable_batch(data_dir: Path) -> None:
    store = PlotStore(data_dir)
    [alone] = store.add_plots([sample_payload("qq_plot")])
    [kept] = store.add_plots([sample_payload("qq_plot")], batch_id="damaged")
    (data_dir / "batches" / "damaged.json").write_text("{not json")
    store.close()
    recovery = recovery_at_start(data_dir)
    assert recovery.orphan_plots == () and recovery.temp_files == 0
    assert plot_files(data_dir) == sorted([alone["id"], kept["id"]])


def test_start_up_leaves_the_files_of_a_sidecar_still_running(data_dir: Path) -> None:
    with running_sidecar(data_dir):
        # What a write in flight in that process looks like from outside.
        store = PlotStore(data_dir)
        store.add_plots([sample_payload("qq_plot")], plot_ids=["in-flight"])
        store.close()
        record = json.loads((data_dir / "plots" / "in-flight.json").read_text())
        record["batch_id"] = "not-yet-written"
        (data_dir / "plots" / "in-flight.json").write_text(json.dumps(record))
        (data_dir / "plots" / ".next.json.0123456789ab.tmp").write_bytes(b"{")
        recovery = recovery_at_start(data_dir)
        assert recovery.skipped is not None and recovery.orphan_plots == ()
        assert len(stored_files(data_dir)) == 2
    recovery = recovery_at_start(data_dir)  # the only user now
    assert recovery.orphan_plots == ("in-flight",) and recovery.temp_files == 1
    assert stored_files(data_dir) == []
