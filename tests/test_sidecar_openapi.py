"""``/openapi.json`` describes the sidecar's real endpoints, and schemathesis finds no
answer outside it: no 5xx, every status, content type and body as documented.

Schemathesis generates requests (valid payloads from the payload schema, and invalid ones)
from the document and sends them to a real ``gometal sidecar`` process. The examples per
operation are few and each has a deadline, so the run stays well under a minute."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from gometal.viz.server import ERROR_CODES, create_app
from gometal.viz.server_openapi import openapi_document
from sidecar_helpers import get_json, running_sidecar, sample_payload

LOCAL = "http://127.0.0.1"
EXAMPLES_PER_OPERATION = 12
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


def app_routes(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        if isinstance(route, APIRoute):
            out |= {(route.path, method.lower()) for method in route.methods - {"HEAD"}}
    return out


def test_the_document_lists_exactly_the_real_endpoints(tmp_path: Path) -> None:
    app = create_app(tmp_path / "data", max_body_bytes=12345)
    document = TestClient(app, base_url=LOCAL).get("/openapi.json").json()
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == app_routes(app)
    assert document["openapi"].startswith("3.1")
    assert "12345 bytes" in document["paths"]["/api/plot"]["post"]["description"]
    for code in ERROR_CODES:  # every error code is named in the error schema
        assert (
            code
            in document["components"]["schemas"]["Error"]["properties"]["error_code"]["description"]
        )


def test_the_payload_schema_in_the_document_is_the_one_the_server_validates_with(
    tmp_path: Path,
) -> None:
    import jsonschema

    from gometal.viz.payload import load_schema

    document = TestClient(create_app(tmp_path / "data"), base_url=LOCAL).get("/openapi.json")
    components = document.json()["components"]["schemas"]
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/PlotPayload", "components": {"schemas": components}}
    )
    reference = jsonschema.Draft202012Validator(load_schema())
    cases = [
        sample_payload("qq_plot"),
        {"plot_type": "pie"},
        {**sample_payload("qq_plot"), "series": 3},
    ]
    for case in cases:
        assert validator.is_valid(case) == reference.is_valid(case)


MAX_BODY_MB = 1
# The document as the sidecar below serves it (the test above checks the served one is
# this); loaded when the module is, so that each operation becomes one test.
schema = schemathesis.openapi.from_dict(openapi_document(ERROR_CODES, MAX_BODY_MB * 1024 * 1024))


@pytest.fixture(scope="module")
def sidecar_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("openapi") / "data"
    with running_sidecar(data_dir, "--max-body-mb", str(MAX_BODY_MB)) as url:
        served = get_json(url + "/openapi.json")[1]
        assert served == schema.raw_schema
        yield url


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=10_000,  # ms per example: drawing a generated plot is the slowest step
    derandomize=True,  # the same examples on every run: a failure is reproducible
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_conforms_to_the_document(case, sidecar_url: str) -> None:
    case.call_and_validate(base_url=sidecar_url, checks=CHECKS, timeout=30)
