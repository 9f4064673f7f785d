"""Inference requests answered by the HTTP connection itself (no ASGI task): which requests
it takes, and over a real server and real sockets that its answers are those of the ASGI
route (the same request sent with a chunked body, which the direct route leaves to ASGI)
and of offline ``model.predict``, mixed and pipelined with ASGI requests in order, with
the API key enforced, bodies in pieces, clients that leave mid-body, the request log line
and the metrics; and ``tritonclient`` JSON and binary requests through it."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from uvicorn import Config
from uvicorn.server import ServerState

from gometal.serving.app import ServerSettings, create_app
from gometal.serving.fast_infer import DirectInferRoute, DirectRequest
from gometal.serving.http_connection import serving_protocol
from serving_helpers import (
    MemoryTransport,
    ServerProcess,
    metric_samples,
    offline,
    read_http_answers,
    running_server,
    write_repository,
)

RTOL, ATOL = 1e-5, 1e-6
API_KEY = "direct-secret"


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/v2/models/mlp/infer", {"Content-Length": "2"}),
        ("POST", "/v2/models/mlp/generate", {"Content-Length": "2"}),
        ("POST", "/v2/models/mlp/infer", {}),  # chunked: no Content-Length
        ("POST", "/v2/models/mlp/infer", {"Content-Length": "x2"}),
        ("POST", "/v2/models/mlp/infer", {"Content-Length": str(256 * 1024 + 1)}),
        ("POST", "/v2/models/mlp/infer", {"Content-Length": "2", "Content-Encoding": "gzip"}),
        ("POST", "/v2/models/mlp/infer", {"Content-Length": "2", "Expect": "100-Continue"}),
        ("POST", "/v2/models/mlp/infer?x=1", {"Content-Length": "2"}),  # a query
        ("POST", "/v2/models/ml%70/infer", {"Content-Length": "2"}),  # an escape
        ("POST", "http://127.0.0.1/v2/models/mlp/infer", {"Content-Length": "2"}),
    ],
)
def test_requests_the_direct_route_cannot_answer_go_to_asgi(
    method: str, target: str, headers: dict[str, str]
) -> None:
    route = DirectInferRoute(None, None, None, 2**24, 30.0, None)  # type: ignore[arg-type]
    pairs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    assert route.request(None, method.encode(), target.encode(), pairs, True) is None
    taken = route.request(None, b"POST", b"/v2/models/mlp/infer", [(b"content-length", b"2")], True)
    assert taken is not None and (taken.name, taken.version) == ("mlp", None)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"), ("mlp",))


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    yield from running_server(repository, logs, "--api-key", API_KEY)


def _head(server: ServerProcess, path: str, method: str = "POST", key: str | None = API_KEY) -> str:
    auth = f"Authorization: Bearer {key}\r\n" if key is not None else ""
    return f"{method} {path} HTTP/1.1\r\nHost: {server.url}\r\n{auth}"


def _direct(server: ServerProcess, path: str, body: bytes, key: str | None = API_KEY) -> bytes:
    head = _head(server, path, key=key)
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _chunked(server: ServerProcess, path: str, body: bytes, key: str | None = API_KEY) -> bytes:
    head = _head(server, path, key=key)
    return (
        (f"{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n").encode()
        + body
        + (b"\r\n0\r\n\r\n")
    )


def _exchange(server: ServerProcess, requests: list[bytes]) -> list[tuple[int, dict, bytes]]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"".join(requests))  # one packet: HTTP/1.1 pipelining
        return read_http_answers(sock, len(requests))


def _infer_body(x: np.ndarray, request_id: str, datatype: str = "FP32") -> bytes:
    tensor = {"name": "input", "datatype": datatype, "shape": list(x.shape),
              "data": x.ravel().tolist()}  # fmt: skip
    return json.dumps({"id": request_id, "inputs": [tensor]}).encode()


def _tensor_body(datatype: str, shape: list[int], data: list, **extra: object) -> bytes:
    tensor = {"name": "input", "datatype": datatype, "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


BAD_BODIES = [
    b"{not json",
    _tensor_body("FP32", [1, 7], [0.0] * 7),  # wrong shape
    _tensor_body("INT8", [1, 8], [0] * 8),  # wrong datatype
    _tensor_body("FP32", [1, 8], [0.0] * 5),  # wrong element count
    _tensor_body("FP32", [1, 8], [0.0] * 8, outputs=[{"name": "nope"}]),  # unknown output
]


def test_answers_equal_the_asgi_routes_and_offline_predict(
    server: ServerProcess, repository: Path
) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    good = _infer_body(x, "good")
    cases = [("/v2/models/mlp/infer", good), ("/v2/models/mlp/versions/1/infer", good),
             ("/v2/models/nope/infer", good), ("/v2/models/mlp/versions/9/infer", good)]  # fmt: skip
    cases += [("/v2/models/mlp/infer", body) for body in BAD_BODIES]
    direct = _exchange(server, [_direct(server, path, body) for path, body in cases])
    through_asgi = _exchange(server, [_chunked(server, path, body) for path, body in cases])
    for (path, _), mine, reference in zip(cases, direct, through_asgi):
        assert mine[0] == reference[0], (path, mine, reference)
        assert json.loads(mine[2]) == json.loads(reference[2]), path
        assert mine[1]["content-type"] == reference[1]["content-type"]
    assert [status for status, _, _ in direct] == [200, 200, 404, 404, 400, 400, 400, 400, 400]
    for (_, _, body), version in zip(direct[:2], (2, 1)):  # the latest version is 2
        expected = offline(repository, "mlp", version, x)
        answer = json.loads(body)
        assert answer["id"] == "good" and answer["model_name"] == "mlp"
        got = np.array(answer["outputs"][0]["data"], np.float32).reshape(
            answer["outputs"][0]["shape"]
        )
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert all("error" in json.loads(body) for _, _, body in direct[2:])


def test_pipelined_direct_and_asgi_requests_are_answered_in_order(
    server: ServerProcess, repository: Path
) -> None:
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((1, 8)).astype(np.float32) for _ in range(4)]
    big = rng.standard_normal((64, 8)).astype(np.float32)
    big_body = _infer_body(big, "big") + b" " * (300 * 1024)  # over the direct route's size
    requests = [
        _direct(server, "/v2/models/mlp/infer", _infer_body(xs[0], "0")),
        f"{_head(server, '/v2/health/ready', 'GET')}\r\n".encode(),
        _direct(server, "/v2/models/mlp/infer", _infer_body(xs[1], "1")),
        _direct(server, "/v2/models/mlp/infer", big_body),
        _direct(server, "/v2/models/mlp/infer", BAD_BODIES[0]),
        _direct(server, "/v2/models/mlp/infer", _infer_body(xs[2], "2")),
        _direct(server, "/v2/models/mlp/infer", _infer_body(xs[3], "3"), key="wrong"),
        _chunked(server, "/v2/models/mlp/infer", _infer_body(xs[3], "3")),
    ]
    answers = _exchange(server, requests)
    assert [status for status, _, _ in answers] == [200, 200, 200, 200, 400, 200, 401, 200]
    assert answers[6][1]["www-authenticate"] == "bearer"  # header lines read lowercased
    ids = [json.loads(answers[i][2])["id"] for i in (0, 2, 3, 5, 7)]
    assert ids == ["0", "1", "big", "2", "3"]
    for index, x in zip((0, 2, 5, 7), xs):
        output = json.loads(answers[index][2])["outputs"][0]
        got = np.array(output["data"], np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, offline(repository, "mlp", 2, x), rtol=RTOL, atol=ATOL)


def test_a_body_in_pieces_is_answered_and_a_client_leaving_mid_body_is_logged(
    server: ServerProcess, repository: Path
) -> None:
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    request = _direct(server, "/v2/models/mlp/versions/1/infer", _infer_body(x, "pieces"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        for start in range(0, len(request), 40):
            sock.sendall(request[start : start + 40])
            time.sleep(0.01)
        [(status, _, body)] = read_http_answers(sock, 1)
    assert status == 200, body
    output = json.loads(body)["outputs"][0]
    got = np.array(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, offline(repository, "mlp", 1, x), rtol=RTOL, atol=ATOL)

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request[: len(request) - 10])
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while '"status": 499' not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)  # the request log is written in bulk
    lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    gone = [line for line in lines if line["status"] == 499]
    assert gone and gone[-1]["path"] == "/v2/models/mlp/versions/1/infer"
    answered = [line for line in lines if line.get("id") == "pieces"]
    assert answered and answered[0]["status"] == 200 and answered[0]["rows"] == 2
    assert answered[0]["model"] == "mlp" and answered[0]["version"] == 1


@pytest.fixture(scope="module")
def open_server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    # No API key: tritonclient's binary requests cannot carry headers of the caller's.
    yield from running_server(repository, tmp_path_factory.mktemp("open-logs"))


def test_tritonclient_json_and_binary_requests_are_answered_and_counted(
    open_server: ServerProcess, repository: Path
) -> None:
    server, headers = open_server, None

    def counted() -> float:
        samples = metric_samples(server.base, "gometal_inference_requests", headers)
        return sum(s.value for s in samples if s.name.endswith("_total")
                   and s.labels.get("model") == "mlp" and s.labels.get("status") == "200")  # fmt: skip

    before = counted()
    x = np.random.default_rng(9).standard_normal((5, 8)).astype(np.float32)
    expected = offline(repository, "mlp", 2, x)  # the latest version
    client = triton_http.InferenceServerClient(server.url)
    try:
        name = client.get_model_metadata("mlp", headers=headers)["outputs"][0]["name"]
        for binary in (False, True):
            tensor = triton_http.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            wanted = [triton_http.InferRequestedOutput(name, binary_data=binary)]
            result = client.infer("mlp", [tensor], outputs=wanted, headers=headers)
            np.testing.assert_allclose(result.as_numpy(name), expected, rtol=RTOL, atol=ATOL)
    finally:
        client.close()
    assert counted() - before == 2


def _infer_request(x: np.ndarray, request_id: str) -> bytes:
    body = _infer_body(x, request_id)
    return (b"POST /v2/models/mlp/versions/1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body  # fmt: skip


def _memory_connection(app) -> tuple[object, ServerState, MemoryTransport]:
    """The server's HTTP protocol on an in-memory transport: (connection, state, transport)."""
    config = Config(app, http=serving_protocol(10.0, app.state.direct_infer), lifespan="off")
    config.load()
    state = ServerState()
    connection = config.http_protocol_class(config=config, server_state=state, app_state={})
    transport = MemoryTransport()
    connection.connection_made(transport)
    return connection, state, transport


