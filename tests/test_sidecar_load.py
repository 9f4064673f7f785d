"""The sidecar under load and slow clients, against a real ``gometal sidecar`` process.

- Drawing a big plot runs in a worker thread: ``/health`` keeps answering meanwhile.
- Request headers have a deadline: half-open requests are closed (with a JSON 408).
- Uploads at once are bounded (503 + Retry-After beyond), each body has a deadline
  (JSON 408), so the server's memory stays bounded (measured with psutil).

Every loop is bounded in count and time; waits end at a deadline and then fail.
"""

from __future__ import annotations

import json
import math
import selectors
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from gometal.viz.server import DEFAULT_MAX_UPLOADS
from gometal.viz.server_store import PlotStore
from sidecar_helpers import get_json, parse_response, sample_payload, sidecar_process

MB = 1024 * 1024
JSON_TYPE = "application/json"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def big_payload(series: int = 12, points: int = 6000) -> dict:
    """The report's plot: 12 series x 6,000 points (about 1.75 MB as the Go client writes it)."""
    payload = sample_payload("training_curves", title="big")
    payload["series"] = [
        {
            "name": f"series {k}",
            "type": "line",
            "data": [{"x": i, "y": round(math.sin(i / 100 + k), 4)} for i in range(points)],
        }
        for k in range(series)
    ]
    return payload


def has_whole_answer(raw: bytes) -> bool:
    head, found, body = raw.partition(b"\r\n\r\n")
    if not found:
        return False
    length = parse_response(head + b"\r\n\r\n")[1].get("content-length", "0")
    return len(body) >= int(length)


def wait_closed(
    socks: list[socket.socket], deadline_s: float, count: int | None = None, answered: bool = False
) -> dict[socket.socket, bytes]:
    """Reads the sockets until ``count`` of them (default: all) are closed by the server,
    or hold a whole answer when ``answered``, or ``deadline_s`` passes; returns what each
    of those received."""
    count = len(socks) if count is None else count
    selector = selectors.DefaultSelector()
    received = {sock: b"" for sock in socks}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    done: dict[socket.socket, bytes] = {}
    end = time.monotonic() + deadline_s
    while len(done) < count and time.monotonic() < end:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            received[sock] += chunk
            if not chunk or (answered and has_whole_answer(received[sock])):
                done[sock] = received[sock]
                selector.unregister(sock)
    selector.close()
    for sock in socks:
        sock.settimeout(30)  # blocking again, for what the test sends next
    return done


