"""go-metal's plot-type names everywhere (schema, builders, collector), and gometal's former
names (``training_curve``, ``activation_statistics``, ``correlation_heatmap``) still read
from saved plots and payloads, as the new names."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from gometal.viz import plots
from gometal.viz.payload import (
    LEGACY_PLOT_TYPES,
    PLOT_TYPES,
    load_schema,
    make_payload,
    normalize_payload,
    point,
    series,
    validate_payload,
)
from gometal.viz.render import dashboard_html, to_figure
from gometal.viz.server import create_app
from sidecar_helpers import sample_payload

# Former name -> go-metal's name, written out independently of the code under test.
RENAMED = {
    "training_curve": "training_curves",
    "activation_statistics": "activation_pattern",
    "correlation_heatmap": "feature_correlation",
}


def old_payload(new_name: str) -> dict:
    """A payload as gometal wrote it before the rename."""
    old_name = {new: old for old, new in RENAMED.items()}[new_name]
    return {**sample_payload(new_name), "plot_type": old_name}


def test_the_schema_lists_go_metals_names_and_the_old_ones_as_deprecated() -> None:
    schema = load_schema()
    current, legacy = schema["properties"]["plot_type"]["anyOf"]
    assert set(RENAMED.values()) <= set(current["enum"]) == set(PLOT_TYPES)
    assert not set(RENAMED) & set(PLOT_TYPES)
    assert legacy["deprecated"] is True and set(legacy["enum"]) == set(RENAMED)
    assert dict(LEGACY_PLOT_TYPES) == RENAMED
    for new_name in RENAMED.values():  # an old file still passes the shipped schema
        jsonschema.validate(old_payload(new_name), schema, cls=jsonschema.Draft202012Validator)


def test_builders_write_the_new_names_and_keep_the_old_functions() -> None:
    assert plots.training_curves({"loss": [1.0, 0.5]})["plot_type"] == "training_curves"
    activations = {"relu_0": np.array([0.0, 2.0])}
    assert plots.activation_pattern(activations)["plot_type"] == "activation_pattern"
    x = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 0.2]])
    assert plots.feature_correlation(x)["plot_type"] == "feature_correlation"
    assert plots.training_curve is plots.training_curves
    assert plots.activation_statistics is plots.activation_pattern
    assert plots.correlation_heatmap is plots.feature_correlation
    made = make_payload("correlation_heatmap", "t", [series("a", "line", [point(0, 1)])])
    assert made["plot_type"] == "feature_correlation"


@pytest.mark.parametrize("new_name", sorted(RENAMED.values()))
def test_an_old_payload_validates_normalises_and_renders(new_name: str) -> None:
    payload = old_payload(new_name)
    validate_payload(payload)
    normalized = normalize_payload(payload)
    assert normalized["plot_type"] == new_name
    assert normalized["series"] == normalize_payload(sample_payload(new_name))["series"]
    assert payload["plot_type"] in RENAMED  # the caller's dict is left alone
    assert len(to_figure(payload).data) == len(payload["series"])
    page = dashboard_html([payload])
    assert f'data-plot-type="{new_name}"' in page


def test_plot_files_saved_under_old_names_are_served_under_the_new_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "plots").mkdir(parents=True)
    (data / "batches").mkdir()
    ids = []
    for index, new_name in enumerate(sorted(RENAMED.values())):
        plot_id = f"old-{index}"
        ids.append((plot_id, new_name))
        record = {
            "id": plot_id,
            "batch_id": "old-run",
            "created": f"2026-01-02T03:04:0{index}.000000+00:00",
            "payload": old_payload(new_name),
        }
        (data / "plots" / f"{plot_id}.json").write_text(json.dumps(record))
    batch = {
        "id": "old-run",
        "title": "saved before the rename",
        "created": "2026-01-02T03:04:00.000000+00:00",
        "updated": "2026-01-02T03:04:02.000000+00:00",
        "plot_ids": [plot_id for plot_id, _ in ids],
    }
    (data / "batches" / "old-run.json").write_text(json.dumps(batch))

    client = TestClient(create_app(data), base_url="http://127.0.0.1")
    listing = client.get("/api/plots").json()["plots"]
    assert [(p["id"], p["plot_type"]) for p in listing] == ids
    for plot_id, new_name in ids:
        assert client.get(f"/api/plots/{plot_id}").json()["payload"]["plot_type"] == new_name
        page = client.get(f"/plot/{plot_id}")
        assert page.status_code == 200 and new_name in page.text
    dashboard = client.get("/dashboard/old-run")
    assert dashboard.status_code == 200
    for _, new_name in ids:
        assert f'data-plot-type="{new_name}"' in dashboard.text
    index = client.get("/")
    assert index.status_code == 200 and "training_curves" in index.text


def test_a_payload_posted_under_an_old_name_is_stored_under_the_new_one(tmp_path: Path) -> None:
    client = TestClient(create_app(tmp_path / "data"), base_url="http://127.0.0.1")
    answer = client.post("/api/plot", json=old_payload("training_curves")).json()
    assert answer["success"] is True and answer["plot_type"] == "training_curves"
    record = json.loads((tmp_path / "data" / "plots" / f"{answer['plot_id']}.json").read_text())
    assert record["payload"] == sample_payload("training_curves")
    batch = {"plots": [old_payload("activation_pattern"), old_payload("feature_correlation")]}
    results = client.post("/api/batch-plot", json=batch).json()["results"]
    assert [r["plot_type"] for r in results] == ["activation_pattern", "feature_correlation"]