def test_the_connection_answers_inference_without_an_asgi_task(repository: Path) -> None:
    app = create_app(repository, ServerSettings(max_batch_size=8))
    x = np.arange(8, dtype=np.float32).reshape(1, 8) / 8
    request = _infer_request(x, "direct")
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    async def exchange() -> tuple[int, int, bytes]:
        connection, state, transport = _memory_connection(app)
        connection.data_received(request)
        tasks_for_inference = len(state.tasks)
        while b'"direct"' not in transport.written:
            await asyncio.sleep(0.01)
        connection.data_received(live)
        tasks_for_health = len(state.tasks)
        await asyncio.gather(*state.tasks)
        connection.connection_lost(None)
        return tasks_for_inference, tasks_for_health, transport.written

    try:
        tasks_for_inference, tasks_for_health, written = asyncio.run(
            asyncio.wait_for(exchange(), 60)
        )
    finally:
        app.state.models.close()
    assert (tasks_for_inference, tasks_for_health) == (0, 1)
    head, _, rest = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    output = json.loads(rest[:length])["outputs"][0]
    got = np.array(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, offline(repository, "mlp", 1, x), rtol=RTOL, atol=ATOL)
    assert rest[length:].startswith(b"HTTP/1.1 200 OK\r\n")  # the health answer, after it


def test_an_answered_request_is_freed_without_the_garbage_collector(repository: Path) -> None:
    # A request in a reference cycle would keep its body until the collector ran.
    app = create_app(repository, ServerSettings(max_batch_size=8))
    request = _infer_request(np.ones((1, 8), np.float32), "freed")

    async def exchange() -> object:
        connection, _, transport = _memory_connection(app)
        for answers in (1, 2):  # the second request takes the first one's place
            connection.data_received(request)
            while transport.written.count(b'"freed"') < answers:
                await asyncio.sleep(0.01)
        assert type(connection.cycle) is DirectRequest
        return connection  # held: its current request stays reachable

    gc.collect()
    gc.disable()
    flags = gc.get_debug()
    try:
        connection = asyncio.run(asyncio.wait_for(exchange(), 60))
        gc.set_debug(gc.DEBUG_SAVEALL)  # what is unreachable stays in gc.garbage
        gc.collect()
        unreachable = [type(item).__name__ for item in gc.garbage]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        gc.enable()
        app.state.models.close()
    assert type(connection.cycle) is DirectRequest
    assert "DirectRequest" not in unreachable  # the first one went when it was replaced