def test_health_answers_while_a_big_plot_is_checked_and_drawn(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    payload = big_payload()
    assert 1.5 * MB < len(json.dumps(payload, separators=(",", ":"))) < 2.5 * MB
    PlotStore(data_dir).add_plots([payload], plot_ids=["big"])  # drawn by the view page below
    # A quarter of it to post (checked and drawn once): the same work, a shorter test.
    body = json.dumps(big_payload(points=1500), separators=(",", ":")).encode()
    with sidecar_process(data_dir) as (url, _):
        for method, path in (("GET", "/plot/big"), ("POST", "/api/plot")):
            finished: list[float] = []
            outcome: dict[str, int] = {}

            def big_request(
                method: str = method,
                path: str = path,
                outcome: dict[str, int] = outcome,
                finished: list[float] = finished,
            ) -> None:
                with socket.create_connection(("127.0.0.1", port_of(url)), timeout=120) as sock:
                    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    if method == "POST":
                        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    sock.sendall(head.encode() + b"\r\n" + (body if method == "POST" else b""))
                    raw = b""
                    while chunk := sock.recv(1 << 20):
                        raw += chunk
                outcome["status"] = parse_response(raw)[0]
                finished.append(time.monotonic())

            thread = threading.Thread(target=big_request)
            thread.start()
            answered_meanwhile = 0
            deadline = time.monotonic() + 120
            while thread.is_alive() and time.monotonic() < deadline:
                status, doc = get_json(url + "/health", timeout=60)
                if status == 200 and doc["status"] == "ok" and not finished:
                    answered_meanwhile += 1
            thread.join(timeout=1)
            assert outcome.get("status") == 200, (method, outcome)
            # Answers completed while the big request was still being handled: the event
            # loop was free. Drawing on the loop, none would come before it finished.
            assert answered_meanwhile >= 3, (method, path, answered_meanwhile)


def test_half_open_requests_are_closed_at_the_header_deadline(tmp_path: Path) -> None:
    with sidecar_process(tmp_path / "data", "--header-timeout", "1") as (url, _):
        port = port_of(url)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
        partial = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
        for sock in partial:
            sock.sendall(b"POST /api/plot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        trickle = socket.create_connection(("127.0.0.1", port))
        sent_before_close = 0
        try:
            # One byte at a time keeps no deadline from running out: it runs from the start.
            for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                trickle.sendall(bytes([byte]))
                sent_before_close += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent_before_close < 100  # closed by the server while still sending
        assert get_json(url + "/health")[0] == 200  # others are served meanwhile

        closed = wait_closed(silent + partial, deadline_s=15)
        try:
            assert len(closed) == 300, f"{300 - len(closed)} connections still open"
            assert all(closed[s] == b"" for s in silent)  # nothing asked, nothing answered
            for sock in partial:
                status, headers, answer = parse_response(closed[sock])
                assert (status, headers["content-type"]) == (408, "application/json")
                assert json.loads(answer)["error_code"] == "REQUEST_TIMEOUT"
        finally:
            for sock in [*silent, *partial, trickle]:
                sock.close()


def test_uploads_beyond_the_limit_are_refused_and_stalled_bodies_time_out(
    tmp_path: Path,
) -> None:
    # The report's 40 pending 9.9 MB bodies, against the default upload limit.
    clients, slots, body_size, sent_size = 40, DEFAULT_MAX_UPLOADS, int(9.9 * MB), int(9.8 * MB)
    options = ("--body-timeout", "5", "--header-timeout", "30")
    with sidecar_process(tmp_path / "data", *options) as (url, process):
        server = psutil.Process(process.pid)
        warm = json.dumps(sample_payload("qq_plot")).encode()  # loads what a request needs
        with socket.create_connection(("127.0.0.1", port_of(url))) as sock:
            sock.sendall(
                b"POST /api/plot HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(warm), warm)
            )
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        rss_before = server.memory_info().rss

        head = (
            f"POST /api/plot HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {body_size}\r\n\r\n"
        ).encode()
        socks = [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(clients)]
        for sock in socks:
            sock.sendall(head)
        # Refused at once, before their bodies are read.
        refused = wait_closed(socks, deadline_s=10, count=clients - slots, answered=True)
        waiting = [s for s in socks if s not in refused]
        try:
            assert len(refused) == clients - slots and len(waiting) == slots
            for raw in refused.values():
                status, headers, answer = parse_response(raw)
                assert status == 503 and headers["retry-after"] == "1"
                assert json.loads(answer)["error_code"] == "SERVER_BUSY"

            chunk = b" " * MB
            for sock in waiting:  # all but the last 0.1 MB, then stall
                for start in range(0, sent_size, MB):
                    sock.sendall(chunk[: min(MB, sent_size - start)])
            rss_pending = server.memory_info().rss
            assert rss_pending - rss_before < slots * body_size + 64 * MB, (
                rss_before // MB,
                rss_pending // MB,
            )

            timed_out = wait_closed(waiting, deadline_s=20)
            assert len(timed_out) == slots
            for raw in timed_out.values():
                status, _, answer = parse_response(raw)
                assert status == 408 and json.loads(answer)["error_code"] == "REQUEST_TIMEOUT"
            status, health = get_json(url + "/health")
            assert status == 200 and health["plots"] == 1  # only the warm-up plot
            # Given back once the bodies are dropped, not kept by the process.
            rss_after = server.memory_info().rss
            assert rss_after - rss_before < 32 * MB, (rss_before // MB, rss_after // MB)
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.parametrize("limit", [0, -1])
def test_the_upload_limit_must_be_positive(tmp_path: Path, limit: int) -> None:
    from gometal.viz.server import create_app

    with pytest.raises(ValueError, match="max_uploads"):
        create_app(tmp_path, max_uploads=limit)


def test_clients_still_sending_a_body_read_the_early_answer(tmp_path: Path) -> None:
    import httpx

    options = ("--max-body-mb", "1", "--max-uploads", "1", "--header-timeout", "2")
    with sidecar_process(tmp_path / "data", *options) as (url, _):
        # A client that writes its whole request before it reads: the body is more than
        # socket buffers hold, so it is still being sent when the 413 comes.
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=30) as naive:
            naive.sendall(
                b"POST /api/plot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n\r\n" % (32 * MB)
            )
            for _ in range(32):
                naive.sendall(b" " * MB)
            raw = b""
            while not has_whole_answer(raw):
                raw += naive.recv(65536)
        status, _, answer = parse_response(raw)
        assert status == 413 and json.loads(answer)["error_code"] == "PAYLOAD_TOO_LARGE"

        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            # One upload holds the only slot (its body stalls), so the next one is refused.
            with socket.create_connection(("127.0.0.1", port_of(url))) as stalled:
                stalled.sendall(
                    b"POST /api/plot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                    b"\r\nContent-Length: 1000\r\n\r\n{"
                )
                body = json.dumps(sample_payload("qq_plot")).encode() + b" " * (MB - 4096)
                busy = client.post("/api/plot", content=body, headers={"content-type": JSON_TYPE})
                assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
                assert busy.json()["error_code"] == "SERVER_BUSY"
            # The slot is free again once the stalled client is gone: retrying as told works.
            for _ in range(10):
                again = client.post("/api/plot", content=body, headers={"content-type": JSON_TYPE})
                if again.status_code != 503:
                    break
                time.sleep(float(again.headers["retry-after"]))
            assert again.status_code == 200, again.text

        # A client that answers its 413 by sending nothing more is closed after the drain time.
        with socket.create_connection(("127.0.0.1", port_of(url))) as idle:
            idle.sendall(
                b"POST /api/plot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000000\r\n\r\n"
            )
            [raw] = wait_closed([idle], deadline_s=15).values()
            assert parse_response(raw)[0] == 413
