"""``gometal serve`` under load: concurrent clients are all answered correctly and their
requests merged into batches; past the bounded queue the server answers 503 with
``Retry-After`` (gRPC: UNAVAILABLE with a ``retry-after`` trailer) and keeps serving; SIGTERM under load answers every request the server
took, exits 0, and a restart on the same port serves again."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc

from serving_helpers import ServerProcess, batch_histogram, offline, write_repository

CLIENTS = 32
REQUESTS_PER_CLIENT = 100  # the load: 32 clients x 100 requests
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"), ("mlp", "slow"))


def _body(x: np.ndarray) -> dict:
    shape = list(x.shape)
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": shape, "data": x.ravel().tolist()}
        ]
    }


def _answer(response: httpx.Response, rows: int, width: int) -> np.ndarray:
    (output,) = response.json()["outputs"]
    return np.asarray(output["data"], np.float32).reshape(rows, width)


def test_concurrent_clients_are_answered_correctly_and_batched(
    repository: Path, tmp_path: Path
) -> None:
    total = CLIENTS * REQUESTS_PER_CLIENT
    inputs = np.random.default_rng(0).standard_normal((total, 1, 8)).astype(np.float32)
    expected = offline(repository, "mlp", 2, inputs[:, 0])
    # A delay long enough for the clients' next requests to come while one waits, also for
    # a request alone in the queue: a server faster than its clients would otherwise run
    # every request alone (the default, start_when_idle, runs it at once).
    waiting = write_repository(tmp_path / "waiting", ("mlp",))
    (waiting / "mlp" / "config.json").write_text(json.dumps({"start_when_idle": False}))
    process = ServerProcess(
        waiting, tmp_path, "--max-queue", str(total), "--max-queue-delay-ms", "50"
    )
    try:
        process.wait_live()
        client = triton.InferenceServerClient(process.url, concurrency=CLIENTS)
        pending = []
        for index in range(total):
            tensor = triton.InferInput("input", [1, 8], "FP32")
            tensor.set_data_from_numpy(inputs[index])
            pending.append(client.async_infer("mlp", [tensor]))
        answers = np.concatenate([p.get_result().as_numpy("dense_0") for p in pending])
        np.testing.assert_allclose(answers, expected, rtol=RTOL, atol=ATOL)
        batches, rows = batch_histogram(process.base, "mlp")
        assert rows == total
        assert batches < total / 2, f"{batches} batches for {total} requests: few merged"
    finally:
        assert process.stop() == 0, process.stderr()


def test_overload_past_the_queue_gets_503_with_retry_after(
    repository: Path, tmp_path: Path
) -> None:
    # The slow model's config.json caps its batches at 4 rows; a queue of 2 overflows.
    process = ServerProcess(repository, tmp_path, "--max-queue", "2", "--max-queue-delay-ms", "0")
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((64, 1, 1024)).astype(np.float32)
    expected = offline(repository, "slow", 1, inputs[:, 0])
    try:
        process.wait_live()
        url = f"{process.base}/v2/models/slow/infer"
        limits = httpx.Limits(max_connections=64)
        with httpx.Client(limits=limits, timeout=60) as http, ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda x: http.post(url, json=_body(x)), inputs))
        statuses = [answer.status_code for answer in answers]
        assert set(statuses) <= {200, 503}, statuses
        refused = [answer for answer in answers if answer.status_code == 503]
        assert refused, "64 clients at once never filled a queue of 2"
        assert all(answer.headers["Retry-After"] == "1" for answer in refused)
        # Refused either as the model's queue overflows or, earlier, while more request
        # bodies than the queue holds are still arriving: both bound memory the same way.
        for answer in refused:
            error = answer.json()["error"]
            assert "overloaded" in error or "request bodies are being received" in error, error
        for index, answer in enumerate(answers):
            if answer.status_code == 200:
                got = _answer(answer, 1, 2)
                np.testing.assert_allclose(got, expected[index : index + 1], rtol=RTOL, atol=ATOL)
        after = httpx.post(url, json=_body(inputs[0]), timeout=60)
        assert after.status_code == 200
        _check_grpc_overload(process, inputs, expected)
    finally:
        assert process.stop() == 0, process.stderr()


def _check_grpc_overload(process: ServerProcess, inputs: np.ndarray, expected: np.ndarray) -> None:
    """The same overload over gRPC: UNAVAILABLE with a retry-after trailer."""

    def call(x: np.ndarray):
        request = service_pb2.ModelInferRequest(model_name="slow")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 1024])
        request.raw_input_contents.append(x.tobytes())
        try:
            return stub.ModelInfer(request)
        except grpc.RpcError as err:
            return err

    with grpc.insecure_channel(process.grpc_url) as channel, ThreadPoolExecutor(64) as pool:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(pool.map(call, inputs))
    refused = [a for a in answers if isinstance(a, grpc.RpcError)]
    assert refused, "64 gRPC clients at once never filled a queue of 2"
    for err in refused:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        assert ("retry-after", "1") in tuple(err.trailing_metadata())
    for index, answer in enumerate(answers):
        if not isinstance(answer, grpc.RpcError):
            got = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(1, 2)
            np.testing.assert_allclose(got, expected[index : index + 1], rtol=RTOL, atol=ATOL)


class _LoadClient(threading.Thread):
    """Sends requests one after another on fresh connections until the server stops."""

    def __init__(self, url: str, x: np.ndarray, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.x, self.stop = url, x, stop
        self.answers: list[tuple[float, httpx.Response]] = []
        self.failures: list[BaseException] = []

    def run(self) -> None:
        # A new connection each time: a request is either taken whole or refused.
        close = {"Connection": "close"}
        with httpx.Client(timeout=60, headers=close) as http:
            while not self.stop.is_set() and len(self.failures) <= 20:
                try:
                    answer = http.post(self.url, json=_body(self.x))
                    self.answers.append((time.monotonic(), answer))
                except httpx.TransportError as err:
                    self.failures.append(err)
                    time.sleep(0.01)


class _GrpcLoadClient(threading.Thread):
    """Sends gRPC calls one after another until the server stops."""

    def __init__(self, address: str, x: np.ndarray, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.address, self.x, self.stop = address, x, stop
        self.answers: list[tuple[float, object]] = []
        self.failures: list[grpc.RpcError] = []

    def run(self) -> None:
        request = service_pb2.ModelInferRequest(model_name="slow")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 1024])
        request.raw_input_contents.append(self.x.tobytes())
        with grpc.insecure_channel(self.address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not self.stop.is_set() and len(self.failures) <= 20:
                try:
                    self.answers.append((time.monotonic(), stub.ModelInfer(request, timeout=60)))
                except grpc.RpcError as err:
                    self.failures.append(err)
                    time.sleep(0.01)


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(
    repository: Path, tmp_path: Path
) -> None:
    process = ServerProcess(repository, tmp_path)
    rng = np.random.default_rng(2)
    inputs = rng.standard_normal((8, 1, 1024)).astype(np.float32)
    expected = offline(repository, "slow", 1, inputs[:, 0])
    process.wait_live()
    stop = threading.Event()
    clients = [_LoadClient(f"{process.base}/v2/models/slow/infer", x, stop) for x in inputs]
    over_grpc = [_GrpcLoadClient(process.grpc_url, x, stop) for x in inputs[:4]]
    for client in [*clients, *over_grpc]:
        client.start()
    time.sleep(1.5)
    signalled = time.monotonic()
    status = process.stop(signal.SIGTERM)
    stop.set()
    for client in [*clients, *over_grpc]:
        client.join(60)
    assert status == 0, process.stderr()
    lines = [json.loads(line) for line in process.stderr().splitlines() if line.startswith("{")]
    grpc_taken = [line for line in lines if line["path"] == "ModelInfer"]
    assert {line["status"] for line in grpc_taken} <= {200, 503}  # 503: refused while draining
    assert sum(line["status"] == 200 for line in grpc_taken) == sum(
        len(c.answers) for c in over_grpc
    )
    for client, want in zip(over_grpc, expected):
        # Calls the server never took: refused (UNAVAILABLE) or dropped by gRPC as it stopped
        # (CANCELLED); every call that reached the service is logged and answered (above).
        codes = [(err.code(), err.details()) for err in client.failures]
        not_taken = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert all(code in not_taken for code, _ in codes), codes
        for _, answer in client.answers:
            got = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(1, 2)
            np.testing.assert_allclose(got, want[None], rtol=RTOL, atol=ATOL)
    answered = 0
    for client, want in zip(clients, expected):
        for _, answer in client.answers:
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(_answer(answer, 1, 2), want[None], rtol=RTOL, atol=ATOL)
        answered += len(client.answers)
        # Failures are connections the server never took: refused once it stopped listening,
        # or reset by the system while still waiting in the listen backlog (never answered).
        assert all(isinstance(err, httpx.TransportError) for err in client.failures)
    logged = [line for line in process.stderr().splitlines() if '"path": "/v2/models/slow' in line]
    assert len(logged) == answered, "a request the server took was not answered"
    answered_late = [t > signalled for c in [*clients, *over_grpc] for t, _ in c.answers]
    assert any(answered_late), "nothing was in flight when the signal came"

    restarted = ServerProcess(repository, tmp_path, port=process.port)
    try:
        restarted.wait_live()
        answer = httpx.post(f"{restarted.base}/v2/models/slow/infer", json=_body(inputs[0]))
        assert answer.status_code == 200
        np.testing.assert_allclose(_answer(answer, 1, 2), expected[:1], rtol=RTOL, atol=ATOL)
    finally:
        assert restarted.stop() == 0, restarted.stderr()
