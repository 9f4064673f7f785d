"""The inference server's parts without a server: the model repository (layout, single
files, config.json, names that cannot escape, models that fail to load), the dynamic
batcher (merging, its delay, the bounded queue, instances, draining), the protocol's
binary tensor decoding against NumPy's own bytes, and a request's checks against the
model's signature."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import gometal as gm
from gometal.serving import DynamicBatcher, ModelRepository, QueueFull, RepositoryError
from gometal.serving.batcher import BatcherClosed
from gometal.serving.metrics import ServingMetrics
from gometal.serving.protocol import (
    ProtocolError,
    encode_infer_response,
    parse_infer_request,
)
from gometal.serving.served_model import ServedVersion, padded_rows


def _fake_loader(path: Path) -> str:
    if path.read_bytes() == b"bad":
        raise ValueError("not a model")
    return f"model from {path.name}"


def _model_file(folder: Path, name: str = "model.safetensors", content: bytes = b"ok") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder / name


def test_repository_layout_versions_and_a_model_that_fails_to_load(tmp_path: Path) -> None:
    _model_file(tmp_path / "a" / "1")
    _model_file(tmp_path / "a" / "3", "model.onnx")
    _model_file(tmp_path / "b" / "1", content=b"bad")
    (tmp_path / "c" / "notes").mkdir(parents=True)
    repo = ModelRepository(tmp_path, loader=_fake_loader)
    assert sorted(repo.models) == ["a", "b", "c"]
    assert sorted(repo.find("a").versions) == [1, 3]
    assert repo.find("a").latest.version == 3 and repo.find("a").latest.model.endswith(".onnx")
    assert not repo.find("b").latest.ready and "not a model" in repo.find("b").latest.error
    assert "no version folder" in repo.find("c").error
    states = {(r["name"], r["version"]): r["state"] for r in repo.index()}
    assert states == {("a", "1"): "READY", ("a", "3"): "READY", ("b", "1"): "UNAVAILABLE",
                      ("c", ""): "UNAVAILABLE"}  # fmt: skip


def test_a_single_model_file_or_run_folder_is_a_repository_of_one(tmp_path: Path) -> None:
    file = _model_file(tmp_path / "run")
    for target in (file, tmp_path / "run"):
        repo = ModelRepository(target, loader=_fake_loader)
        assert list(repo.models) == ["run"] and repo.find("run").latest.ready
    named = _model_file(tmp_path, "digits.onnx")
    assert list(ModelRepository(named, loader=_fake_loader).models) == ["digits"]


def test_a_missing_or_empty_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        ModelRepository(tmp_path / "missing")
    with pytest.raises(RepositoryError, match="holds no model"):
        ModelRepository(tmp_path)


def test_links_out_of_the_repository_are_not_served(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _model_file(outside / "1")
    repo_dir = tmp_path / "repo"
    _model_file(repo_dir / "good" / "1")
    (repo_dir / "escape").symlink_to(outside, target_is_directory=True)
    (repo_dir / "linked" / "1").mkdir(parents=True)
    (repo_dir / "linked" / "1" / "model.safetensors").symlink_to(
        outside / "1" / "model.safetensors"
    )
    repo = ModelRepository(repo_dir, loader=_fake_loader)
    assert repo.find("good").latest.ready
    assert "outside" in repo.find("escape").error
    assert "outside" in repo.find("linked").latest.error
    assert repo.find("..") is None and repo.find("../outside") is None


def test_config_json_overrides_batching_and_bad_configs_are_reported(tmp_path: Path) -> None:
    _model_file(tmp_path / "a" / "1")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"max_batch_size": 4}))
    _model_file(tmp_path / "b" / "1")
    (tmp_path / "b" / "config.json").write_text(json.dumps({"max_batch": 4}))
    _model_file(tmp_path / "c" / "1")
    (tmp_path / "c" / "config.json").write_text(json.dumps({"instances": 0}))
    repo = ModelRepository(tmp_path, loader=_fake_loader)
    defaults = {"max_batch_size": 64, "max_queue_delay_ms": 2, "instances": 1, "max_queue": 8}
    assert repo.settings("a", defaults) == {**defaults, "max_batch_size": 4}
    assert "unknown keys ['max_batch']" in repo.find("b").error
    assert "'instances' must be an int >= 1, got 0" in repo.find("c").error


def test_padded_rows_are_powers_of_two_capped_by_max_batch_size() -> None:
    assert [padded_rows(n, 48) for n in (1, 2, 3, 5, 17, 33, 48)] == [1, 2, 4, 8, 32, 48, 48]


class _Recorder:
    """A runner that doubles its input and records the batch sizes it ran."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.sizes.append(len(inputs[0]))
        time.sleep(self.delay_s)
        with self.lock:
            self.running -= 1
        return [inputs[0] * 2]


def test_requests_queued_together_are_merged_and_split_back_in_order() -> None:
    runner = _Recorder()
    batcher = DynamicBatcher([runner], max_batch_size=8, max_queue_delay_s=0.2, max_queue=64)
    try:
        rows = [np.full((n, 2), i, np.float32) for i, n in enumerate([1, 2, 3, 2, 1])]
        futures = [batcher.submit([x]) for x in rows]
        results = [f.result(10)[0] for f in futures]
    finally:
        batcher.close()
    for x, result in zip(rows, results):
        np.testing.assert_array_equal(result, x * 2)
    assert runner.sizes == [8, 1]  # 1+2+3+2 fill a batch of 8; the last waits its delay


