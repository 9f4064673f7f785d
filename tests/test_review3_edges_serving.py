"""Edge cases of requests the HTTP connection answers itself, now freed when the connection
moves on: requests refused with a 400 and requests whose client left mid-body are freed
without the garbage collector too; on one keep-alive connection a padded long body, then a
shorter one, a bad one, and one cut at the head's end with the next request's head in the
same packet as its body's end are answered as offline predict; clients leaving while their
rows wait for the slow model's batch leave the others' answers and tritonclient's intact."""

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

from gometal.serving.app import ServerSettings, create_app
from serving_helpers import offline, read_http_answers, running_server, write_repository
from test_serving_direct_infer import _infer_body, _memory_connection
from threaded import run_on_threads

RTOL, ATOL = 1e-5, 1e-6


def _post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"), ("mlp", "slow"))


def _unreachable_requests(repository: Path, feed) -> list[str]:
    """Runs feed(connection, transport) on an in-memory connection, drops the connection and
    returns the type names the collector finds unreachable (a cycle keeps them)."""
    app = create_app(repository, ServerSettings(max_batch_size=8))

    async def exchange() -> None:
        connection, _, transport = _memory_connection(app)
        await feed(connection, transport)

    gc.collect()
    gc.disable()
    flags = gc.get_debug()
    try:
        asyncio.run(asyncio.wait_for(exchange(), 60))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return [type(item).__name__ for item in gc.garbage]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        gc.enable()
        app.state.models.close()


def test_requests_left_mid_body_or_refused_are_freed_without_the_collector(
    repository: Path,
) -> None:
    good = _post("/v2/models/mlp/infer", _infer_body(np.ones((2, 8), np.float32), "ok"))
    bad = _post("/v2/models/mlp/infer", b"{not json")

    async def feed(connection, transport) -> None:
        connection.data_received(bad)
        while b"HTTP/1.1 400" not in transport.written:
            await asyncio.sleep(0.01)
        connection.data_received(good)
        while b'"ok"' not in transport.written:
            await asyncio.sleep(0.01)
        connection.data_received(good[: len(good) - 7])  # the client leaves mid-body
        await asyncio.sleep(0.05)
        connection.connection_lost(None)
        await asyncio.sleep(0.05)

    assert "DirectRequest" not in _unreachable_requests(repository, feed)


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from running_server(repository, tmp_path_factory.mktemp("logs"))


def _answer(answer, repository, name, x, version=2):
    status, _, body = answer
    assert status == 200, body
    output = json.loads(body)["outputs"][0]
    got = np.array(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, offline(repository, name, version, x), rtol=RTOL, atol=ATOL)
    return json.loads(body)


def test_keep_alive_bodies_of_every_size_in_turn(server, repository: Path) -> None:
    """On one connection, one request at a time: a padded long body, then a shorter one (a
    stale body would turn it into bad JSON), a bad one, one cut at the head's end with the next
    request's head in the same packet as its body's end."""
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((r, 8)).astype(np.float32) for r in (5, 1, 3, 2, 4)]
    long_body = _infer_body(xs[0], "long") + b" " * 4000
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_post("/v2/models/mlp/infer", long_body))
        [first] = read_http_answers(sock, 1)
        assert _answer(first, repository, "mlp", xs[0])["id"] == "long"
        sock.sendall(_post("/v2/models/mlp/infer", _infer_body(xs[1], "s")))
        [second] = read_http_answers(sock, 1)
        assert _answer(second, repository, "mlp", xs[1])["id"] == "s"
        sock.sendall(_post("/v2/models/mlp/infer", b"{}"))
        [third] = read_http_answers(sock, 1)
        assert third[0] == 400
        a = _post("/v2/models/mlp/versions/1/infer", _infer_body(xs[2], "a"))
        b = _post("/v2/models/mlp/infer", _infer_body(xs[3], "b"))
        head_end = a.index(b"\r\n\r\n") + 4
        sock.sendall(a[:head_end])
        time.sleep(0.05)
        sock.sendall(a[head_end:] + b[:30])
        time.sleep(0.05)
        sock.sendall(b[30:])
        answers = read_http_answers(sock, 2)
        assert _answer(answers[0], repository, "mlp", xs[2], version=1)["id"] == "a"
        assert _answer(answers[1], repository, "mlp", xs[3])["id"] == "b"


def test_a_client_leaving_while_its_rows_wait_for_a_batch(server, repository: Path) -> None:
    """Eight clients send to the slow model at once; two close right after their body is sent
    (their rows queued or in a batch). The others get offline predict's answers, and the
    server answers a tritonclient request after."""
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1 + k % 3, 1024)).astype(np.float32) for k in range(8)]
    answers: dict[int, tuple] = {}

    def client(k: int) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(_post("/v2/models/slow/infer", _infer_body(xs[k], str(k))))
            if k in (2, 5):
                return  # gone before the answer
            answers[k] = read_http_answers(sock, 1)[0]

    run_on_threads(client, 8)
    for k, answer in answers.items():
        body = _answer(answer, repository, "slow", xs[k], version=1)
        assert body["id"] == str(k)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    triton = triton_http.InferenceServerClient(server.url)
    try:
        for rows in (3, 1):
            tensor = triton_http.InferInput("input", [rows, 8], "FP32")
            tensor.set_data_from_numpy(x[:rows], binary_data=True)
            result = triton.infer("mlp", [tensor])
            name = result.get_response()["outputs"][0]["name"]
            np.testing.assert_allclose(
                result.as_numpy(name), offline(repository, "mlp", 2, x[:rows]), rtol=RTOL, atol=ATOL
            )
    finally:
        triton.close()
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
