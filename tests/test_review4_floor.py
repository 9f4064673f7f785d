"""Adversarial HTTP for the native floor server (benchmarks/cpp/http_floor.c), at once and paced:
a refusal pipelined behind a good request, more pipelined requests than it queues answers for,
requests larger than its buffer back to back, a request one byte a write, headers at the 16 KiB
limit and one byte past, a body of exactly the largest size, HTTP/1.0, a client that half-closes
or vanishes mid-request. References: http.client and byte counts of the fixed answer."""

from __future__ import annotations

import http.client
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_serving_floor import BODY, MAX_BODY, RESPONSE, _receive, _request, _start, _stop

MAX_HEADER = 16384  # http_floor.c's bound on a request's header, blank line included


@pytest.fixture(params=[None, 5_000], ids=["at-once", "paced"])
def floor(tmp_path: Path, request) -> Iterator[int]:
    proc, port = _start(tmp_path, RESPONSE, pace_us=request.param)
    yield port
    _stop(proc)


def _still_serving(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/v2/models/cnn/infer", b"after")
    assert connection.getresponse().read() == BODY
    connection.close()


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_refusal_pipelined_behind_a_good_request_comes_after_its_answer(floor):
    bad = b"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(_request(b"good") + bad + _request(b"never answered"))
        data = _read_until_closed(sock)
    assert data.startswith(RESPONSE)
    rest = data[len(RESPONSE) :]
    assert rest.startswith(b"HTTP/1.1 400 "), rest[:40]
    assert data.count(b"HTTP/1.1 ") == 2
    _still_serving(floor)


@pytest.mark.parametrize("count", (16, 17, 40))
def test_more_pipelined_requests_than_answers_queued_are_all_answered(floor, count):
    # The floor queues 16 answers a connection before it stops parsing; the rest wait in its
    # buffer and must be answered in order, once each.
    requests = b"".join(_request(str(i).encode() * (i % 5)) for i in range(count))
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(requests)
        assert _receive(sock, count * len(RESPONSE)) == RESPONSE * count
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(1)


def test_requests_larger_than_the_buffer_together_are_answered_each(floor):
    # Five requests of 60,000-byte bodies (300 KB) written at once: far more than the
    # connection's MAX_HEADER + MAX_BODY buffer holds.
    requests = b"".join(_request(bytes([65 + i]) * 60_000) for i in range(5))
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(requests)
        assert _receive(sock, 5 * len(RESPONSE)) == RESPONSE * 5


def test_a_request_written_one_byte_at_a_time_is_answered_once(floor):
    request = _request(b"0123456789" * 3)
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):
            sock.send(request[i : i + 1])
        assert _receive(sock, len(RESPONSE)) == RESPONSE
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(1)


def _header_of(size: int, body: bytes) -> bytes:
    # A request whose header (request line through the blank line) is exactly `size` bytes.
    start = f"POST /x HTTP/1.1\r\nContent-Length: {len(body)}\r\nX-Pad: ".encode()
    pad = size - len(start) - len(b"\r\n\r\n")
    return start + b"p" * pad + b"\r\n\r\n" + body


@pytest.mark.parametrize("split", (False, True))
def test_a_header_of_exactly_16_kib_is_served_and_one_byte_more_is_refused(floor, split):
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        request = _header_of(MAX_HEADER, b"body")
        assert len(request) == MAX_HEADER + 4
        if split:  # the blank line arrives last, on its own
            sock.sendall(request[: MAX_HEADER - 4])
            sock.sendall(request[MAX_HEADER - 4 :])
        else:
            sock.sendall(request)
        assert _receive(sock, len(RESPONSE)) == RESPONSE
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(_header_of(MAX_HEADER + 1, b""))
        data = _read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 431 "), data[:40]
    _still_serving(floor)


def test_a_body_of_exactly_the_largest_size_is_served_twice_on_one_connection(floor):
    connection = http.client.HTTPConnection("127.0.0.1", floor, timeout=10)
    for fill in (b"a", b"b"):
        connection.request("POST", "/v2/models/cnn/infer", fill * MAX_BODY)
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (200, BODY)
    connection.close()


def test_http_1_0_gets_one_answer_then_the_connection_closes(floor):
    head = b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(head + head)
        assert _read_until_closed(sock) == RESPONSE


def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(floor):
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(_request(b"x" * 1000) + _request(b""))
        sock.shutdown(socket.SHUT_WR)
        assert _read_until_closed(sock) == RESPONSE * 2


@pytest.mark.parametrize("cut", (5, 60, 200))
def test_clients_that_vanish_mid_request_leave_the_server_serving(floor, cut):
    # Closed after `cut` bytes (inside the request line, the headers, the body), once with a
    # FIN and once with a reset (SO_LINGER 0).
    request = _request(b"y" * 500)
    for reset in (False, True):
        sock = socket.create_connection(("127.0.0.1", floor), timeout=10)
        sock.sendall(request[:cut])
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    _still_serving(floor)


def test_many_keep_alive_connections_interleaved_each_get_their_answers(floor):
    # 20 connections, each with half a request written, then each finished in reverse order.
    request = _request(b"z" * 3000)
    socks = [socket.create_connection(("127.0.0.1", floor), timeout=10) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(request[:1500])
        for sock in reversed(socks):
            sock.sendall(request[1500:] + request)
        for sock in socks:
            assert _receive(sock, 2 * len(RESPONSE)) == RESPONSE * 2
    finally:
        for sock in socks:
            sock.close()


def test_clients_that_reset_with_answers_owed_leave_the_server_serving(floor):
    # 200 pipelined requests whose answers the client never reads, then a reset: the floor's
    # writes meet a full socket, then a dead one (EPIPE / ECONNRESET, never SIGPIPE's exit).
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", floor), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"".join(_request(b"w" * 100) for _ in range(200)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    _still_serving(floor)
