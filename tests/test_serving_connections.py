"""``gometal serve``'s HTTP/1.1 connections: the writes of one turn of the event loop leave
as one write (an answer's head and body together), closing writes what was kept first,
and over real sockets pipelined requests are answered in order on one connection, a
request that is not HTTP gets a JSON 400, headers slower than the deadline a JSON 408,
and the connection closes."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time

import pytest

from gometal.serving.http_connection import CoalescedWrites
from serving_helpers import ServerProcess, read_http_answers, running_server, write_repository


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
    return [(status, body) for status, _, body in read_http_answers(sock, count)]


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


HEADER_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory):
    repository = write_repository(tmp_path_factory.mktemp("repository"), ("mlp",))
    yield from running_server(repository, tmp_path_factory.mktemp("logs"), "--header-timeout",
                              str(HEADER_TIMEOUT_S), "--max-body-mb", "1")  # fmt: skip


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server writes until it closes the connection, which must happen
    within ``seconds``."""
    sock.settimeout(seconds)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_headers_that_stall_get_a_json_408_and_the_connection_closes(
    impatient_server: ServerProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
        sock.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {impatient_server.url}\r\n".encode())
        answer = _closed_within(sock, 10 * HEADER_TIMEOUT_S + 5)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body)["message"] == "request headers must arrive within 0.5 s"


def test_a_silent_connection_is_closed_without_an_answer(impatient_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
        assert _closed_within(sock, 10 * HEADER_TIMEOUT_S + 5) == b""


def test_an_idle_kept_alive_connection_is_not_cut_by_the_header_deadline(
    impatient_server: ServerProcess,
) -> None:
    live = _request(impatient_server, "/v2/health/live")
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
        sock.sendall(live)
        assert _read_answers(sock, 1)[0][0] == 200
        time.sleep(3 * HEADER_TIMEOUT_S)  # idle between requests: the keep-alive timeout's
        sock.sendall(live)
        assert _read_answers(sock, 1)[0][0] == 200


def test_a_body_refused_unread_is_answered_then_dropped_for_a_bounded_time(
    impatient_server: ServerProcess,
) -> None:
    head = (f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: {impatient_server.url}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {4 << 20}\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"[" * 1000)  # the body never finishes
        ((status, body),) = _read_answers(sock, 1)
        assert status == 413 and "1048576" in json.loads(body)["error"]
        sock.sendall(b"[" * 1000)  # more of the body is taken, not answered with a reset
        assert _closed_within(sock, 10 * HEADER_TIMEOUT_S + 5) == b""


def test_the_command_line_default_header_deadline_is_the_servers() -> None:
    from gometal.apps import serve_command
    from gometal.serving import server

    assert serve_command.DEFAULT_HEADER_TIMEOUT_S == server.DEFAULT_HEADER_TIMEOUT_S
    parser = argparse.ArgumentParser()
    serve_command.add_serve_command(parser.add_subparsers())
    assert parser.parse_args(["serve", "m", "--header-timeout", "2.5"]).header_timeout == 2.5
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "m", "--header-timeout", "0"])
