"""``gometal serve`` over gRPC with Triton's own client: ``tritonclient.grpc`` round trips
equal offline ``model.predict``, metadata and readiness, and bad requests (sent with the
stubs tritonclient compiled from the protocol's proto files) answered with the protocol's
status codes while the server keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving_helpers import ServerProcess, offline, running_server, write_repository

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"), ("mlp", "cnn", "broken"))


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from running_server(repository, tmp_path_factory.mktemp("logs"))


@pytest.fixture
def client(server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.grpc_url)


@pytest.fixture
def stub(server: ServerProcess):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _infer(client: triton.InferenceServerClient, model: str, x: np.ndarray, version: str = ""):
    tensor = triton.InferInput("input", list(x.shape), "FP32").set_data_from_numpy(x)
    output = client.get_model_metadata(model, version).outputs[0].name
    return client.infer(model, [tensor], model_version=version).as_numpy(output)


def test_health_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "gometal"
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("broken")
    assert not client.is_model_ready("no_such_model")
    metadata = client.get_model_metadata("mlp")
    assert list(metadata.versions) == ["1", "2"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input", "FP32", [-1, 8])
    ]
    assert list(client.get_model_metadata("cnn").inputs[0].shape) == [-1, 3, 16, 16]


def test_mlp_and_cnn_round_trips_equal_offline_predict(
    client: triton.InferenceServerClient, repository: Path
) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(
        _infer(client, "mlp", x), offline(repository, "mlp", 2, x), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        _infer(client, "mlp", x, "1"), offline(repository, "mlp", 1, x), rtol=RTOL, atol=ATOL
    )
    images = rng.random((3, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(
        _infer(client, "cnn", images), offline(repository, "cnn", 1, images), rtol=RTOL, atol=ATOL
    )


def test_typed_contents_are_read_like_raw_bytes(stub, repository: Path) -> None:
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="mlp", model_version="1", id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[2, 8])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    answer = stub.ModelInfer(request)
    assert answer.id == "typed" and answer.model_version == "1"
    got = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, offline(repository, "mlp", 1, x), rtol=RTOL, atol=ATOL)


def _request(model: str = "mlp", version: str = "", datatype: str = "FP32", shape=(2, 8),
             raw: bytes | None = None) -> service_pb2.ModelInferRequest:  # fmt: skip
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="input", datatype=datatype, shape=list(shape))
    request.raw_input_contents.append(raw if raw is not None else bytes(4 * int(np.prod(shape))))
    return request


BAD_REQUESTS = [
    ("unknown model", _request(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model"),
    ("unknown version", _request(version="9"), grpc.StatusCode.NOT_FOUND, "no version"),
    ("model not loaded", _request(model="broken"), grpc.StatusCode.UNAVAILABLE, "not ready"),
    ("wrong shape", _request(shape=(2, 7)), grpc.StatusCode.INVALID_ARGUMENT, "shape [-1, 8]"),
    ("wrong datatype", _request(datatype="FP64", raw=bytes(128)),
     grpc.StatusCode.INVALID_ARGUMENT, "datatype FP32"),
    ("wrong byte count", _request(raw=bytes(60)), grpc.StatusCode.INVALID_ARGUMENT,
     "needs 64 bytes"),
    ("too many rows", _request(shape=(65, 8)), grpc.StatusCode.INVALID_ARGUMENT,
     "max_batch_size"),
    ("NaN input", _request(raw=np.full(16, np.nan, np.float32).tobytes()),
     grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_message", "code", "words"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_the_protocols_status_and_the_server_keeps_serving(
    stub, request_message, code: grpc.StatusCode, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request_message)
    assert raised.value.code() == code
    assert words in raised.value.details()
    assert stub.ModelInfer(_request()).raw_output_contents


def test_errors_reach_tritonclient_as_its_exception(client: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 8), np.float32)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", [triton.InferInput("input", [1, 8], "FP32").set_data_from_numpy(x)])


def test_each_grpc_call_writes_one_json_log_line(
    server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    x = np.zeros((2, 8), np.float32)
    tensor = triton.InferInput("input", [2, 8], "FP32").set_data_from_numpy(x)
    client.infer("mlp", [tensor], request_id="grpc-logged-1")
    deadline = time.monotonic() + 10  # the line is written once the answer is sent
    logged: list[dict] = []
    while not logged and time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
        logged = [entry for entry in lines if entry.get("id") == "grpc-logged-1"]
        time.sleep(0.05)
    (line,) = logged
    assert line["method"] == "gRPC" and line["path"] == "ModelInfer"
    assert line["model"] == "mlp" and line["status"] == 200
