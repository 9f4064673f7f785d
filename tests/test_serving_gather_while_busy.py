"""The batcher's ``gather_while_busy``: while one instance computes, a free instance waits
for as many rows as that instance's batch (or for it to finish) instead of running a single
row at once; a lone request on an idle server still runs at once; the setting reaches the
batcher from a model's config.json, and real tritonclient requests get offline predict's
answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

import gometal as gm
from gometal.serving import DynamicBatcher, ModelRepository
from gometal.serving.app import ServerSettings
from serving_helpers import (
    ANSWER_TIMEOUT_S,
    GatedRunner,
    ServerProcess,
    batch_histogram,
    gated_rows,
    offline,
    write_repository,
)

# Far longer than any test waits for an answer: a request answered at all did not wait it.
LONG_DELAY_MS = 600_000.0
RTOL, ATOL = 1e-5, 1e-6


def _gathering_batcher(runner: GatedRunner) -> DynamicBatcher:
    return DynamicBatcher([runner, runner], max_batch_size=8, max_queue_delay_s=0.0,
                          max_queue=16, start_when_idle=True, gather_while_busy=True)  # fmt: skip


def test_a_free_instance_gathers_as_many_rows_as_the_busy_ones_batch() -> None:
    runner = GatedRunner()
    batcher = _gathering_batcher(runner)
    try:
        busy = batcher.submit(gated_rows(1.0, rows=3))
        assert runner.first_started.wait(ANSWER_TIMEOUT_S)
        early = [batcher.submit(gated_rows(value)) for value in (2.0, 3.0)]
        time.sleep(0.1)  # two rows of the three the busy instance holds: the other waits
        assert not any(future.done() for future in early)
        last = batcher.submit(gated_rows(4.0))
        answers = [future.result(ANSWER_TIMEOUT_S)[0] for future in (*early, last)]
        assert not busy.done(), "the merged batch ran while the first instance computed"
        runner.release.set()
        busy.result(ANSWER_TIMEOUT_S)
    finally:
        runner.release.set()
        batcher.close()
    assert runner.sizes == [3, 3]
    for value, answer in zip((2.0, 3.0, 4.0), answers):
        np.testing.assert_array_equal(answer, np.full((1, 2), 2 * value, np.float32))


def test_the_busy_instance_finishing_ends_the_wait() -> None:
    runner = GatedRunner()
    batcher = _gathering_batcher(runner)
    try:
        busy = batcher.submit(gated_rows(1.0, rows=4))
        assert runner.first_started.wait(ANSWER_TIMEOUT_S)
        lone = batcher.submit(gated_rows(5.0))
        time.sleep(0.1)
        assert not lone.done()
        runner.release.set()
        (answer,) = lone.result(ANSWER_TIMEOUT_S)
        busy.result(ANSWER_TIMEOUT_S)
    finally:
        runner.release.set()
        batcher.close()
    assert runner.sizes == [4, 1]
    np.testing.assert_array_equal(answer, np.full((1, 2), 10.0, np.float32))


def test_a_lone_request_on_an_idle_batcher_runs_at_once() -> None:
    runner = GatedRunner()
    runner.release.set()
    batcher = DynamicBatcher([runner, runner], max_batch_size=8,
                             max_queue_delay_s=LONG_DELAY_MS / 1e3, max_queue=8,
                             start_when_idle=True, gather_while_busy=True)  # fmt: skip
    try:
        answers = [batcher.submit(gated_rows(v)).result(ANSWER_TIMEOUT_S)[0] for v in (1.0, 2.0)]
    finally:
        batcher.close()
    assert runner.sizes == [1, 1]
    assert [float(a[0, 0]) for a in answers] == [2.0, 4.0]


def test_config_json_and_server_settings_take_it_as_a_bool(tmp_path: Path) -> None:
    for name, config in (("off", {"gather_while_busy": False}), ("bad", {"gather_while_busy": 1})):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.safetensors").write_bytes(b"ok")
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    repo = ModelRepository(tmp_path, loader=lambda path: "model")
    defaults = ServerSettings().batching()
    assert defaults["gather_while_busy"] is ServerSettings.gather_while_busy
    assert repo.settings("off", defaults) == {**defaults, "gather_while_busy": False}
    assert "'gather_while_busy' must be true or false, got 1" in repo.find("bad").error
    with pytest.raises(ValueError, match="gather_while_busy must be a bool, got 'yes'"):
        ServerSettings(gather_while_busy="yes")


def _wide_model() -> gm.Model:
    """An MLP whose batch of 64 rows takes a pass long enough for requests to queue behind it."""
    builder = gm.ModelBuilder((1024,))
    for _ in range(3):
        builder = builder.dense(2048).relu()
    return builder.dense(2).build(seed=3)


def test_tritonclient_answers_equal_offline_predict_with_gathering(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "repository", ("cnn",))
    (repository / "wide" / "1").mkdir(parents=True)
    _wide_model().save(repository / "wide" / "1" / "model.safetensors")
    # cnn: a lone request must not wait out the (endless) delay. wide: no delay, so that
    # only gathering behind a busy instance merges the single rows sent during its pass.
    configs = {"cnn": {}, "wide": {"max_queue_delay_ms": 0}}
    for name, config in configs.items():
        config = {**config, "gather_while_busy": True}
        (repository / name / "config.json").write_text(json.dumps(config))
    process = ServerProcess(repository, tmp_path, "--instances", "2",
                            "--max-queue-delay-ms", str(LONG_DELAY_MS))  # fmt: skip
    try:
        process.wait_live()
        client = triton.InferenceServerClient(process.url, concurrency=16,
                                              network_timeout=ANSWER_TIMEOUT_S)  # fmt: skip
        x = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        lone = client.infer("cnn", [tensor]).as_numpy("dense_0")
        np.testing.assert_allclose(lone, offline(repository, "cnn", 1, x), rtol=RTOL, atol=ATOL)

        # One request of 64 rows keeps an instance busy while 32 single rows come in.
        inputs = np.random.default_rng(1).standard_normal((96, 1024), dtype=np.float32)
        pending = []
        for request in [inputs[:64], *np.split(inputs[64:], 32)]:
            tensor = triton.InferInput("input", list(request.shape), "FP32")
            tensor.set_data_from_numpy(request)
            pending.append(client.async_infer("wide", [tensor]))
        answers = np.concatenate([p.get_result().as_numpy("dense_3") for p in pending])
        expected = offline(repository, "wide", 1, inputs)
        np.testing.assert_allclose(answers, expected, rtol=RTOL, atol=ATOL)
        # Every row computed once. Whether the single rows arrive during the 64-row pass depends
        # on the machine's speed, so merging itself is checked by the gated batcher tests above.
        batches, rows = batch_histogram(process.base, "wide")
        assert rows == len(inputs)
        assert batches <= len(pending)
    finally:
        assert process.stop() == 0, process.stderr()
