"""benchmarks/bench_serving.py's wrk load generator (``--load wrk``, ``_serving_wrk.py``): its
smallest configuration end to end, and its Lua script's checks of every answer against a
real server (the onnxruntime + FastAPI baseline, with onnxruntime's own outputs as the
reference): right answers count, a wrong value, a missing id and a refusal each count as
such. Needs the ``wrk`` program (the Debian package ``wrk``).

No timing is asserted: these check that answers are counted right and the report is whole.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import gometal as gm

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _serving_wrk import run_wrk, write_wrk_inputs
from bench_serving import _free_port, cnn_model

IMAGES = 4


def test_the_smallest_wrk_configuration_answers_right_and_prints_client_cpu() -> None:
    command = [sys.executable, str(BENCHMARKS / "bench_serving.py"), "--clients", "2",
               "--window-s", "1", "--warmup-s", "0.2", "--offline-s", "0.2", "--images",
               str(IMAGES), "--load", "tritonclient,wrk"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "answers: all equal offline predict; failed requests: 0" in out
    assert "gen core-ms/req" in out
    for label in ("gometal serve", "onnxruntime + FastAPI", "gometal serve [wrk]",
                  "onnxruntime + FastAPI [wrk]"):  # fmt: skip
        row = re.compile(rf"  {re.escape(label)}\s+(\d+)\s")
        (line,) = [line for line in out.splitlines() if row.match(line)]
        # clients, req/s, p50, p99, of offline, errors, wrong, server and client CPU, cores
        columns = line[len(label) + 2 :].split()
        assert columns[0] == "2" and float(columns[1]) > 0 and float(columns[8]) > 0
    assert "Targets at 2 clients (tritonclient load):" in out
    assert "Targets at 2 clients (wrk load):" in out


def test_wrk_needs_a_known_load_generator() -> None:
    command = [sys.executable, str(BENCHMARKS / "bench_serving.py"), "--load", "ab"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "--load takes tritonclient, wrk, got 'ab'" in proc.stderr


@pytest.fixture(scope="module")
def baseline(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, np.ndarray, np.ndarray]]:
    """The onnxruntime + FastAPI baseline serving the benchmark's CNN, wrk's inputs for it,
    and onnxruntime's outputs for those images."""
    folder = tmp_path_factory.mktemp("wrk")
    model_path = folder / "cnn.onnx"
    cnn_model(gm).export_onnx(model_path)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(5).standard_normal((IMAGES, 3, 64, 64), dtype=np.float32)
    expected = np.concatenate([session.run(None, {"input": x[None]})[0] for x in images])
    port = _free_port()
    command = [sys.executable, str(BENCHMARKS / "_serving_fastapi.py"), str(model_path), "cnn",
               "--port", str(port), "--threads", "1"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no baseline"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}", folder, images, expected
    finally:
        server.terminate()
        server.wait(30)


def test_wrk_counts_right_answers(baseline) -> None:
    url, folder, images, expected = baseline
    write_wrk_inputs(str(folder), images, expected)
    result = run_wrk(url, "cnn", str(folder), clients=2, warmup_s=0, window_s=1)
    assert result["requests"] > 0 and result["answered"] == result["requests"]
    assert result["wrong"] == 0 and result["errors"] == 0 and result["first_error"] is None
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_wrk_counts_a_wrong_value(baseline) -> None:
    url, folder, images, expected = baseline
    wrong = expected.copy()
    wrong[1, 0] += 1e-3 + 2e-4 * abs(wrong[1, 0])  # past the tolerance, for image 1 only
    write_wrk_inputs(str(folder), images, wrong)
    result = run_wrk(url, "cnn", str(folder), clients=1, warmup_s=0, window_s=1)
    # One client sends the images in turn: every fourth answer is image 1's.
    assert result["wrong"] > 0 and result["requests"] > 0 and result["errors"] == 0
    assert abs(result["wrong"] - result["requests"] / (IMAGES - 1)) <= 2


def test_wrk_counts_refusals_and_answers_without_the_id(baseline) -> None:
    url, folder, images, expected = baseline
    write_wrk_inputs(str(folder), images, expected)
    refused = run_wrk(url, "other", str(folder), clients=1, warmup_s=0, window_s=1)
    assert refused["requests"] == 0 and refused["errors"] > 0
    assert "non-200 answers" in refused["first_error"]
    write_wrk_inputs(str(folder), images, expected, request_ids=False)
    unnamed = run_wrk(url, "cnn", str(folder), clients=1, warmup_s=0, window_s=1)
    assert unnamed["requests"] == 0 and unnamed["errors"] > 0
    assert "without the request's id" in unnamed["first_error"]