def test_a_lone_request_waits_at_most_the_queue_delay() -> None:
    runner = _Recorder()
    batcher = DynamicBatcher([runner], max_batch_size=64, max_queue_delay_s=0.05, max_queue=4)
    try:
        started = time.perf_counter()
        batcher.submit([np.ones((1, 2), np.float32)]).result(10)
        waited = time.perf_counter() - started
    finally:
        batcher.close()
    assert runner.sizes == [1]
    assert waited >= 0.05


def test_the_queue_is_bounded_and_close_finishes_what_it_took() -> None:
    runner = _Recorder(delay_s=0.2)
    batcher = DynamicBatcher([runner], max_batch_size=1, max_queue_delay_s=0, max_queue=2)
    first = batcher.submit([np.ones((1, 2), np.float32)])
    while batcher.depth:  # the instance takes the first request; two more fill the queue
        time.sleep(0.001)
    queued = [batcher.submit([np.full((1, 2), k, np.float32)]) for k in (2, 3)]
    with pytest.raises(QueueFull):
        batcher.submit([np.ones((1, 2), np.float32)])
    batcher.close()
    assert all(f.done() for f in [first, *queued])
    assert [float(f.result()[0][0, 0]) for f in queued] == [4.0, 6.0]
    with pytest.raises(BatcherClosed):
        batcher.submit([np.ones((1, 2), np.float32)])


def test_instances_compute_concurrently() -> None:
    runner = _Recorder(delay_s=0.1)
    batcher = DynamicBatcher([runner, runner], max_batch_size=1, max_queue_delay_s=0, max_queue=8)
    try:
        futures = [batcher.submit([np.ones((1, 2), np.float32)]) for _ in range(4)]
        [f.result(10) for f in futures]
    finally:
        batcher.close()
    assert runner.most_at_once == 2


def test_a_failing_batch_fails_each_of_its_requests() -> None:
    def broken(inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise RuntimeError("engine failed")

    batcher = DynamicBatcher([broken], max_batch_size=4, max_queue_delay_s=0, max_queue=4)
    try:
        with pytest.raises(RuntimeError, match="engine failed"):
            batcher.submit([np.ones((1, 2), np.float32)]).result(10)
    finally:
        batcher.close()


def test_binary_inputs_decode_to_the_bytes_numpy_wrote() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([[1, -2]], dtype=np.int64)
    header = {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
        {"name": "ids", "datatype": "INT64", "shape": [1, 2], "parameters": {"binary_data_size": 16}},
    ], "parameters": {"binary_data_output": True}}  # fmt: skip
    text = json.dumps(header).encode()
    request = parse_infer_request(text + x.tobytes() + ids.tobytes(), str(len(text)))
    np.testing.assert_array_equal(request.inputs[0].array, x)
    np.testing.assert_array_equal(request.inputs[1].array, ids)
    body, headers = encode_infer_response("m", 1, request, [("y", x * 2)])
    size = int(headers["Inference-Header-Content-Length"])
    answer = json.loads(body[:size])
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 24}
    np.testing.assert_array_equal(np.frombuffer(body[size:], np.float32).reshape(2, 3), x * 2)


def test_integer_data_out_of_its_datatype_range_is_refused() -> None:
    body = {"inputs": [{"name": "t", "datatype": "INT32", "shape": [1], "data": [2**31]}]}
    with pytest.raises(ProtocolError, match=r"must lie in \[-2147483648, 2147483647\]"):
        parse_infer_request(json.dumps(body).encode(), None)


def _checked(served, inputs: list[dict], **extra: object):
    """What ``check_request`` makes of a JSON request: its arrays, or the 400's message."""
    request = parse_infer_request(json.dumps({"inputs": inputs, **extra}).encode(), None)
    try:
        arrays = served.check_request(request)
    except ProtocolError as err:
        assert err.status == 400
        return err.message
    assert all(a is t.array for a, t in zip(arrays, request.inputs))  # no copy
    return [a.shape for a in arrays]


def test_every_input_is_checked_against_the_models_signature() -> None:
    model = gm.ModelBuilder((8,)).dense(3).build(seed=0)
    settings = {"max_batch_size": 4, "max_queue_delay_ms": 1.0, "instances": 1, "max_queue": 4}
    served = ServedVersion("mlp", 1, model, settings, ServingMetrics(4), warmup=False)
    output = served.output_names[0]

    def tensor(shape: list[int], name: str = "input", datatype: str = "FP32") -> dict:
        return {"name": name, "datatype": datatype, "shape": shape,
                "data": [0] * int(np.prod(shape))}  # fmt: skip

    try:
        assert _checked(served, [tensor([2, 8])]) == [(2, 8)]
        assert _checked(served, [tensor([4, 8])], outputs=[{"name": output}]) == [(4, 8)]
        assert "takes inputs ['input']; missing ['input'], unknown ['x']" in _checked(
            served, [tensor([2, 8], name="x")]
        )
        assert "unknown ['x']" in _checked(served, [tensor([2, 8]), tensor([2, 8], name="x")])
        assert "expects datatype FP32, got INT32" in _checked(
            served, [tensor([2, 8], datatype="INT32")]
        )
        assert "expects shape [-1, 8], got [2, 7]" in _checked(served, [tensor([2, 7])])
        assert "expects shape [-1, 8], got [8]" in _checked(served, [tensor([8])])
        assert "expects shape [-1, 8], got [2, 8, 1]" in _checked(served, [tensor([2, 8, 1])])
        assert "1 to 4 rows (max_batch_size), got 5" in _checked(served, [tensor([5, 8])])
        assert "1 to 4 rows (max_batch_size), got 0" in _checked(served, [tensor([0, 8])])
        assert "unknown requested outputs ['nope']" in _checked(
            served, [tensor([2, 8])], outputs=[{"name": "nope"}]
        )
    finally:
        served.close()
