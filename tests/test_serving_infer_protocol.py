"""The inference server's connections answering inference requests themselves, driven
through the HTTP protocol with in-memory transports: a body that comes with its headers
takes no upload slot and arms no deadline (it is answered while another body holds every
slot); a body still coming holds a slot, past the deadline gets a JSON 408 and gives the
slot back, and the connection serves its next request; a client leaving mid-body gives the
slot back; requests pipelined behind an ASGI one are answered in order; a graceful
shutdown answers the request being computed, then closes; an idle connection closes after
the keep-alive timeout, counted from its last answer; answers carry the server's default
headers (its date) of the moment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from uvicorn import Config
from uvicorn.server import ServerState

from gometal.serving.app import ServerSettings, create_app
from serving_helpers import MemoryTransport, offline, write_repository

RTOL, ATOL = 1e-5, 1e-6
BODY_TIMEOUT_S = 0.2


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"), ("mlp",))


@pytest.fixture
def app(repository: Path):
    # max_queue 1: one upload slot, which the tests hold and free.
    app = create_app(repository, ServerSettings(max_queue=1, body_timeout_s=BODY_TIMEOUT_S))
    yield app
    app.state.models.close()


def _request(x: np.ndarray, request_id: str) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape),
              "data": x.ravel().tolist()}  # fmt: skip
    body = json.dumps({"id": request_id, "inputs": [tensor]}).encode()
    head = (b"POST /v2/models/mlp/versions/1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))  # fmt: skip
    return head + body


class _Connections:
    """HTTP connections of one server (the ``gometal serve`` protocol), fed by the test."""

    def __init__(self, app: Any, keep_alive_s: float = 5.0) -> None:
        from gometal.serving.http_connection import serving_protocol

        http = serving_protocol(10.0, app.state.direct_infer)
        self.config = Config(app, http=http, lifespan="off", timeout_keep_alive=keep_alive_s)
        self.config.load()
        self.state = ServerState()

    def open(self) -> tuple[Any, MemoryTransport]:
        connection = self.config.http_protocol_class(
            config=self.config, server_state=self.state, app_state={}
        )
        transport = MemoryTransport()
        connection.connection_made(transport)
        return connection, transport


async def _until(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the server did not answer"
        await asyncio.sleep(0.005)


def _answers(written: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    answers = []
    while written:
        head, _, rest = written.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        pairs = (line.split(": ", 1) for line in lines[1:])
        headers = {name.lower(): value for name, value in pairs}
        length = int(headers["content-length"])
        answers.append((int(lines[0].split()[1]), headers, rest[:length]))
        written = rest[length:]
    return answers


def _assert_offline(body: bytes, repository: Path, x: np.ndarray) -> None:
    """The answer's output is offline ``predict``'s for ``x`` (the mlp's version 1)."""
    output = json.loads(body)["outputs"][0]
    got = np.array(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, offline(repository, "mlp", 1, x), rtol=RTOL, atol=ATOL)


def test_a_body_that_came_with_its_headers_needs_no_upload_slot(app, repository: Path) -> None:
    slots = app.state.direct_infer.slots
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    slow, whole = _request(x, "slow"), _request(x[:1], "whole")

    async def exchange() -> tuple[bytes, bytes, list[int]]:
        connections = _Connections(app)
        holder, holder_out = connections.open()
        other, other_out = connections.open()
        holder.data_received(slow[:-10])  # the body is still coming: it holds the one slot
        in_use = [slots.in_use]
        other.data_received(whole)
        waiting = other.cycle
        in_use.append(int(waiting.holds_slot or waiting.body_timer is not None))
        await _until(lambda: other_out.written)
        holder.data_received(slow[-10:])
        await _until(lambda: holder_out.written)
        in_use.append(slots.in_use)
        return holder_out.written, other_out.written, in_use

    held, answered, in_use = asyncio.run(exchange())
    assert in_use == [1, 0, 0]
    [(status, _, body)] = _answers(answered)
    assert status == 200, body
    _assert_offline(body, repository, x[:1])
    [(status, _, body)] = _answers(held)
    assert status == 200 and json.loads(body)["id"] == "slow"
    _assert_offline(body, repository, x)


def test_a_late_body_gets_a_408_gives_its_slot_back_and_the_connection_goes_on(
    app, repository: Path
) -> None:
    slots = app.state.direct_infer.slots
    x = np.ones((1, 8), np.float32)
    late, next_one = _request(x, "late"), _request(x, "next")

    async def exchange() -> tuple[list, int, list]:
        connection, transport = _Connections(app).open()
        connection.data_received(late[:-4])
        await _until(lambda: transport.written, timeout_s=BODY_TIMEOUT_S + 10)
        first = _answers(transport.written)
        in_use = slots.in_use
        transport.written = b""
        connection.data_received(late[-4:])  # the rest of the late body: dropped
        connection.data_received(next_one)
        await _until(lambda: transport.written)
        return first, in_use, _answers(transport.written)

    first, in_use, then = asyncio.run(exchange())
    [(status, headers, body)] = first
    assert status == 408 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == f"the body must arrive within {BODY_TIMEOUT_S:g} s"
    assert in_use == 0
    [(status, _, body)] = then
    assert status == 200 and json.loads(body)["id"] == "next"
    _assert_offline(body, repository, x)


def test_a_client_leaving_mid_body_gives_its_slot_back(app) -> None:
    slots = app.state.direct_infer.slots

    async def exchange() -> tuple[int, int, bytes]:
        connection, transport = _Connections(app).open()
        connection.data_received(_request(np.ones((1, 8), np.float32), "gone")[:-4])
        held = slots.in_use
        connection.connection_lost(None)
        await asyncio.sleep(BODY_TIMEOUT_S * 2)  # past the deadline: nothing more happens
        return held, slots.in_use, transport.written

    assert asyncio.run(exchange()) == (1, 0, b"")


def test_a_shutdown_answers_the_request_being_computed_then_closes(app, repository: Path) -> None:
    x = np.full((3, 8), 0.5, np.float32)

    async def exchange() -> tuple[bool, bytes, bool]:
        connection, transport = _Connections(app).open()
        connection.data_received(_request(x, "drained"))
        connection.shutdown()  # as uvicorn's on SIGTERM, while the batcher computes
        closed_at_once = transport.closed
        await _until(lambda: transport.written)
        return closed_at_once, transport.written, transport.closed

    closed_at_once, written, closed = asyncio.run(exchange())
    [(status, headers, body)] = _answers(written)
    assert not closed_at_once and closed
    assert status == 200 and headers["connection"] == "close"
    _assert_offline(body, repository, x)


def test_a_connection_idle_past_the_keep_alive_timeout_closes(app) -> None:
    keep_alive_s = 0.3
    request = _request(np.ones((1, 8), np.float32), "kept")

    async def exchange() -> tuple[list[bool], float, float]:
        connection, transport = _Connections(app, keep_alive_s).open()
        loop = asyncio.get_running_loop()
        open_while_busy = []
        for _ in range(5):  # a request every half timeout: never idle that long
            answered, sent = len(transport.written), loop.time()  # the answer comes after
            connection.data_received(request)
            await _until(lambda answered=answered: len(transport.written) > answered)
            await asyncio.sleep(keep_alive_s / 2)
            open_while_busy.append(not transport.closed)
        await _until(lambda: transport.closed, timeout_s=10)
        connection.connection_lost(None)
        return open_while_busy, sent, loop.time()

    open_while_busy, last_sent, closed_at = asyncio.run(exchange())
    assert open_while_busy == [True] * 5
    assert closed_at - last_sent >= keep_alive_s


def test_requests_pipelined_behind_an_asgi_one_are_answered_in_order(app, repository: Path) -> None:
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(1, 8)
    first, second = _request(x, "first"), _request(2 * x, "second")
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    async def exchange() -> bytes:
        connections = _Connections(app)
        connection, transport = connections.open()
        # The ASGI request, then one whose body comes in the next packet, then another.
        connection.data_received(live + first[:-5])
        connection.data_received(first[-5:] + second)
        await _until(lambda: len(_answers(transport.written)) == 3)
        await asyncio.gather(*connections.state.tasks)
        return transport.written

    answers = _answers(asyncio.run(exchange()))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert answers[0][2] == b""  # the health answer first, as sent
    assert [json.loads(body)["id"] for _, _, body in answers[1:]] == ["first", "second"]
    _assert_offline(answers[1][2], repository, x)
    _assert_offline(answers[2][2], repository, 2 * x)


def test_answers_carry_the_servers_default_headers_of_the_moment(app) -> None:
    request = _request(np.ones((1, 8), np.float32), "dated")

    async def exchange() -> list[dict[str, str]]:
        connections = _Connections(app)
        connection, transport = connections.open()
        heads = []
        for date in (b"Sat, 05 Dec 2026 20:00:00 GMT", b"Sat, 05 Dec 2026 20:00:01 GMT"):
            # As uvicorn's server does once a second: a new list with the new date.
            connections.state.default_headers = [(b"date", date), (b"server", b"uvicorn")]
            transport.written = b""
            connection.data_received(request)
            await _until(lambda: transport.written)
            heads.append(_answers(transport.written)[0][1])
        connection.connection_lost(None)
        return heads

    heads = asyncio.run(exchange())
    assert [head["date"] for head in heads] == [
        "Sat, 05 Dec 2026 20:00:00 GMT",
        "Sat, 05 Dec 2026 20:00:01 GMT",
    ]
    assert all(head["server"] == "uvicorn" for head in heads)
