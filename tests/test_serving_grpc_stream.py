"""``gometal serve``'s ``ModelStreamInfer`` with Triton's own client (``start_stream``,
``async_stream_infer``): every answer of a stream equals offline ``model.predict`` for its
request id, requests of one stream join the same batches, a refused request answers an
error and the stream goes on, and a stream without the API key is refused."""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from serving_helpers import (
    ServerProcess,
    batch_histogram,
    offline,
    running_server,
    write_repository,
)

RTOL, ATOL = 1e-5, 1e-6
ANSWER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repository"), ("mlp", "cnn"))


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from running_server(repository, tmp_path_factory.mktemp("logs"))


def _stream(url: str, requests: list[tuple[str, str, np.ndarray]], **start) -> dict:
    """Sends ``(id, model, x)`` requests on one stream; returns id -> answer or error."""
    client = triton.InferenceServerClient(url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), **start)
    try:
        sent = 0
        for request_id, model, x in requests:
            tensor = triton.InferInput("input", list(x.shape), "FP32").set_data_from_numpy(x)
            try:
                client.async_stream_infer(model, [tensor], request_id=request_id)
            except InferenceServerException:
                break  # the server ended the stream (refused it): the reason reaches the callback
            sent += 1
        received = [answers.get(timeout=ANSWER_TIMEOUT_S) for _ in range(max(sent, 1))]
    finally:
        client.stop_stream()
        client.close()
    by_id = {}
    for result, error in received:
        if error is not None:
            by_id[f"error {len(by_id)}"] = error
        else:
            by_id[result.get_response().id] = result
    return by_id


def _output(result) -> np.ndarray:
    return result.as_numpy(result.get_response().outputs[0].name)


def test_stream_answers_equal_offline_predict_by_request_id(
    server: ServerProcess, repository: Path
) -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((40, 1, 8)).astype(np.float32)
    images = rng.random((6, 1, 3, 16, 16), dtype=np.float32)
    requests = [(f"mlp-{i}", "mlp", x) for i, x in enumerate(rows)]
    requests += [(f"cnn-{i}", "cnn", x) for i, x in enumerate(images)]
    batches_before, _ = batch_histogram(server.base, "mlp")
    answers = _stream(server.grpc_url, requests)
    assert sorted(answers) == sorted(request_id for request_id, _, _ in requests)
    mlp = np.concatenate([_output(answers[f"mlp-{i}"]) for i in range(len(rows))])
    np.testing.assert_allclose(mlp, offline(repository, "mlp", 2, rows[:, 0]), rtol=RTOL, atol=ATOL)
    cnn = np.concatenate([_output(answers[f"cnn-{i}"]) for i in range(len(images))])
    np.testing.assert_allclose(
        cnn, offline(repository, "cnn", 1, images[:, 0]), rtol=RTOL, atol=ATOL
    )
    batches, _ = batch_histogram(server.base, "mlp")
    assert batches - batches_before < len(rows), "the stream's requests were never merged"


def test_a_refused_request_answers_an_error_and_the_stream_goes_on(
    server: ServerProcess, repository: Path
) -> None:
    x = np.ones((1, 8), np.float32)
    requests = [("good-0", "mlp", x), ("unknown", "no_such_model", x),
                ("wrong shape", "mlp", np.ones((1, 7), np.float32)),
                ("not finite", "mlp", np.full((1, 8), np.nan, np.float32)), ("good-1", "mlp", x)]  # fmt: skip
    answers = _stream(server.grpc_url, requests)
    errors = sorted(str(e) for key, e in answers.items() if key.startswith("error"))
    assert len(errors) == 3, errors
    assert any("unknown model" in e for e in errors), errors
    assert any("shape [-1, 8]" in e for e in errors), errors
    assert any("NaN" in e for e in errors), errors
    expected = offline(repository, "mlp", 2, x)
    for request_id in ("good-0", "good-1"):
        np.testing.assert_allclose(_output(answers[request_id]), expected, rtol=RTOL, atol=ATOL)


def test_a_stream_without_the_api_key_is_refused(repository: Path, tmp_path: Path) -> None:
    process = ServerProcess(repository, tmp_path, "--api-key", "s3cret")
    try:
        process.wait_live(headers={"Authorization": "Bearer s3cret"})
        x = np.ones((1, 8), np.float32)
        refused = _stream(process.grpc_url, [("0", "mlp", x)])
        (error,) = refused.values()
        assert isinstance(error, InferenceServerException) and "API key" in str(error)
        allowed = _stream(process.grpc_url, [("0", "mlp", x)],
                          headers={"authorization": "Bearer s3cret"})  # fmt: skip
        np.testing.assert_allclose(
            _output(allowed["0"]), offline(repository, "mlp", 2, x), rtol=RTOL, atol=ATOL
        )
    finally:
        assert process.stop() == 0, process.stderr()
