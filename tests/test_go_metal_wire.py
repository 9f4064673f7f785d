"""The sidecar speaks go-metal's wire format: bodies written exactly as go-metal's Go client
writes them (``tests/go_metal_wire/*.json``) are stored and drawn, and every answer decodes
into go-metal's ``PlottingResponse`` / ``BatchPlottingResponse`` as Go's encoding/json would.

The fixture files hold ``json.Marshal`` output of go-metal's ``PlotData`` (one body per
file, plus the trailing newline of the file): struct fields in declaration order, map keys
sorted, ``omitempty`` fields left out, nil slices as ``null``, ``<``, ``>`` and ``&``
escaped as ``\\u003c``, ``\\u003e`` and ``\\u0026``, floats in Go's shortest form (``1e-7``,
``0.000001``, ``0.10000000149011612`` for a widened float32, integers without ``.0``) and
``time.Time`` as RFC 3339 with nanoseconds and a zone offset.
"""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gometal.viz import sidecar_client
from gometal.viz.render import to_figure
from gometal.viz.server import create_app
from sidecar_helpers import running_sidecar, sample_payload

FIXTURES = Path(__file__).parent / "go_metal_wire"
SINGLE_PLOTS = sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "batch")
# The headers go-metal's PlottingService sets on every POST.
GO_HEADERS = {"Content-Type": "application/json", "User-Agent": "go-metal-training"}
# The Go client dials 127.0.0.1 (TestClient's default host, "testserver", is not local).
LOCAL = "http://127.0.0.1"

# go-metal's plot_type strings (training/visualization.go's PlotType constants).
GO_METAL_PLOT_TYPES = [
    "training_curves", "learning_rate_schedule", "roc_curve", "precision_recall",
    "confusion_matrix", "parameter_distribution", "gradient_histogram", "activation_pattern",
    "regression_scatter", "residual_plot", "qq_plot", "feature_importance", "learning_curve",
    "validation_curve", "prediction_interval", "feature_correlation", "partial_dependence",
]  # fmt: skip

# The Go structs the client decodes answers into: json tag -> Go type.
PLOTTING_RESPONSE = {
    "success": bool, "message": str, "plot_url": str, "view_url": str, "plot_id": str,
    "batch_id": str, "dashboard_url": str, "error_code": str,
}  # fmt: skip
BATCH_PLOTTING_RESPONSE = {
    "success": bool, "message": str, "batch_id": str, "results": list,
    "dashboard_url": str, "summary": dict,
}  # fmt: skip
BATCH_PLOT_RESULT = {
    "success": bool, "plot_id": str, "plot_url": str, "view_url": str, "plot_type": str,
    "message": str, "error_code": str,
}  # fmt: skip
BATCH_SUMMARY = {"total_plots": int, "successful": int, "failed": int}
GO_ZERO = {bool: False, str: "", int: 0, list: [], dict: {}}


def go_body(name: str) -> bytes:
    """The body as the Go client sends it (``json.Marshal`` adds no newline)."""
    return (FIXTURES / f"{name}.json").read_bytes().removesuffix(b"\n")


def go_unmarshal(doc: Any, fields: dict[str, type]) -> dict[str, Any]:
    """What Go's ``json.Unmarshal`` puts in a struct with ``fields``: keys are matched
    case-insensitively, unknown ones ignored, a value of the wrong JSON type is an error,
    a missing or null one leaves the zero value."""
    assert isinstance(doc, dict), f"Go cannot decode {doc!r} into a struct"
    decoded = {name: GO_ZERO[kind] for name, kind in fields.items()}
    for key, value in doc.items():
        match = [name for name in fields if name.lower() == key.lower()]
        if not match or value is None:
            continue
        kind = fields[match[0]]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        assert ok, f"Go cannot decode {key}={value!r} into a {kind.__name__} field"
        decoded[match[0]] = value
    return decoded


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data_dir: Path) -> TestClient:
    return TestClient(create_app(data_dir, max_body_bytes=64 * 1024), base_url=LOCAL)


def stored_files(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())


# ---------------------------------------------------------------- what the Go client sends


@pytest.mark.parametrize("name", SINGLE_PLOTS)
def test_a_go_client_payload_is_stored_as_sent_and_answered_as_plotting_response(
    client: TestClient, name: str
) -> None:
    body = go_body(name)
    response = client.post("/api/plot", content=body, headers=GO_HEADERS)
    assert response.status_code == 200, response.text
    answer = go_unmarshal(response.json(), PLOTTING_RESPONSE)
    plot_id = answer["plot_id"]
    assert answer["success"] is True and answer["message"]
    assert answer["view_url"] == f"/plot/{plot_id}"
    assert answer["plot_url"] == f"/api/plots/{plot_id}"
    assert (answer["batch_id"], answer["dashboard_url"], answer["error_code"]) == ("", "", "")
    # Only go-metal's fields, plus the plot type (which Go's decoder skips).
    assert set(response.json()) <= {*PLOTTING_RESPONSE, "plot_type"}

    sent = json.loads(body)
    assert client.get(answer["plot_url"]).json()["payload"] == sent
    page = client.get(answer["view_url"])
    assert page.status_code == 200 and html.escape(sent["title"]) in page.text


