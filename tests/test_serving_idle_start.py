"""The batcher's ``start_when_idle``: a free instance runs a request alone in the queue at once
instead of waiting the queue delay for others, while requests that queue up during a pass still
merge and wait for company; the setting from the server's options and a model's config.json."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gometal.serving import DynamicBatcher, ModelRepository
from gometal.serving.app import ServerSettings
from gometal.serving.metrics import ServingMetrics
from gometal.serving.served_model import ServedVersion
from serving_helpers import ANSWER_TIMEOUT_S, GatedRunner, cnn_model, gated_rows

# Far longer than any test waits for an answer: a request answered at all did not wait it.
LONG_DELAY_S = 600.0


def test_a_lone_request_runs_at_once_on_a_free_instance() -> None:
    runner = GatedRunner()
    runner.release.set()
    batcher = DynamicBatcher([runner], max_batch_size=64, max_queue_delay_s=LONG_DELAY_S,
                             max_queue=8, start_when_idle=True)  # fmt: skip
    try:
        (answer,) = batcher.submit(gated_rows(3.0)).result(ANSWER_TIMEOUT_S)
    finally:
        batcher.close()
    np.testing.assert_array_equal(answer, np.full((1, 2), 6.0, np.float32))
    assert runner.sizes == [1]


def test_requests_queued_during_a_pass_merge_and_wait_for_a_full_batch() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher([runner], max_batch_size=4, max_queue_delay_s=LONG_DELAY_S,
                             max_queue=8, start_when_idle=True)  # fmt: skip
    try:
        first = batcher.submit(gated_rows(1.0))
        assert runner.first_started.wait(ANSWER_TIMEOUT_S)
        queued = [batcher.submit(gated_rows(value)) for value in (2.0, 3.0)]
        runner.release.set()
        first.result(ANSWER_TIMEOUT_S)
        # The instance is free again and finds two requests: it waits for more, not runs them.
        time.sleep(0.1)
        assert not any(future.done() for future in queued)
        queued += [batcher.submit(gated_rows(value)) for value in (4.0, 5.0)]
        answers = [future.result(ANSWER_TIMEOUT_S)[0] for future in queued]
    finally:
        batcher.close()
    assert runner.sizes == [1, 4]
    for value, answer in zip((2.0, 3.0, 4.0, 5.0), answers):
        np.testing.assert_array_equal(answer, np.full((1, 2), 2 * value, np.float32))


def test_without_it_a_lone_request_waits_for_company() -> None:
    runner = GatedRunner()
    runner.release.set()
    batcher = DynamicBatcher([runner], max_batch_size=2, max_queue_delay_s=LONG_DELAY_S,
                             max_queue=8)  # fmt: skip
    try:
        lone = batcher.submit(gated_rows(1.0))
        time.sleep(0.1)
        assert not lone.done()
        company = batcher.submit(gated_rows(2.0))
        answers = [lone.result(ANSWER_TIMEOUT_S)[0], company.result(ANSWER_TIMEOUT_S)[0]]
    finally:
        batcher.close()
    assert runner.sizes == [2]
    assert [float(a[0, 0]) for a in answers] == [2.0, 4.0]


def test_a_served_model_with_it_answers_as_offline_predict() -> None:
    model = cnn_model()
    settings = {"max_batch_size": 8, "max_queue_delay_ms": LONG_DELAY_S * 1e3, "instances": 1,
                "max_queue": 8, "start_when_idle": True}  # fmt: skip
    served = ServedVersion("cnn", 1, model, settings, ServingMetrics(8))
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16), dtype=np.float32)
    try:
        (outputs,) = served.batcher.submit([x]).result(ANSWER_TIMEOUT_S)
    finally:
        served.close()
    np.testing.assert_allclose(outputs, model.predict(x), rtol=1e-5, atol=1e-6)


def test_config_json_and_server_settings_take_it_as_a_bool(tmp_path: Path) -> None:
    for name, config in (("on", {"start_when_idle": True}), ("bad", {"start_when_idle": 1})):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.safetensors").write_bytes(b"ok")
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    repo = ModelRepository(tmp_path, loader=lambda path: "model")
    defaults = ServerSettings().batching()
    assert defaults["start_when_idle"] is ServerSettings.start_when_idle
    assert repo.settings("on", defaults) == {**defaults, "start_when_idle": True}
    assert "'start_when_idle' must be true or false, got 1" in repo.find("bad").error
    with pytest.raises(ValueError, match="start_when_idle must be a bool, got 'yes'"):
        ServerSettings(start_when_idle="yes")


def test_each_free_instance_takes_a_lone_request_at_once() -> None:
    # Both instances block in their first call until both have started: a second request
    # that waited for company (the 600 s delay) would leave the first blocked past the test.
    both_running = threading.Barrier(2, timeout=ANSWER_TIMEOUT_S)

    def runner(inputs: list[np.ndarray]) -> list[np.ndarray]:
        both_running.wait()
        return [inputs[0] * 2]

    batcher = DynamicBatcher([runner, runner], max_batch_size=8, max_queue_delay_s=LONG_DELAY_S,
                             max_queue=8, start_when_idle=True)  # fmt: skip
    try:
        first = batcher.submit(gated_rows(1.0))
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while batcher.depth and time.monotonic() < deadline:  # an instance takes it
            time.sleep(0.001)
        assert not batcher.depth, "a lone request waited for company"
        second = batcher.submit(gated_rows(2.0))
        answers = [first.result(ANSWER_TIMEOUT_S)[0], second.result(ANSWER_TIMEOUT_S)[0]]
    finally:
        batcher.close()
    assert [float(a[0, 0]) for a in answers] == [2.0, 4.0]
