"""The plotting sidecar's HTTP API: happy paths, every kind of bad input (nothing written,
no path leaving the data directory), persistence across a restart, and the client."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient

import sidecar_helpers
from gometal.apps.cli import build_parser
from gometal.viz import sidecar_client
from gometal.viz.payload import PLOT_TYPES
from gometal.viz.server import create_app
from sidecar_helpers import (
    JSON,
    LOCAL,
    StubHandler,
    free_port,
    get_json,
    running_sidecar,
    sample_payload,
    stored_files,
    stub_server,
)

SMALL_LIMIT = 4096
# A fixture from sidecar_helpers (pytest finds fixtures among a test module's names); the
# app here takes small bodies only, so it has a client of its own.
data_dir = sidecar_helpers.data_dir


@pytest.fixture
def client(data_dir: Path) -> TestClient:
    return TestClient(create_app(data_dir, max_body_bytes=SMALL_LIMIT), base_url=LOCAL)


# ---------------------------------------------------------------- happy paths


def test_health_reports_the_service(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "gometal-sidecar", "plots": 0}


def test_post_plot_stores_it_and_serves_list_record_and_page(
    client: TestClient, data_dir: Path
) -> None:
    payload = sample_payload("training_curves", title="Loss <b>&</b> accuracy")
    response = client.post("/api/plot", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    plot_id = body["plot_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", plot_id)
    assert body["view_url"] == f"/plot/{plot_id}" and body["success"] is True
    assert stored_files(data_dir) == [f"plots/{plot_id}.json"]
    on_disk = json.loads((data_dir / "plots" / f"{plot_id}.json").read_text())
    assert on_disk["payload"] == payload and on_disk["id"] == plot_id

    listing = client.get("/api/plots").json()
    assert listing["count"] == 1
    [entry] = listing["plots"]
    assert entry["id"] == plot_id and entry["plot_type"] == "training_curves"
    assert entry["title"] == payload["title"] and entry["timestamp"] == payload["timestamp"]
    assert entry["batch_id"] is None
    assert client.get(f"/api/plots/{plot_id}").json()["payload"] == payload

    page = client.get(f"/plot/{plot_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Loss &lt;b&gt;&amp;&lt;/b&gt; accuracy" in page.text  # escaped, not markup
    assert '<script src="/static/plotly.min.js">' in page.text
    assert "cdn." not in page.text  # offline: no CDN
    bundle = client.get("/static/plotly.min.js")
    assert bundle.status_code == 200 and b"plotly" in bundle.content[:2000].lower()
    assert client.get("/health").json()["plots"] == 1
    index = client.get("/")
    assert index.status_code == 200 and f"/plot/{plot_id}" in index.text


@pytest.mark.parametrize("plot_type", PLOT_TYPES)
def test_every_plot_type_is_accepted_and_has_a_view_page(
    client: TestClient, plot_type: str
) -> None:
    response = client.post("/api/plot", json=sample_payload(plot_type))
    assert response.status_code == 200, response.text
    assert response.json()["plot_type"] == plot_type
    assert client.get(response.json()["view_url"]).status_code == 200


def test_client_chosen_ids_and_a_run_dashboard(client: TestClient, data_dir: Path) -> None:
    first = client.post(
        "/api/plot?plot_id=loss-1&batch_id=run_7", json=sample_payload("training_curves")
    )
    assert first.status_code == 200, first.text
    assert first.json()["dashboard_url"] == "/dashboard/run_7"
    second = client.post("/api/plot?batch_id=run_7", json=sample_payload("roc_curve"))
    batch = json.loads((data_dir / "batches" / "run_7.json").read_text())
    assert batch["plot_ids"] == ["loss-1", second.json()["plot_id"]]
    listing = client.get("/api/plots?batch_id=run_7").json()
    assert {p["id"] for p in listing["plots"]} == set(batch["plot_ids"])

    before = stored_files(data_dir)
    taken = client.post("/api/plot?plot_id=loss-1", json=sample_payload("qq_plot"))
    assert taken.status_code == 409 and "loss-1" in taken.json()["message"]
    assert stored_files(data_dir) == before
    page = client.get("/dashboard/run_7")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "sample training_curve" in page.text and "sample roc_curve" in page.text


def test_batch_plot_stores_all_and_appends_to_a_named_batch(
    client: TestClient, data_dir: Path
) -> None:
    plots = [sample_payload(t) for t in ("training_curves", "confusion_matrix", "qq_plot")]
    response = client.post("/api/batch-plot", json={"plots": plots, "batch": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["batch_id"])
    assert body["summary"] == {"total_plots": 3, "successful": 3, "failed": 0}
    assert [r["plot_type"] for r in body["results"]] == [p["plot_type"] for p in plots]
    assert body["dashboard_url"] == f"/dashboard/{body['batch_id']}"
    listing = client.get(f"/api/plots?batch_id={body['batch_id']}").json()
    assert listing["count"] == 3
    dashboard = client.get(body["dashboard_url"])
    assert dashboard.status_code == 200
    for payload in plots:
        assert payload["title"] in dashboard.text

    more = {"plots": [sample_payload("feature_importance")], "batch_id": "epoch-runs"}
    assert client.post("/api/batch-plot", json=more).status_code == 200
    assert client.post("/api/batch-plot", json=more).status_code == 200
    batch = json.loads((data_dir / "batches" / "epoch-runs.json").read_text())
    assert len(batch["plot_ids"]) == 2 and len(set(batch["plot_ids"])) == 2
    assert client.get("/api/plots").json()["count"] == 5
    assert not [p for p in data_dir.rglob("*.tmp")]  # atomic writes leave no temp files


def test_replace_keeps_only_a_runs_latest_snapshot(client: TestClient, data_dir: Path) -> None:
    other = client.post("/api/plot?batch_id=other", json=sample_payload("qq_plot")).json()
    first = [sample_payload("training_curves"), sample_payload("roc_curve")]
    body = {"plots": first, "batch_id": "run-r", "replace": True}
    old_ids = [r["plot_id"] for r in client.post("/api/batch-plot", json=body).json()["results"]]
    latest = [*first, sample_payload("confusion_matrix")]
    body = {"plots": latest, "batch_id": "run-r", "replace": True, "title": "Epoch 2"}
    answer = client.post("/api/batch-plot", json=body).json()
    new_ids = [r["plot_id"] for r in answer["results"]]
    batch = json.loads((data_dir / "batches" / "run-r.json").read_text())
    assert batch["plot_ids"] == new_ids and batch["title"] == "Epoch 2"
    for old_id in old_ids:
        assert not (data_dir / "plots" / f"{old_id}.json").exists()
    listing = client.get("/api/plots").json()
    assert sorted(p["id"] for p in listing["plots"]) == sorted([*new_ids, other["plot_id"]])


# ---------------------------------------------------------------- bad input


def _bad(**changes: object) -> bytes:
    payload = sample_payload("training_curves")
    payload.update(changes)
    return json.dumps(payload).encode()


def _bad_series(**changes: object) -> bytes:
    payload = sample_payload("training_curves")
    payload["series"][0].update(changes)
    return json.dumps(payload).encode()


INVALID_JSON = (400, "INVALID_JSON")
INVALID_PAYLOAD = (422, "VALIDATION_ERROR")
BAD_BODIES = {
    "truncated json": (b'{"plot_type": "training_curves", "title":', *INVALID_JSON),
    "not utf-8": (b'{"title": "\xff\xfe"}', *INVALID_JSON),
    "nan literal": (
        json.dumps(sample_payload("qq_plot")).replace("0.5", "NaN").encode(),
        *INVALID_JSON,
    ),
    "empty body": (b"", *INVALID_JSON),
    "array not object": (b"[1, 2, 3]", *INVALID_PAYLOAD),
    "unknown plot type": (_bad(plot_type="pie_chart"), *INVALID_PAYLOAD),
    "missing series": (
        json.dumps({"plot_type": "qq_plot", "title": "t"}).encode(),
        *INVALID_PAYLOAD,
    ),
    "series not a list": (_bad(series={"name": "loss"}), *INVALID_PAYLOAD),
    "data not a list": (_bad_series(data=3), *INVALID_PAYLOAD),
    "point without y": (_bad_series(data=[{"x": 1}]), *INVALID_PAYLOAD),
    "point as a pair": (_bad_series(data=[[1, 2], [3, 4]]), *INVALID_PAYLOAD),
    "unknown series type": (_bad_series(type="pie"), *INVALID_PAYLOAD),
    "z not a number": (_bad_series(data=[{"x": 0, "y": 0, "z": "hot"}]), *INVALID_PAYLOAD),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_plot_bodies_get_a_json_error_and_write_nothing(
    client: TestClient, data_dir: Path, case: str
) -> None:
    body, status, code = BAD_BODIES[case]
    response = client.post("/api/plot", content=body, headers=JSON)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["success"] is False and answer["error_code"] == code
    assert isinstance(answer["message"], str) and answer["message"]
    assert stored_files(data_dir) == []


def test_unknown_plot_type_error_names_the_value(client: TestClient) -> None:
    error = client.post("/api/plot", content=_bad(plot_type="pie_chart"), headers=JSON)
    error = error.json()["message"]
    assert "plot_type" in error and "pie_chart" in error


@pytest.mark.parametrize(
    "body",
    [
        {"plots": [sample_payload("qq_plot"), {"plot_type": "qq_plot"}]},
        {"plots": [sample_payload("qq_plot"), dict(sample_payload("qq_plot"), series=7)]},
        {"plots": []},
        {"plot": [sample_payload("qq_plot")]},
        [sample_payload("qq_plot")],
        {"plots": [sample_payload("qq_plot")], "batch_id": "../escape"},
        {"plots": [dict(sample_payload("qq_plot"), plot_id="a/b")]},
        {"plots": [sample_payload("qq_plot")], "replace": "yes"},
        {"plots": [sample_payload("qq_plot")], "title": ["not", "text"]},
    ],
)
def test_bad_batches_write_nothing(client: TestClient, data_dir: Path, body: object) -> None:
    response = client.post("/api/batch-plot", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["message"], str)
    assert stored_files(data_dir) == []


def test_one_bad_plot_in_a_batch_is_named(client: TestClient) -> None:
    body = {"plots": [sample_payload("qq_plot"), dict(sample_payload("qq_plot"), series=7)]}
    response = client.post("/api/batch-plot", json=body)
    assert response.status_code == 422 and "plots[1]" in response.json()["message"]


BAD_IDS = ["..", "../etc", "a/b", "a.b", "a b", "x" * 65, "é", "%2e%2e", "a\\b"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_ids_with_path_characters_are_refused(
    client: TestClient, data_dir: Path, tmp_path: Path, bad_id: str
) -> None:
    for query in ({"plot_id": bad_id}, {"batch_id": bad_id}):
        response = client.post("/api/plot", params=query, json=sample_payload("qq_plot"))
        assert response.status_code == 400, response.text
        assert repr(bad_id) in response.json()["message"]
    assert stored_files(data_dir) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert client.get("/api/plots", params={"batch_id": bad_id}).status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/plot/..%2F..%2Fetc%2Fpasswd",
        "/plot/a.b",
        "/api/plots/..%2Fbatches%2Fx",
        "/api/plots/%2e%2e",
        "/dashboard/..%2Fplots",
        "/dashboard/a.json",
    ],
)
def test_reading_with_bad_ids_is_a_json_4xx(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert 400 <= response.status_code < 500
    assert isinstance(response.json()["message"], str)


def test_missing_items_are_404(client: TestClient) -> None:
    for path in ("/plot/" + "0" * 32, "/api/plots/nothing", "/dashboard/no-such-run"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error_code"] == "NOT_FOUND"


def test_oversize_bodies_get_413_before_parsing(client: TestClient, data_dir: Path) -> None:
    padded = sample_payload("qq_plot")
    padded["config"]["note"] = "x" * SMALL_LIMIT
    body = json.dumps(padded).encode()
    response = client.post("/api/plot", content=body, headers=JSON)
    assert response.status_code == 413 and str(SMALL_LIMIT) in response.json()["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b"[" + b" " * SMALL_LIMIT
        yield b"]"

    streamed = client.post("/api/batch-plot", content=chunks(), headers=JSON)
    assert streamed.status_code == 413
    assert stored_files(data_dir) == []
    small = dict(sample_payload("qq_plot"))
    assert len(json.dumps(small)) < SMALL_LIMIT
    assert client.post("/api/plot", json=small).status_code == 200


def test_create_app_and_cli_reject_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(tmp_path, max_body_bytes=0)
    args = build_parser().parse_args(["sidecar", "--port", "9001", "--data-dir", "d"])
    assert (args.port, args.host, args.data_dir, args.max_body_mb) == (9001, "127.0.0.1", "d", 10)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sidecar", "--port", "70000"])


def test_the_sidecar_folder_launcher_runs_the_same_command() -> None:
    launcher = Path(__file__).resolve().parents[1] / "sidecar" / "app.py"
    done = subprocess.run(
        [sys.executable, str(launcher), "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "gometal sidecar" in done.stdout
    for option in ("--port", "--host", "--data-dir", "--max-body-mb"):
        assert option in done.stdout


def test_stray_and_corrupt_files_are_skipped_in_the_listing(
    client: TestClient, data_dir: Path
) -> None:
    good = client.post("/api/plot", json=sample_payload("qq_plot")).json()["plot_id"]
    (data_dir / "plots" / ".half-written.json.1234.tmp").write_text("{")
    (data_dir / "plots" / "broken.json").write_text("{not json")
    assert [p["id"] for p in client.get("/api/plots").json()["plots"]] == [good]


# ---------------------------------------------------------------- real server


def test_plots_persist_across_a_restart(data_dir: Path) -> None:
    with running_sidecar(data_dir) as url:
        client = sidecar_client.SidecarClient(url)
        single = client.send(sample_payload("roc_curve"))
        batch = client.send(
            [sample_payload("training_curves"), sample_payload("residual_plot")],
            batch_id="run-1",
            title="Run one",
        )
        assert single is not None and batch is not None
        status, before = get_json(url + "/api/plots")
        assert status == 200 and before["count"] == 3
    with running_sidecar(data_dir) as url:
        status, after = get_json(url + "/api/plots")
        assert after == before
        assert get_json(url + "/health")[1]["plots"] == 3
        status, record = get_json(url + f"/api/plots/{single['plot_id']}")
        assert status == 200 and record["payload"] == sample_payload("roc_curve")
        opener = sidecar_client._opener
        with opener.open(url + "/dashboard/run-1", timeout=10) as page:
            text = page.read().decode()
        assert "Run one" in text and "sample residual_plot" in text


def test_real_server_answers_oversize_and_bad_json(data_dir: Path) -> None:
    import urllib.error
    import urllib.request

    with running_sidecar(data_dir, "--max-body-mb", "0.01") as url:
        for body, status in ((b"x" * 20_000, 413), (b"{", 400)):
            post = urllib.request.Request(url + "/api/plot", data=body, method="POST", headers=JSON)
            with pytest.raises(urllib.error.HTTPError) as caught:
                sidecar_client._opener.open(post, timeout=10)
            assert caught.value.code == status
            assert json.loads(caught.value.read())["success"] is False
    assert stored_files(data_dir) == []


# ---------------------------------------------------------------- client


class _CountingHandler(StubHandler):
    status = 503
    hits: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        type(self).hits.append(self.path)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_whole(self.status, json.dumps({"error": "busy"}).encode(), "application/json")


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (422, 1)])
def test_client_retries_5xx_a_bounded_number_of_times_but_not_4xx(
    monkeypatch: pytest.MonkeyPatch, status: int, attempts: int
) -> None:
    monkeypatch.setattr(sidecar_client, "RETRY_BACKOFF_S", 0.0)
    handler = type("Handler", (_CountingHandler,), {"status": status, "hits": []})
    with stub_server(handler) as port:
        client = sidecar_client.SidecarClient(f"http://127.0.0.1:{port}", retries=2)
        with pytest.warns(RuntimeWarning, match=f"HTTP {status}"):
            assert client.send([sample_payload("qq_plot")]) is None
        assert handler.hits == ["/api/batch-plot"] * attempts


def test_send_never_raises_and_warns_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sidecar_client, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setattr(sidecar_client, "_process_warned", False)
    closed = f"http://127.0.0.1:{free_port()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sidecar_client.send([sample_payload("qq_plot")], closed, timeout=0.5) is None
        assert sidecar_client.send(sample_payload("qq_plot"), closed, retries=0) is None
        assert sidecar_client.send({"bad": object()}, closed) is None  # not JSON-encodable
        assert sidecar_client.send([sample_payload("qq_plot")], "not a url") is None
        assert sidecar_client.send([sample_payload("qq_plot")], closed, timeout=-1) is None
    assert [w.category for w in caught] == [RuntimeWarning]
    assert closed in str(caught[0].message)


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        sidecar_client.SidecarClient("http://127.0.0.1:8080", timeout=0)
    with pytest.raises(ValueError, match="retries"):
        sidecar_client.SidecarClient("http://127.0.0.1:8080", retries=-1)
    with pytest.raises(ValueError, match="url"):
        sidecar_client.SidecarClient("ftp://127.0.0.1")


def test_ensure_running_starts_one_sidecar_on_demand(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "plots"
    try:
        url = sidecar_client.ensure_running(port, data)
        assert url == f"http://127.0.0.1:{port}"
        assert sidecar_client.health(url)["status"] == "ok"
        assert sidecar_client.ensure_running(port, data) == url
        assert len(sidecar_client._started) == 1  # the second call found it running
        result = sidecar_client.send([sample_payload("learning_curve")], url, batch_id="r1")
        assert result is not None and result["batch_id"] == "r1"
        assert (data / "batches" / "r1.json").exists()
    finally:
        sidecar_client.stop_started()
    assert sidecar_client.health(url) is None


def test_send_without_a_url_starts_a_sidecar_and_a_run_sink_keeps_one_dashboard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "default-plots"
    monkeypatch.setattr(sidecar_client, "DEFAULT_PORT", free_port())
    monkeypatch.setattr(sidecar_client, "DEFAULT_DATA_DIR", str(data))
    monkeypatch.setattr(sidecar_client, "_default_url", None)
    try:
        answer = sidecar_client.send(sample_payload("qq_plot"))  # no URL: started on demand
        assert answer is not None and (data / "plots" / f"{answer['plot_id']}.json").exists()
        url = sidecar_client.default_url()
        assert url.endswith(f":{sidecar_client.DEFAULT_PORT}")

        sink = sidecar_client.RunSink(run_id="fit-1", title="fit one")
        snapshot = [sample_payload("training_curves")]
        assert sink(snapshot)["batch_id"] == "fit-1"
        snapshot.append(sample_payload("learning_rate_schedule"))
        assert sink(snapshot)["summary"]["total_plots"] == 2
        assert sink.dashboard_url == url + "/dashboard/fit-1"
        status, listing = get_json(url + "/api/plots?batch_id=fit-1")
        assert status == 200 and listing["count"] == 2  # the latest snapshot only
        assert get_json(url + "/health")[1]["plots"] == 3
    finally:
        sidecar_client.stop_started()
    with pytest.raises(ValueError, match="run_id"):
        sidecar_client.RunSink(run_id="../x")


class _BusyThenStoredHandler(StubHandler):
    """503 with a Retry-After first (as a sidecar with every upload slot taken), then 200."""

    retry_after = "1"
    hits: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        busy = not self.hits
        type(self).hits.append(self.path)
        body = json.dumps(
            {"success": False, "message": "busy", "error_code": "SERVER_BUSY"}
            if busy
            else {"success": True, "message": "1 plots stored", "batch_id": "b"}
        ).encode()
        retry_after = {"Retry-After": self.retry_after} if busy else {}
        self.send_whole(503 if busy else 200, body, "application/json", retry_after)


@pytest.mark.parametrize(("retry_after", "slept"), [("1", 1.0), ("600", 5.0), ("soon", 0.2)])
def test_client_waits_as_a_busy_sidecars_retry_after_says(
    monkeypatch: pytest.MonkeyPatch, retry_after: str, slept: float
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(sidecar_client.time, "sleep", sleeps.append)
    handler = type("Handler", (_BusyThenStoredHandler,), {"retry_after": retry_after, "hits": []})
    with stub_server(handler) as port:
        client = sidecar_client.SidecarClient(f"http://127.0.0.1:{port}", retries=2)
        assert client.send([sample_payload("qq_plot")])["success"] is True
        # Retry-After in seconds, at most RETRY_AFTER_CAP_S; else the usual backoff.
        assert sleeps == [slept] and len(handler.hits) == 2
