"""``gometal serve``'s start and limits: the engine threads it computes with (``--threads``),
the plans it compiles for its batch sizes before it reports ready, and the bounded queue of
generate requests (past it: 503 with ``Retry-After`` on both generate endpoints, and the
server answers the requests it took and keeps generating once the queue drains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

import gometal as gm
from gometal.serving import ServerSettings, create_app
from gometal.serving.generation import TextGenerator
from gometal.serving.metrics import ServingMetrics
from gometal.serving.protocol import ProtocolError
from gometal.serving.served_model import WARMUP_TIMED_CALLS, ServedVersion
from serving_helpers import (
    ServerProcess,
    free_port,
    metric_samples,
    offline_generation,
    running_server,
    write_gpt_repository,
)

CORPUS = "def main():\n    return 1\n"
BLOCK = 16
WAIT_S = 30.0


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gpt_repository(tmp_path_factory.mktemp("repository"), CORPUS, BLOCK)


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from running_server(repository, tmp_path_factory.mktemp("logs"), "--threads", "1")


def test_the_server_announces_its_engine_threads_and_the_plans_it_compiled(
    server: ServerProcess,
) -> None:
    out = server.stdout_path.read_text()
    # --threads 1 and no --instances: one instance per core this process may use.
    assert f"(1 engine threads, {len(os.sched_getaffinity(0))} instances, " in out, out
    for model in ("gpt/1", "mlp/1", "mlp/2"):
        assert f"{model} compiled for batch sizes [1, 2, 4, 8, 16, 32, 64]" in out, out


@pytest.mark.parametrize("threads", ["0", "-2", "two"])
def test_threads_must_be_a_positive_count(repository: Path, threads: str) -> None:
    command = [sys.executable, "-m", "gometal.apps.cli", "serve", str(repository),
               "--threads", threads]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "--threads" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def in_process(repository: Path):
    """The application with ``max_queue=1`` under uvicorn in a thread of this process, so
    that a test can hold its GPT's generator."""
    app = create_app(repository, ServerSettings(max_queue=1))
    port = free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "the in-process server did not start"
    yield app, f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(60)


def _wait_for_admitted(generator: TextGenerator, count: int, *sent: Future) -> None:
    """Waits until ``count`` requests are admitted; fails at once, with its answer, when
    one of the requests ``sent`` has already been answered instead."""
    deadline = time.monotonic() + WAIT_S
    while generator.admitted() != count:
        answered = [f.result().text for f in sent if f.done() and f.exception() is None]
        assert not answered, f"answered before it was admitted: {answered}"
        assert time.monotonic() < deadline, f"{generator.admitted()} generate requests, not {count}"
        time.sleep(0.01)


def _streamed_text(answer: httpx.Response) -> str:
    lines = [line for line in answer.text.splitlines() if line.startswith("data: ")]
    return "".join(json.loads(line[len("data: ") :])["text_output"] for line in lines)


def test_generate_requests_past_the_queue_get_503_and_the_queue_drains(
    in_process, repository: Path
) -> None:
    """With max_queue 1, a request generating and one waiting fill the model's queue: a
    third is refused on either endpoint; once the generator is free, both are answered
    and the queue is empty again."""
    app, base = in_process
    generator = app.state.models.served[("gpt", 1)].generator
    generate, stream = f"{base}/v2/models/gpt/generate", f"{base}/v2/models/gpt/generate_stream"
    short = {"text_input": "d", "max_tokens": 3, "greedy": True}
    expected = offline_generation(repository, "d", 3, greedy=True)
    with ThreadPoolExecutor(2) as pool:
        with generator.lock:  # as a long generation would: every admitted request waits
            # One at a time: max_queue 1 is also the one body slot, and httpx writes the
            # headers and the body apart, so a request sent meanwhile could get that 503.
            first = pool.submit(httpx.post, generate, json=short, timeout=60)
            _wait_for_admitted(generator, 1, first)
            second = pool.submit(httpx.post, stream, json=short, timeout=60)
            _wait_for_admitted(generator, 2, first, second)
            for url in (generate, stream):
                refused = httpx.post(url, json=short, timeout=60)
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"] == "1"
                assert "overloaded" in refused.json()["error"]
            samples = metric_samples(base, "gometal_generate_requests")
            assert [s.value for s in samples if s.labels["model"] == "gpt"] == [2.0]
        answers = [first.result(60), second.result(60)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["text_output"] == expected
    assert _streamed_text(answers[1]) == expected
    _wait_for_admitted(generator, 0)
    again = httpx.post(generate, json=short, timeout=60)
    assert again.status_code == 200, again.text


def _recorded_warmup(
    monkeypatch: pytest.MonkeyPatch, max_batch_size: int, instances: int = 1, warmup: bool = True
) -> list[list[int]]:
    """The batch sizes each instance of a served MLP predicted at while it was created."""
    model = gm.ModelBuilder((8,)).dense(3).build(seed=0)
    by_instance: dict[int, list[int]] = {}
    predict = type(model).predict

    def recording(self, x: np.ndarray, batch_size: int | None = None, **options) -> np.ndarray:
        by_instance.setdefault(id(self), []).append(batch_size)
        assert x.shape == (batch_size, 8) and x.dtype == np.float32
        return predict(self, x, batch_size=batch_size, **options)

    monkeypatch.setattr(type(model), "predict", recording)
    settings = {"max_batch_size": max_batch_size, "max_queue_delay_ms": 1.0,
                "instances": instances, "max_queue": 4}  # fmt: skip
    served = ServedVersion("mlp", 1, model, settings, ServingMetrics(max_batch_size),
                           warmup=warmup)  # fmt: skip
    served.close()
    monkeypatch.undo()
    # The first instance's calls are also timed (WARMUP_TIMED_CALLS more per size).
    calls = list(by_instance.values())
    if calls:
        first = calls[0]
        assert all(first.count(size) == 1 + WARMUP_TIMED_CALLS for size in set(first))
    return [list(dict.fromkeys(sizes)) for sizes in calls]


def test_the_plans_compiled_at_start_are_those_of_the_batch_sizes_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _recorded_warmup(monkeypatch, 64) == [[1, 2, 4, 8, 16, 32, 64]]
    assert _recorded_warmup(monkeypatch, 48) == [[1, 2, 4, 8, 16, 32, 48]]
    assert _recorded_warmup(monkeypatch, 1) == [[1]]
    # The engine keeps 8 plans per function: the 8 largest sizes.
    assert _recorded_warmup(monkeypatch, 1000) == [[8, 16, 32, 64, 128, 256, 512, 1000]]
    assert _recorded_warmup(monkeypatch, 4, instances=2) == [[1, 2, 4], [1, 2, 4]]
    assert _recorded_warmup(monkeypatch, 64, warmup=False) == []


def test_a_generator_admits_one_running_and_max_waiting_requests() -> None:
    generator = TextGenerator(model=None, tokenizer=None, max_waiting=2)
    for _ in range(3):
        generator.admit("gpt")
    assert generator.admitted() == 3
    with pytest.raises(ProtocolError) as refused:
        generator.admit("gpt")
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    assert "2 generate requests are waiting" in refused.value.message
    generator.release()
    generator.admit("gpt")
    assert generator.admitted() == 3
    with pytest.raises(ValueError, match="max_waiting"):
        TextGenerator(model=None, tokenizer=None, max_waiting=0)
