"""benchmarks/_serving_floor.py and cpp/http_floor.c: the native HTTP/1.1 floor server answers
real clients correctly (http.client keep-alive, a pipelined pair, a request split across
writes, refusals of oversized or malformed requests, wrk's checked infer requests), and
bench_serving's ceiling arithmetic against hand-worked numbers and an independent formula.

No timing is asserted: the floor's rate is what benchmark G measures and prints.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _serving_floor import (
    capture_answer,
    ceiling_report,
    describe_ceiling,
    floor_binary,
    floor_command,
    serving_ceiling,
)
from _serving_wrk import run_wrk, write_wrk_inputs, wrk_available

MAX_BODY = 100_000
BODY = b'{"answer": "fixed"}'
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)  # fmt: skip


def _start(tmp_path: Path, response: bytes, max_body: int = MAX_BODY,
           pace_us: int | None = None) -> tuple[subprocess.Popen, int]:  # fmt: skip
    binary = floor_binary()
    assert binary is not None, "no C compiler found"
    path = tmp_path / f"response-{len(response)}.http"
    path.write_bytes(response)
    command = floor_command(binary, 0, str(path), max_body, pace_us)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    assert proc.wait(10) == 0


# Answers at once, and held for the next tick of 5 ms as a batching server holds them.
@pytest.fixture(params=[None, 5_000], ids=["at-once", "paced"])
def floor(tmp_path: Path, request) -> Iterator[int]:
    proc, port = _start(tmp_path, RESPONSE, pace_us=request.param)
    yield port
    _stop(proc)


def _request(body: bytes, extra: str = "") -> bytes:
    head = (f"POST /v2/models/cnn/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _refusal(port: int, request: bytes) -> tuple[bytes, bytes]:
    """The status line the floor answers ``request`` with, and what follows its answer (b""
    once it has closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        rest += _receive(sock, length - len(rest))
        return head.split(b"\r\n")[0], sock.recv(4096)


def test_http_client_keep_alive_gets_the_fixed_answer_on_one_connection(floor):
    connection = http.client.HTTPConnection("127.0.0.1", floor, timeout=10)
    first_socket = None
    for body in (b"", b"x" * 49_000, bytes(range(256)) * 300):
        connection.request("POST", "/v2/models/cnn/infer", body,
                           {"Content-Type": "application/octet-stream"})  # fmt: skip
        answer = connection.getresponse()
        assert (answer.status, answer.getheader("content-type")) == (200, "application/json")
        assert answer.read() == BODY
        first_socket = first_socket or connection.sock
        assert connection.sock is first_socket, "the connection was not kept alive"
    connection.request("GET", "/v2/health/ready")
    assert connection.getresponse().read() == BODY
    connection.close()


def test_a_pipelined_pair_gets_two_answers_in_order(floor):
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(_request(b"a" * 30_000) + _request(b"b" * 7))
        assert _receive(sock, 2 * len(RESPONSE)) == RESPONSE * 2
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):  # nothing beyond the two answers
            sock.recv(1)


def test_a_request_split_across_writes_is_answered_once_whole(floor):
    request = _request(b"z" * 49_000) + _request(b"")
    cuts = [0, 9, 40, 41, 1_000, 30_000, len(request) - 3, len(request)]
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start, end in itertools.pairwise(cuts[:4]):
            sock.sendall(request[start:end])
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):  # headers incomplete: no answer yet
            sock.recv(1)
        for start, end in itertools.pairwise(cuts[3:]):
            sock.sendall(request[start:end])
        sock.settimeout(10)
        assert _receive(sock, 2 * len(RESPONSE)) == RESPONSE * 2


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 100001\r\n\r\n", b"413"),
        (b"POST / HTTP/1.1\r\nContent-Length: 999999999999999999999999\r\n\r\n", b"413"),
        (b"POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", b"400"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"POST / HTTP/1.1\r\nX-Pad: " + b"p" * 17_000 + b"\r\n\r\n", b"431"),
        (b"not http\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\nabcde", b"400"),  # blank before ':'
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n 7\r\n\r\nabcde", b"400"),  # folded line
        (b"POST / HTTP/1.1\r\nNo colon here\r\n\r\n", b"400"),
    ],
)
def test_oversized_or_malformed_requests_are_refused_and_closed(floor, request_bytes, status):
    line, after = _refusal(floor, request_bytes)
    assert line.split(b" ")[1] == status, line
    assert after == b"", "the connection stayed open after a refusal"
    connection = http.client.HTTPConnection("127.0.0.1", floor, timeout=10)
    connection.request("POST", "/", b"still serving")
    assert connection.getresponse().read() == BODY
    connection.close()


