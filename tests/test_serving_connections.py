"""``gometal serve``'s HTTP/1.1 connections: the writes of one turn of the event loop leave
as one write (an answer's head and body together), closing writes what was kept first,
and over real sockets pipelined requests are answered in order on one connection while a
request that is not HTTP gets a JSON 400 and the connection closes."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from gometal.serving.http_connection import CoalescedWrites
from serving_helpers import ServerProcess, running_server, write_repository


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


def _in_a_loop(steps) -> _Transport:
    transport = _Transport()

    async def main() -> None:
        writes = CoalescedWrites(transport, asyncio.get_running_loop())
        await steps(writes, transport)

    asyncio.run(main())
    return transport


def test_writes_of_one_turn_leave_as_one_write() -> None:
    async def steps(writes: CoalescedWrites, transport: _Transport) -> None:
        writes.write(b"head ")
        writes.write(b"")
        writes.writelines([bytearray(b"body"), memoryview(b"!")])
        assert transport.writes == []  # kept until the turn ends
        await asyncio.sleep(0)
        writes.write(b"next")
        await asyncio.sleep(0)
        assert writes.get_extra_info("peername") == "info peername"

    assert _in_a_loop(steps).writes == [b"head body!", b"next"]


def test_closing_writes_what_was_kept_and_aborting_drops_it() -> None:
    async def close(writes: CoalescedWrites, transport: _Transport) -> None:
        writes.write(b"last answer")
        writes.close()
        await asyncio.sleep(0)  # the scheduled flush finds nothing left

    closed = _in_a_loop(close)
    assert closed.writes == [b"last answer"] and closed.closed

    async def abort(writes: CoalescedWrites, transport: _Transport) -> None:
        writes.write(b"never sent")
        writes.abort()
        await asyncio.sleep(0)

    aborted = _in_a_loop(abort)
    assert aborted.writes == [] and aborted.aborted


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repository = write_repository(tmp_path_factory.mktemp("repository"), ("mlp",))
    yield from running_server(repository, tmp_path_factory.mktemp("logs"))


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP answers read from ``sock``: ``(status, body)`` each."""
    data, answers = b"", []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            fields = dict(line.lower().split(": ", 1) for line in head[1:])
            end = head_end + 4 + int(fields["content-length"])
            if len(data) >= end:
                answers.append((int(head[0].split()[1]), data[head_end + 4 : end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(answers)} answers"
        data += chunk
    return answers


def _request(server: ServerProcess, path: str, body: bytes = b"") -> bytes:
    method = "POST" if body else "GET"
    return (f"{method} {path} HTTP/1.1\r\nHost: {server.url}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


def test_pipelined_requests_are_answered_in_order_on_one_connection(server: ServerProcess) -> None:
    bodies = [json.dumps({"id": str(i), "inputs": [{"name": "input", "datatype": "FP32",
              "shape": [1, 8], "data": [float(i)] * 8}]}).encode() for i in range(3)]  # fmt: skip
    requests = [_request(server, "/v2/models/mlp/infer", body) for body in bodies]
    requests.insert(1, _request(server, "/v2/health/live"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"".join(requests))  # all in one packet: HTTP/1.1 pipelining
        answers = _read_answers(sock, 4)
    assert [status for status, _ in answers] == [200] * 4
    ids = [json.loads(body)["id"] for status, body in (answers[0], *answers[2:])]
    assert ids == ["0", "1", "2"] and answers[1][1] == b""


def test_a_request_that_is_not_http_gets_a_json_400_and_the_connection_closes(
    server: ServerProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"this is not HTTP\r\n\r\n")
        ((status, body),) = _read_answers(sock, 1)
        assert sock.recv(65536) == b""  # closed after the answer
    assert status == 400 and "not a valid HTTP/1.1 request" in json.loads(body)["message"]