@pytest.mark.parametrize("plot_type", GO_METAL_PLOT_TYPES)
def test_every_go_metal_plot_type_is_accepted(client: TestClient, plot_type: str) -> None:
    # A one-series PlotData with no metrics, as GenerateROCCurvePlot and the like write it.
    body = (
        b'{"plot_type":"%s","title":"t","timestamp":"2026-12-05T01:18:00.5+01:00",'
        b'"model_name":"m","series":[{"name":"s","type":"line","data":[{"x":0,"y":0},'
        b'{"x":1,"y":1}],"style":{"color":"#FF6B6B","line_width":2}}],"config":'
        b'{"x_axis_label":"x","y_axis_label":"y","x_axis_scale":"linear",'
        b'"y_axis_scale":"linear","show_legend":true,"show_grid":true,"width":600,'
        b'"height":600,"interactive":true}}'
    ) % plot_type.encode()
    response = client.post("/api/plot", content=body, headers=GO_HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["plot_type"] == plot_type
    assert client.get(response.json()["view_url"]).status_code == 200


@pytest.mark.parametrize("name", SINGLE_PLOTS)
def test_the_figure_follows_go_metal_config_and_styles(name: str) -> None:
    sent = json.loads(go_body(name))
    figure = to_figure(sent)
    series = sent["series"] or []
    assert [trace.name for trace in figure.data] == [s["name"] for s in series]
    config = sent["config"]
    assert (figure.layout.xaxis.title.text or "") == config["x_axis_label"]
    assert (figure.layout.yaxis.title.text or "") == config["y_axis_label"]
    assert (figure.layout.yaxis.type == "log") == (config["y_axis_scale"] == "log")
    for trace, s in zip(figure.data, series):
        style = s.get("style", {})
        if s["type"] == "fill":  # the band's outline, drawn as one filled polygon
            assert trace.fill == "toself" and list(trace.y) == [p["y"] for p in s["data"]]
        if "alpha" in style:
            assert trace.opacity == pytest.approx(style["alpha"])
        if style.get("line_style") == "dashed":
            assert trace.line.dash == "dash"
        if "line_width" in style:
            assert trace.line.width == style["line_width"]


def test_a_go_client_batch_is_answered_as_batch_plotting_response(
    client: TestClient, data_dir: Path
) -> None:
    body = go_body("batch")
    response = client.post("/api/batch-plot", content=body, headers=GO_HEADERS)
    assert response.status_code == 200, response.text
    assert set(response.json()) <= set(BATCH_PLOTTING_RESPONSE)
    answer = go_unmarshal(response.json(), BATCH_PLOTTING_RESPONSE)
    sent = json.loads(body)["plots"]
    batch_id = answer["batch_id"]
    assert answer["success"] is True and answer["message"] and batch_id
    assert answer["dashboard_url"] == f"/dashboard/{batch_id}"
    summary = go_unmarshal(answer["summary"], BATCH_SUMMARY)
    assert summary == {"total_plots": len(sent), "successful": len(sent), "failed": 0}
    assert len(answer["results"]) == len(sent)
    for result, plot in zip(answer["results"], sent):  # one per plot, in order
        assert set(result) <= set(BATCH_PLOT_RESULT)
        decoded = go_unmarshal(result, BATCH_PLOT_RESULT)
        assert decoded["success"] is True and decoded["plot_type"] == plot["plot_type"]
        assert decoded["view_url"] == f"/plot/{decoded['plot_id']}"
        assert decoded["message"] and decoded["error_code"] == ""
        record = client.get(decoded["plot_url"]).json()
        assert record["payload"] == plot and record["batch_id"] == batch_id
    page = client.get(answer["dashboard_url"])
    assert page.status_code == 200
    for plot in sent:
        assert html.escape(plot["title"]) in page.text
    assert len(stored_files(data_dir)) == len(sent) + 1  # the plots and the batch


# ---------------------------------------------------------------- errors


def test_errors_answer_success_false_a_message_and_an_error_code(client: TestClient) -> None:
    unknown_type = go_body("confusion_matrix").replace(b"confusion_matrix", b"pie_chart", 1)
    cases = [
        ("/api/plot", b'{"plot_type":', 400, "INVALID_JSON"),
        ("/api/plot", unknown_type, 422, "VALIDATION_ERROR"),
        ("/api/plot", b"x" * (64 * 1024 + 1), 413, "PAYLOAD_TOO_LARGE"),
        ("/api/plot?batch_id=../up", go_body("confusion_matrix"), 400, "INVALID_ID"),
        ("/api/batch-plot", b'{"batch":true,"plots":null}', 422, "INVALID_BATCH"),
    ]
    for url, body, status, code in cases:
        response = client.post(url, content=body, headers=GO_HEADERS)
        assert response.status_code == status, response.text
        assert set(response.json()) == {"success", "message", "error_code"}
        answer = go_unmarshal(response.json(), PLOTTING_RESPONSE)
        assert answer["success"] is False and answer["error_code"] == code
        assert answer["message"]
    answer = client.post("/api/plot", content=unknown_type, headers=GO_HEADERS)
    assert "pie_chart" in answer.json()["message"]
    for method, url, status, code in [
        ("GET", "/plot/" + "0" * 32, 404, "NOT_FOUND"),
        ("GET", "/api/plot", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/no/such/page", 404, "NOT_FOUND"),
    ]:
        response = client.request(method, url)
        assert response.status_code == status
        assert response.json()["success"] is False and response.json()["error_code"] == code


def test_a_taken_plot_id_is_a_conflict_with_its_code(client: TestClient) -> None:
    body = go_body("confusion_matrix")
    assert client.post("/api/plot?plot_id=cm", content=body, headers=GO_HEADERS).status_code == 200
    again = client.post("/api/plot?plot_id=cm", content=body, headers=GO_HEADERS)
    assert again.status_code == 409
    assert again.json()["error_code"] == "PLOT_ID_TAKEN" and "'cm'" in again.json()["message"]


def test_every_missing_key_is_named_not_only_the_first(client: TestClient) -> None:
    body = b'{"plot_type":"qq_plot","series":[]}'
    response = client.post("/api/plot", content=body, headers=GO_HEADERS)
    assert response.status_code == 422
    message = response.json()["message"]
    for key in ("title", "timestamp", "model_name", "config"):
        assert f"'{key}'" in message, message
    assert "'series'" not in message and "'plot_type'" not in message

    plot = json.loads(go_body("confusion_matrix"))
    plot["series"] = [{"data": []}, {"name": "ok", "type": "line", "data": [{}]}]
    message = client.post("/api/plot", json=plot).json()["message"]
    assert "payload.series[0] is missing the required keys 'name' and 'type'" in message
    assert "payload.series[1].data[0] is missing the required keys 'x' and 'y'" in message


def test_a_batch_with_bad_plots_names_each_and_stores_nothing(
    client: TestClient, data_dir: Path
) -> None:
    good = json.loads(go_body("confusion_matrix"))
    no_keys = {"plot_type": "qq_plot"}
    bad_series = {**good, "series": [{"name": "s", "type": "pie", "data": None}]}
    response = client.post(
        "/api/batch-plot", json={"batch": True, "plots": [good, no_keys, bad_series]}
    )
    assert response.status_code == 422
    answer = go_unmarshal(response.json(), BATCH_PLOTTING_RESPONSE)
    assert answer["success"] is False
    assert "plots[1]" in answer["message"] and "plots[2]" in answer["message"]
    assert "'title'" in answer["message"] and "'config'" in answer["message"]
    results = [go_unmarshal(r, BATCH_PLOT_RESULT) for r in answer["results"]]
    assert [r["success"] for r in results] == [False, False, False]
    assert [r["error_code"] for r in results] == [
        "BATCH_REJECTED", "VALIDATION_ERROR", "VALIDATION_ERROR"
    ]  # fmt: skip
    assert [r["plot_type"] for r in results] == ["confusion_matrix", "qq_plot", "confusion_matrix"]
    assert "series[0].type" in results[2]["message"]
    summary = go_unmarshal(answer["summary"], BATCH_SUMMARY)
    assert summary == {"total_plots": 3, "successful": 0, "failed": 3}
    assert stored_files(data_dir) == []


# ---------------------------------------------------------------- over a real socket


def test_a_real_sidecar_answers_go_requests_and_the_gometal_client(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    def post(url: str, body: bytes) -> tuple[int, Any]:
        request = urllib.request.Request(url, data=body, method="POST", headers=GO_HEADERS)
        try:
            with sidecar_client._opener.open(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    with running_sidecar(tmp_path / "data") as url:
        status, doc = post(url + "/api/plot", go_body("training_curves"))
        assert status == 200 and go_unmarshal(doc, PLOTTING_RESPONSE)["success"] is True
        with sidecar_client._opener.open(url + doc["view_url"], timeout=10) as page:
            assert "Training Curves - mnist-cnn" in page.read().decode()
        status, doc = post(url + "/api/batch-plot", go_body("batch"))
        assert status == 200 and doc["summary"]["successful"] == 4
        status, doc = post(url + "/api/plot", b'{"plot_type":"training_curves"}')
        assert status == 422 and doc["error_code"] == "VALIDATION_ERROR"

        client = sidecar_client.SidecarClient(url, retries=0)
        answer = client.send(sample_payload("qq_plot"), batch_id="run-1")
        assert answer["success"] is True and answer["dashboard_url"] == "/dashboard/run-1"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert client.send({"plot_type": "qq_plot"}) is None
        [warning] = caught
        assert "HTTP 422" in str(warning.message) and "VALIDATION_ERROR" in str(warning.message)
        assert "'title'" in str(warning.message)