def test_connection_close_is_honoured(floor):
    with socket.create_connection(("127.0.0.1", floor), timeout=10) as sock:
        sock.sendall(_request(b"q", "Connection: close\r\n") + _request(b"never answered"))
        assert _receive(sock, len(RESPONSE) + 100) == RESPONSE


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["x", "RESPONSE"], "PORT must be 0-65535, got 'x'"),
        (["0", "/nonexistent/response"], "RESPONSE_FILE '/nonexistent/response'"),
        (["0", "RESPONSE", "-5"], "MAX_BODY_BYTES must be 0-1073741824, got '-5'"),
        (["0", "RESPONSE", "5", "1.5"], "PACE_US must be 0-10000000, got '1.5'"),
    ],
)
def test_bad_arguments_exit_2_naming_them(tmp_path, arguments, message):
    (tmp_path / "response").write_bytes(RESPONSE)
    arguments = [str(tmp_path / "response") if a == "RESPONSE" else a for a in arguments]
    run = subprocess.run([floor_binary(), *arguments], capture_output=True, text=True,
                         timeout=10, check=False)  # fmt: skip
    assert run.returncode == 2 and message in run.stderr, run.stderr


def _infer_answer(request_id: str, outputs: np.ndarray) -> bytes:
    """An answer in gometal serve's binary-extension format, for one request."""
    header = json.dumps({"model_name": "cnn", "model_version": "1", "id": request_id,
                         "outputs": [{"name": "dense_1", "datatype": "FP32",
                                      "shape": [1, outputs.size],
                                      "parameters": {"binary_data_size": outputs.nbytes}}]}).encode()  # fmt: skip
    body = header + outputs.astype("<f4").tobytes()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
            b"inference-header-content-length: " + str(len(header)).encode() + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip


@pytest.fixture
def wrk_folder(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 8, 8), dtype=np.float32)
    expected = rng.standard_normal((4, 2), dtype=np.float32)
    folder = tmp_path / "wrk"
    folder.mkdir()
    write_wrk_inputs(str(folder), images, expected)
    return folder, expected


@pytest.mark.parametrize(("request_id", "right", "pace_us"),
                         [("0", True, None), ("1", False, None), ("0", True, 2_000)])  # fmt: skip
def test_wrk_counts_the_floors_answers_as_it_counts_gometals(tmp_path, wrk_folder, request_id,
                                                            right, pace_us):  # fmt: skip
    assert wrk_available(), "the wrk program is not on PATH"
    folder, expected = wrk_folder
    # Image 0's answer passes wrk's checks whichever request it answers; named as image 1's,
    # its outputs are wrong.
    proc, port = _start(tmp_path, _infer_answer(request_id, expected[0]), pace_us=pace_us)
    try:
        result = run_wrk(f"127.0.0.1:{port}", "cnn", str(folder), clients=2, warmup_s=0,
                         window_s=1)  # fmt: skip
    finally:
        _stop(proc)
    assert result["errors"] == 0
    if right:
        assert result["requests"] > 0 and result["wrong"] == 0
    else:
        assert result["requests"] == 0 and result["wrong"] > 0


def test_capture_answer_returns_the_whole_response_as_served(tmp_path, wrk_folder):
    folder, expected = wrk_folder
    answer = _infer_answer("0", expected[0])
    proc, port = _start(tmp_path, answer)
    try:
        assert capture_answer(f"127.0.0.1:{port}", "cnn", str(folder)) == answer
    finally:
        _stop(proc)
    refusal = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
    proc, port = _start(tmp_path, refusal)
    try:
        with pytest.raises(RuntimeError, match="answered 503 Service Unavailable"):
            capture_answer(f"127.0.0.1:{port}", "cnn", str(folder))
    finally:
        _stop(proc)


