"""``gometal serve`` over HTTP with real clients: tritonclient round trips equal offline
``model.predict``, the protocol's metadata, health and readiness routes, and bad input
answered with a 4xx and a message while the server keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from gometal.apps.cli import main as cli_main
from serving_helpers import ServerProcess, metric_samples, offline, write_repository

MAX_BODY_MB = 1
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    process = ServerProcess(
        repository, tmp_path_factory.mktemp("logs"), "--max-body-mb", str(MAX_BODY_MB)
    )
    process.wait_live()
    yield process
    assert process.stop() == 0, process.stderr()


@pytest.fixture
def client(server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url)


def infer(
    client: triton.InferenceServerClient,
    model: str,
    x: np.ndarray,
    *,
    binary: bool = True,
    version: str = "",
    input_name: str = "input",
) -> np.ndarray:
    datatype = {"float32": "FP32", "float64": "FP64", "int32": "INT32"}[str(x.dtype)]
    tensor = triton.InferInput(input_name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    metadata = client.get_model_metadata(model, version)
    name = metadata["outputs"][0]["name"]
    output = triton.InferRequestedOutput(name, binary_data=binary)
    return client.infer(model, [tensor], model_version=version, outputs=[output]).as_numpy(name)


def good_body(rows: int = 2) -> dict:
    data = np.arange(rows * 8, dtype=np.float32).tolist()
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 8], "data": data}]}


def test_server_metadata_health_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()  # one model failed to load; the others serve
    metadata = client.get_server_metadata()
    assert metadata["name"] == "gometal"
    assert "binary_tensor_data" in metadata["extensions"]
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    assert client.is_model_ready("onnx_mlp")
    assert not client.is_model_ready("broken")
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("mlp", "7")


def test_model_metadata_lists_versions_shapes_and_datatypes(
    client: triton.InferenceServerClient,
) -> None:
    mlp = client.get_model_metadata("mlp")
    assert mlp["versions"] == ["1", "2"]
    assert mlp["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert mlp["outputs"][0]["shape"] == [-1, 3]
    assert client.get_model_metadata("mlp", "1")["versions"] == ["1"]
    cnn = client.get_model_metadata("cnn")
    assert cnn["inputs"][0]["shape"] == [-1, 3, 16, 16]
    assert cnn["outputs"][0]["shape"] == [-1, 5]


def test_repository_index_reports_the_model_that_failed_to_load(
    client: triton.InferenceServerClient,
) -> None:
    index = {(row["name"], row["version"]): row for row in client.get_model_repository_index()}
    assert index[("mlp", "2")]["state"] == "READY"
    assert index[("broken", "1")]["state"] == "UNAVAILABLE"
    assert "model.safetensors" in index[("broken", "1")]["reason"]
    with pytest.raises(InferenceServerException, match="not ready"):
        client.get_model_metadata("broken")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_mlp_round_trip_equals_offline_predict(
    client: triton.InferenceServerClient, repository: Path, binary: bool
) -> None:
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    latest = infer(client, "mlp", x, binary=binary)
    np.testing.assert_allclose(latest, offline(repository, "mlp", 2, x), rtol=RTOL, atol=ATOL)
    first = infer(client, "mlp", x, binary=binary, version="1")
    np.testing.assert_allclose(first, offline(repository, "mlp", 1, x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_cnn_round_trip_equals_offline_predict(
    client: triton.InferenceServerClient, repository: Path, binary: bool
) -> None:
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    answer = infer(client, "cnn", x, binary=binary)
    np.testing.assert_allclose(answer, offline(repository, "cnn", 1, x), rtol=RTOL, atol=ATOL)


def test_onnx_model_round_trip_equals_offline_predict(
    client: triton.InferenceServerClient, repository: Path
) -> None:
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    name = client.get_model_metadata("onnx_mlp")["inputs"][0]["name"]
    answer = infer(client, "onnx_mlp", x, input_name=name)
    np.testing.assert_allclose(answer, offline(repository, "onnx_mlp", 1, x), rtol=RTOL, atol=ATOL)


def test_nested_json_data_and_request_id_are_accepted(
    server: ServerProcess, repository: Path
) -> None:
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    body = {
        "id": "req-7",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 8], "data": x.tolist()}],
    }
    answer = httpx.post(f"{server.base}/v2/models/mlp/versions/1/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["id"] == "req-7"
    assert document["model_version"] == "1"
    (output,) = document["outputs"]
    assert output["shape"] == [2, 3] and output["datatype"] == "FP32"
    got = np.asarray(output["data"], np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, offline(repository, "mlp", 1, x), rtol=RTOL, atol=ATOL)


def _binary_body(header: dict, payload: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + payload, {"Inference-Header-Content-Length": str(len(text))}


def _binary_input(size: int, shape: list[int] | None = None) -> dict:
    tensor = {"name": "input", "datatype": "FP32", "shape": shape or [2, 8]}
    return {"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]}


def _bad_cases() -> list[tuple[str, str, dict, int, str]]:
    """(case, path, httpx arguments, expected status, words of the message)."""
    good = good_body()
    payload = np.zeros((2, 8), np.float32).tobytes()

    def body_with(**fields: object) -> dict:
        return {"json": {"inputs": [{**good["inputs"][0], **fields}]}}

    short_body, short_headers = _binary_body(_binary_input(60), payload)
    trailing_body, trailing_headers = _binary_body(_binary_input(64), payload + b"1234")
    _, long_header = _binary_body(_binary_input(64), payload)
    long_header = {"Inference-Header-Content-Length": "999999"}
    return [
        ("unknown model", "/v2/models/nope/infer", {"json": good}, 404, "unknown model"),
        ("model name out of the repository", "/v2/models/..%2F..%2Fmlp/infer", {"json": good},
         404, "unknown model"),
        ("unknown version", "/v2/models/mlp/versions/9/infer", {"json": good}, 404, "no version"),
        ("version not a number", "/v2/models/mlp/versions/x/infer", {"json": good}, 404,
         "no version"),
        ("model not loaded", "/v2/models/broken/infer", {"json": good}, 503, "not ready"),
        ("wrong shape", "/v2/models/mlp/infer",
         body_with(shape=[2, 7], data=[0.0] * 14), 400, "shape [-1, 8]"),
        ("wrong datatype", "/v2/models/mlp/infer", body_with(datatype="FP64"), 400,
         "datatype FP32"),
        ("unknown datatype", "/v2/models/mlp/infer", body_with(datatype="FP33"), 400, "FP33"),
        ("wrong element count", "/v2/models/mlp/infer", body_with(data=[0.0] * 15), 400,
         "needs 16 elements"),
        ("strings as numbers", "/v2/models/mlp/infer", body_with(data=["1"] * 16), 400, "numbers"),
        ("NaN input", "/v2/models/mlp/infer",
         {"content": json.dumps(body_with(data=[float("nan")] * 16)["json"]).encode()}, 400,
         "NaN"),
        ("unknown input", "/v2/models/mlp/infer", body_with(name="image"), 400, "unknown ['image']"),
        ("too many rows", "/v2/models/mlp/infer",
         body_with(shape=[65, 8], data=[0.0] * 520), 400, "max_batch_size"),
        ("unknown output", "/v2/models/mlp/infer",
         {"json": {**good, "outputs": [{"name": "logits"}]}}, 400, "unknown requested outputs"),
        ("binary size disagrees with shape", "/v2/models/mlp/infer",
         {"content": short_body, "headers": short_headers}, 400, "binary_data_size must be 64"),
        ("bytes after the binary inputs", "/v2/models/mlp/infer",
         {"content": trailing_body, "headers": trailing_headers}, 400, "add up to 64 bytes"),
        ("header length beyond the body", "/v2/models/mlp/infer",
         {"content": b"{}", "headers": long_header}, 400, "Inference-Header-Content-Length"),
        ("malformed JSON", "/v2/models/mlp/infer", {"content": b'{"inputs": [}'}, 400,
         "malformed JSON"),
        ("deeply nested JSON", "/v2/models/mlp/infer", {"content": b"[" * 100_000}, 400,
         "malformed JSON"),
        ("JSON not an object", "/v2/models/mlp/infer", {"json": [1, 2]}, 400, "JSON object"),
        ("no inputs", "/v2/models/mlp/infer", {"json": {"inputs": []}}, 400, "non-empty list"),
        ("oversized body", "/v2/models/mlp/infer",
         {"content": b" " * (MAX_BODY_MB * 1024 * 1024 + 1)}, 413, "at most"),
        ("oversized body without Content-Length", "/v2/models/mlp/infer",
         {"content": iter([b" " * 65536] * (MAX_BODY_MB * 16 + 1))}, 413, "at most"),
        ("compressed body", "/v2/models/mlp/infer",
         {"json": good, "headers": {"Content-Encoding": "gzip"}}, 415, "Content-Encoding"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "arguments", "status", "words"),
    [case[1:] for case in _bad_cases()],
    ids=[case[0] for case in _bad_cases()],
)
def test_bad_input_gets_a_4xx_with_a_message_and_the_server_keeps_serving(
    server: ServerProcess, path: str, arguments: dict, status: int, words: str
) -> None:
    answer = httpx.post(server.base + path, timeout=30, **arguments)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    after = httpx.post(f"{server.base}/v2/models/mlp/infer", json=good_body(), timeout=30)
    assert after.status_code == 200, after.text


def test_metrics_count_requests_by_model_and_status(server: ServerProcess) -> None:
    httpx.post(f"{server.base}/v2/models/mlp/infer", json=good_body(), timeout=30)
    httpx.post(f"{server.base}/v2/models/mlp/infer", json={"inputs": []}, timeout=30)
    samples = metric_samples(server.base, "gometal_inference_requests")
    by_status = {
        s.labels["status"]: s.value
        for s in samples
        if s.name.endswith("_total") and s.labels["model"] == "mlp"
    }
    assert by_status["200"] >= 1 and by_status["400"] >= 1
    assert metric_samples(server.base, "gometal_inference_queue_depth")


def test_each_request_writes_one_json_log_line(server: ServerProcess) -> None:
    answer = httpx.post(
        f"{server.base}/v2/models/mlp/infer", json={**good_body(3), "id": "logged-1"}, timeout=30
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 10  # the line is written once the answer is sent
    while True:
        lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
        logged = [entry for entry in lines if entry.get("id") == "logged-1"]
        if logged or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (line,) = logged
    assert line["model"] == "mlp" and line["status"] == 200 and line["rows"] == 3


def test_api_key_is_required_when_given(repository: Path, tmp_path: Path) -> None:
    process = ServerProcess(repository, tmp_path, "--api-key", "s3cret")
    try:
        process.wait_live()
        url = f"{process.base}/v2/models/mlp/infer"
        missing = httpx.post(url, json=good_body(), timeout=30)
        assert missing.status_code == 401 and "no API key" in missing.json()["error"]
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = httpx.post(url, json=good_body(), headers={"Authorization": "Bearer x"}, timeout=30)
        assert wrong.status_code == 401 and "wrong API key" in wrong.json()["error"]
        assert httpx.get(f"{process.base}/metrics", timeout=30).status_code == 401
        client = triton.InferenceServerClient(process.url)
        headers = {"Authorization": "Bearer s3cret"}
        assert client.is_model_ready("mlp", headers=headers)
        x = np.ones((1, 8), np.float32)
        tensor = triton.InferInput("input", [1, 8], "FP32").set_data_from_numpy(x)
        answer = client.infer("mlp", [tensor], headers=headers).as_numpy("dense_0")
        np.testing.assert_allclose(answer, offline(repository, "mlp", 2, x), rtol=RTOL, atol=ATOL)
        over_grpc = triton_grpc.InferenceServerClient(process.grpc_url)
        with pytest.raises(InferenceServerException, match="no API key"):
            over_grpc.is_server_live()
        assert over_grpc.is_model_ready("mlp", headers={"authorization": "Bearer s3cret"})
    finally:
        assert process.stop() == 0


def test_other_addresses_need_an_api_key(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["serve", str(repository), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_a_missing_repository_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
