"""benchmarks/bench_serving.py: its smallest configuration end to end (a real ``gometal serve``
and the onnxruntime + FastAPI baseline, each hit by the tritonclient load generator), and the
baseline's protocol answers against onnxruntime itself.

No timing is asserted: these check that every answer is right and that the report is whole.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

import gometal as gm

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _serving_fastapi import create_app
from bench_serving import cnn_model, median_run


def test_the_smallest_configuration_answers_right_and_prints_the_table_and_verdicts():
    command = [sys.executable, str(BENCHMARKS / "bench_serving.py"), "--clients", "2",
               "--window-s", "1", "--warmup-s", "0.2", "--offline-s", "0.2", "--images", "4",
               "--variant", '{"start_when_idle": true}']  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "answers: all equal offline predict; failed requests: 0" in out
    assert "server" in out and "p50 ms" in out and "p99 ms" in out
    rows = [line[len("  gometal serve") :].split() for line in out.splitlines()
            if line.startswith("  gometal serve ")]  # fmt: skip
    rows += [line[len("  onnxruntime + FastAPI") :].split() for line in out.splitlines()
             if line.startswith("  onnxruntime + FastAPI ")]  # fmt: skip
    rows += [line[len("  gometal[start_when_idle=True]") :].split() for line in out.splitlines()
             if line.startswith("  gometal[start_when_idle=True] ")]  # fmt: skip
    assert len(rows) == 3
    for clients, requests_per_s, *_ in rows:
        assert clients == "2" and float(requests_per_s) > 0
    assert "gometal serve options: --max-batch-size 64 --max-queue 1024 (HTTP)" in out
    assert "Targets at 2 clients:" in out
    assert "Targets at 2 clients (gometal[start_when_idle=True]):" in out
    for target in ("of offline predict at batch 64", "p99 latency", "onnxruntime + FastAPI"):
        assert any(target in line and ("met" in line or "MISSED" in line) for line in
                   out.splitlines() if line.startswith("  ") and "target" in line)  # fmt: skip


def test_rounds_merge_into_medians_totals_and_the_throughput_range():
    runs = [
        {"throughput": t, "p99_ms": p, "errors": e, "wrong": 0, "answered": 10,
         "first_error": f, "clients": 8}
        for t, p, e, f in ((300.0, 9.0, 0, None), (100.0, 30.0, 2, "refused"), (200.0, 12.0, 1, "late"))
    ]  # fmt: skip
    merged = median_run(runs)
    assert merged["throughput"] == 200.0 and merged["p99_ms"] == 12.0
    assert merged["errors"] == 3 and merged["answered"] == 30 and merged["clients"] == 8
    assert merged["first_error"] == "refused" and merged["throughput_range"] == (100.0, 300.0)
    assert median_run(runs[:1]) is runs[0]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The baseline app on workload C's CNN, exported by gometal, and onnxruntime's session."""
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    cnn_model(gm).export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return TestClient(create_app(str(path), "cnn", 1)), session


def _reference(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("binary", [True, False])
def test_the_baseline_answers_tritonclient_requests_as_onnxruntime_does(baseline, binary):
    client, session = baseline
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64), dtype=np.float32)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    # No requested outputs: tritonclient asks for every output in binary.
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor])
    headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
    answer = client.post("/v2/models/cnn/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    length = answer.headers.get("Inference-Header-Content-Length")
    result = triton.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(length) if length else None
    )
    name = result.get_response()["outputs"][0]["name"]
    np.testing.assert_allclose(result.as_numpy(name), _reference(session, x), rtol=1e-6)


def test_the_baseline_answers_json_outputs_when_asked_for_them(baseline):
    client, session = baseline
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64), dtype=np.float32)
    request = {"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32",
                           "data": x.ravel().tolist()}]}  # fmt: skip
    answer = client.post("/v2/models/cnn/infer", json=request)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert output["shape"] == [1, 2] and output["datatype"] == "FP32"
    np.testing.assert_allclose(
        np.reshape(output["data"], (1, 2)), _reference(session, x), rtol=1e-6
    )


def test_the_baseline_refuses_another_model_name(baseline):
    client, _ = baseline
    answer = client.post("/v2/models/other/infer", json={"inputs": []})
    assert answer.status_code == 404 and "other" in answer.text