def _independent_ceiling(offline: float, floor_ms: float, wrk_ms: float, cores: int) -> float:
    # Requests/s r fill the cores when r (1 / offline + (floor + wrk) / cores / 1000) = 1.
    return 1.0 / (1.0 / offline + (floor_ms + wrk_ms) / cores / 1e3)


def test_the_ceiling_against_hand_worked_numbers():
    # 2 cores / 11,300 images/s = 0.176991 ms; + 0.010 + 0.028 = 0.214991 ms; 2 / that.
    bound = serving_ceiling(11_300, 0.010, 0.028, cores=2)
    assert bound["model_ms"] == pytest.approx(0.1769912, rel=1e-6)
    assert bound["per_request_ms"] == pytest.approx(0.2149912, rel=1e-6)
    assert bound["ceiling"] == pytest.approx(9302.708, rel=1e-6)
    assert bound["ceiling"] == pytest.approx(_independent_ceiling(11_300, 0.010, 0.028, 2))
    assert bound["target"] == pytest.approx(9040.0)
    assert bound["target_of_ceiling"] == pytest.approx(9040.0 / 9302.708, rel=1e-6)
    assert bound["shortfall"] == 0.0
    # 2 / 9,040 = 0.221239 ms a request at the target, less the model's and wrk's.
    assert bound["budget_ms"] == pytest.approx(0.221239 - 0.176991 - 0.028, abs=1e-6)


def test_the_ceiling_below_the_target_says_by_how_much():
    bound = serving_ceiling(11_300, 0.050, 0.040, cores=2)
    expected = _independent_ceiling(11_300, 0.050, 0.040, 2)
    assert bound["ceiling"] == pytest.approx(expected) == pytest.approx(7490.88, rel=1e-5)
    assert bound["shortfall"] == pytest.approx(9040.0 - expected)
    # 0.221239 ms at the target, less the model's and wrk's: less than the floor's 0.05.
    assert bound["budget_ms"] == pytest.approx(0.221239 - 0.176991 - 0.040, abs=1e-6)
    floor = {"clients": 64, "throughput": 30_000.0, "server_ms_per_request": 0.05,
             "generator_ms_per_request": 0.04}  # fmt: skip
    gometal = {"throughput": 4_500.0, "server_ms_per_request": 0.30,
               "generator_ms_per_request": 0.04}  # fmt: skip
    text = "\n".join(describe_ceiling(bound, floor, gometal, 2, 11_300, 2))
    assert "OUT OF REACH" in text and "1,549 req/s (17%) short" in text
    assert "2 / 0.2670 ms = 7,491 req/s" in text and "4,500 req/s = 60% of the ceiling" in text


def test_the_offline_cores_may_differ_from_the_machines():
    # One core at 5,000 images/s: 0.2 ms an image; 0.2 + 0.05 = 0.25 ms on 2 cores: 8,000/s.
    bound = serving_ceiling(5_000, 0.02, 0.03, cores=2, offline_cores=1)
    assert bound["model_ms"] == pytest.approx(0.2)
    assert bound["ceiling"] == pytest.approx(8_000.0)
    assert "the target fits" in describe_ceiling(bound, {"clients": 1, "throughput": 1.0,
        "server_ms_per_request": 0.02, "generator_ms_per_request": 0.03}, None, 2, 5_000, 1)[3]  # fmt: skip


def test_the_report_takes_offlines_median_rate_and_the_rate_of_its_median_cpu():
    runs = [(9_000.0, 0.19), (5_000.0, 0.20), (4_000.0, 0.21)]
    floor = {"clients": 64, "throughput": 30_000.0, "server_ms_per_request": 0.01,
             "generator_ms_per_request": 0.03}  # fmt: skip
    text = "\n".join(ceiling_report(floor, None, None, runs, offline_cores=2, cores=2))
    # Median rate 5,000: 0.4 + 0.04 ms, 4,545 req/s. Median CPU 0.2 ms: 2 cores / 0.2 ms =
    # 10,000 images/s; 0.2 + 0.04 ms, 8,333 req/s against a target of 8,000.
    assert "2 cores / 5,000 images/s" in text and "2 / 0.4400 ms = 4,545 req/s" in text
    assert "2 cores / 10,000 images/s" in text and "2 / 0.2400 ms = 8,333 req/s" in text
    assert "8,000 req/s, is 96% of it" in text
    assert "4,000-9,000 images/s, own CPU 0.1900-0.2100 ms" in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 0.01, 0.03, 2), "offline_images_per_s must be positive, got 0"),
        ((10_000, -0.01, 0.03, 2), "floor_ms must be >= 0 core-ms, got -0.01"),
        ((10_000, 0.01, float("nan"), 2), "generator_ms must be >= 0 core-ms, got nan"),
        ((10_000, 0.01, 0.03, 0), "cores must be positive, got 0"),
    ],
)
def test_the_ceiling_refuses_bad_input_naming_it(arguments, message):
    with pytest.raises(ValueError, match=f"serving_ceiling.*{message}"):
        serving_ceiling(*arguments)


def test_bench_serving_floor_prints_the_floor_beside_gometal_and_the_ceiling():
    command = [sys.executable, str(BENCHMARKS / "bench_serving.py"), "--clients", "2",
               "--window-s", "1", "--warmup-s", "0.2", "--offline-s", "0.2", "--images", "4",
               "--load", "wrk", "--floor"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "answers: all equal offline predict; failed requests: 0" in out
    rows = {}
    for label in ("gometal serve [wrk]", "native HTTP floor [wrk]", "paced HTTP floor [wrk]"):
        (line,) = [line for line in out.splitlines() if line.startswith(f"  {label} ")]
        rows[label] = line[len(label) + 2 :].split()
    # clients, req/s, p50, p99, of offline, errors, wrong, server, loop and wrk CPU, cores
    for label in ("native HTTP floor [wrk]", "paced HTTP floor [wrk]"):
        floor = rows[label]
        assert floor[0] == "2" and float(floor[1]) > 0 and floor[5:7] == ["0", "0"]
    per_request = re.findall(
        r"per request: model ([\d.]+) core-ms .* \+ native floor server ([\d.]+) \(at .*\) "
        r"\+ wrk ([\d.]+) = ([\d.]+) core-ms", out)  # fmt: skip
    ceilings = re.findall(r"ceiling: (\d+) / ([\d.]+) ms = ([\d,]+) req/s", out)
    # From offline's rate, from its CPU, and from its CPU with the floor paced.
    assert len(per_request) == len(ceilings) == 3
    floors = [rows["native HTTP floor [wrk]"]] * 2 + [rows["paced HTTP floor [wrk]"]]
    for numbers, (cores, shown_total, ceiling), floor in zip(per_request, ceilings, floors,
                                                             strict=True):  # fmt: skip
        model_ms, floor_ms, wrk_ms, total_ms = (float(v) for v in numbers)
        # The floor's CPU in the ceiling is its row's (the table rounds to 0.001 ms).
        assert floor_ms == pytest.approx(float(floor[7]), abs=0.00051)
        assert wrk_ms == pytest.approx(float(floor[9]), abs=0.00051)
        assert total_ms == pytest.approx(model_ms + floor_ms + wrk_ms, abs=2e-4)
        assert float(shown_total) == total_ms
        assert float(ceiling.replace(",", "")) == pytest.approx(
            int(cores) / total_ms * 1e3, rel=1e-3
        )
    assert out.count("OUT OF REACH") + out.count("the target fits") == 3
    assert out.count("  gometal serve: ") == 1 and "of the ceiling" in out


def test_bench_serving_floor_needs_wrk_in_the_load():
    command = [sys.executable, str(BENCHMARKS / "bench_serving.py"), "--floor", "--load",
               "tritonclient"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--floor loads the floor server with wrk: add wrk to --load" in proc.stderr
