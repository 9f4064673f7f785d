"""Trainer checkpoints: exact resume in a fresh process, atomic saves under SIGKILL, and
rejection of truncated, corrupted, foreign and mismatching files.

References: an uninterrupted run in this process (compared bit for bit), the file read
back with ``safetensors``'s own reader, and files crafted byte by byte.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import gometal as gm
from checkpoint_models import image_cnn_trunk
from checkpoint_worker import (
    THREADS,
    fill_state,
    fit_arrays,
    hammer_trainer,
    make_batches,
    train_epochs,
    write_png_folder,
)
from gometal.io.serialization.container import read_container, write_container
from gometal.serialization import CheckpointError

WORKER = Path(__file__).with_name("checkpoint_worker.py")


@pytest.fixture
def two_threads():
    previous = gm.get_num_threads()
    gm.set_num_threads(THREADS)
    yield
    gm.set_num_threads(previous)


def _run_worker(*args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, str(WORKER), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _engine_state(trainer) -> dict[str, np.ndarray]:
    engine = trainer._engine
    return {name: np.asarray(engine.get_variable(name)) for name in engine.variable_names()}


def _assert_resumes_exactly(trainer, spec, epochs, tmp_path):
    """Trains ``epochs``, saves, trains ``epochs`` more here and in a fresh process."""
    batches = make_batches(spec)
    trainer.epoch = 0
    train_epochs(trainer, batches, epochs)
    checkpoint = tmp_path / "half.safetensors"
    trainer.save(checkpoint)
    expected_losses = train_epochs(trainer, batches, epochs)

    out = tmp_path / "resumed.safetensors"
    losses = json.loads(
        _run_worker("resume", str(checkpoint), str(out), json.dumps(spec), str(epochs))
    )
    assert losses == expected_losses  # every step's loss, to the last bit

    resumed = load_file(str(out))  # safetensors' own reader, not gometal's
    expected = _engine_state(trainer)
    assert set(resumed) == set(expected)
    for name, value in expected.items():
        assert resumed[name].dtype == np.float32 and resumed[name].shape == value.shape
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    reloaded = gm.Trainer.load(out)
    assert reloaded._engine.rng_step == trainer._engine.rng_step
    assert reloaded.learning_rate == trainer.learning_rate
    assert reloaded.epoch == 2 * epochs and reloaded.step == trainer.step
    return checkpoint, expected


def test_adam_cnn_with_dropout_batch_norm_and_shuffled_augmented_images_resumes_exactly(
    tmp_path, two_threads
):
    root = write_png_folder(tmp_path / "images")
    spec = {"kind": "images", "root": str(root), "batch_size": 6, "seed": 3}
    model = image_cnn_trunk().dense(16).relu().dropout(0.3).dense(2).build(seed=1)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-2), batch_size=6)
    checkpoint, expected = _assert_resumes_exactly(trainer, spec, 2, tmp_path)

    # Control: the same resume with the generator rewound draws other dropout masks, so
    # the comparison above is sensitive to the restored generator state.
    rewound = gm.Trainer.load(checkpoint)
    rewound._engine.rng_step = 0
    train_epochs(rewound, make_batches(spec), 2)
    got = _engine_state(rewound)
    assert not np.array_equal(got["dense_1.weight"], expected["dense_1.weight"])


def test_sgd_nesterov_momentum_with_batch_norm_and_dropout_resumes_exactly(tmp_path, two_threads):
    spec = {"kind": "arrays", "n": 40, "features": 10, "classes": 3, "batch_size": 8, "seed": 5}
    model = gm.ModelBuilder((10,)).dense(16).batch_norm().relu().dropout(0.5).dense(3).build(2)
    optimizer = gm.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=8)
    _, state = _assert_resumes_exactly(trainer, spec, 2, tmp_path)
    assert np.abs(state["dense_0.weight.momentum_buffer"]).max() > 0


def test_a_step_scheduler_resumes_where_it_stopped(tmp_path, two_threads):
    spec = {"kind": "arrays", "n": 24, "features": 6, "classes": 2, "batch_size": 8, "seed": 8}
    model = gm.ModelBuilder((6,)).dense(8).relu().dropout(0.2).dense(2).build(seed=4)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(0.04), batch_size=8)
    trainer.scheduler = gm.schedulers.StepLR(trainer, step_size=1, gamma=0.5)
    checkpoint, _ = _assert_resumes_exactly(trainer, spec, 2, tmp_path)
    assert trainer.learning_rate == pytest.approx(0.04 * 0.5**4)

    restored = gm.Trainer.load(checkpoint)
    assert restored.learning_rate == pytest.approx(0.04 * 0.5**2)
    assert restored.scheduler.last_epoch == 2
    assert restored.scheduler.get_config() == trainer.scheduler.get_config()


def test_fit_with_validation_and_a_scheduler_resumes_exactly(tmp_path, two_threads):
    spec = {"kind": "arrays", "n": 48, "features": 6, "classes": 3, "batch_size": 8, "seed": 2}
    train, validation = fit_arrays(spec)
    model = gm.ModelBuilder((6,)).dense(12).batch_norm().relu().dropout(0.25).dense(3).build(6)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(0.03), batch_size=8)
    scheduler = gm.schedulers.StepLR(step_size=1, gamma=0.7)
    trainer.fit(train, 2, validation=validation, scheduler=scheduler, verbose=0)
    checkpoint = tmp_path / "half.safetensors"
    trainer.save(checkpoint)
    trainer.fit(train, 2, validation=validation, verbose=0)

    out = tmp_path / "resumed.safetensors"
    _run_worker("fit", str(checkpoint), str(out), json.dumps(spec), "2")
    resumed = load_file(str(out))
    for name, value in _engine_state(trainer).items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    reloaded = gm.Trainer.load(out)
    assert reloaded.epoch == 4 and reloaded.learning_rate == trainer.learning_rate
    assert reloaded.scheduler.last_epoch == 4
    # Every logged value but the wall time is the same, epoch by epoch.
    for key, values in trainer.history.history.items():
        if key != "time":
            assert reloaded.history.history[key] == values, key
    assert reloaded.history.epoch == [0, 1, 2, 3]


def test_history_and_user_metadata_travel_with_the_checkpoint(tmp_path):
    from gometal.train.history import History

    model = gm.ModelBuilder((4,)).dense(2).build(seed=0)
    trainer = gm.Trainer(model, loss="mse", optimizer="sgd", batch_size=2)
    trainer.history = History()
    trainer.history.record(0, {"loss": 0.5, "accuracy": 0.25})
    trainer.history.record(1, {"loss": 0.25, "accuracy": 0.75})
    trainer.epoch = 2
    trainer.save(tmp_path / "c.safetensors", metadata={"run": "a", "tags": [1, 2]})
    restored = gm.Trainer.load(tmp_path / "c.safetensors")
    assert restored.history == trainer.history and restored.epoch == 2
    meta = gm.serialization.read_metadata(tmp_path / "c.safetensors")
    assert meta["user"] == {"run": "a", "tags": [1, 2]}
    assert meta["gometal_version"] == gm.__version__ and meta["format"] == "gometal.checkpoint"


# -- atomic saves ----------------------------------------------------------------------------


def _wait_for_temporary(folder: Path, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(f != name for f in os.listdir(folder)):
        if time.monotonic() > deadline:
            pytest.fail("the worker never started a save")
        time.sleep(0.0005)


def test_a_save_killed_at_random_moments_leaves_the_previous_or_the_new_checkpoint(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "ckpt.safetensors"
    trainer = hammer_trainer()
    fill_state(trainer, 0)
    trainer.save(path, metadata={"index": 0})
    assert os.listdir(folder) == [path.name]  # a successful save leaves no temporary

    gen = np.random.default_rng(0)
    last, rounds_with_leftovers = 0, 0
    for round_index in range(10):
        with open(tmp_path / "worker.log", "w+") as log:
            worker = subprocess.Popen(
                [sys.executable, str(WORKER), "hammer", str(path), str(last + 1)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            ready = worker.stdout.readline().strip()
            if ready != "ready":
                worker.kill()
                log.seek(0)
                pytest.fail(f"the worker did not start: {log.read()}")
            if round_index % 2:
                # Aim at the write itself: wait for a temporary file, then kill soon after.
                _wait_for_temporary(folder, path.name)
                time.sleep(gen.uniform(0.0, 0.004))
            else:
                time.sleep(gen.uniform(0.0, 0.6))
            worker.send_signal(signal.SIGKILL)
            output, _ = worker.communicate(timeout=60)
        completed = [int(line) for line in output.split()]
        newest = completed[-1] if completed else last

        restored = gm.Trainer.load(path)
        index = gm.serialization.read_metadata(path)["user"]["index"]
        # The kill may land after the rename but before the worker reported the save.
        assert index in (newest, newest + 1)
        for name, value in _engine_state(restored).items():
            assert np.all(value == float(index)), name
        assert restored._engine.rng_step == index
        assert restored.learning_rate == pytest.approx(index * 1e-3)
        leftovers = [f for f in os.listdir(folder) if f != path.name]
        pattern = r"\.ckpt\.safetensors\.[0-9a-f]{12}\.tmp"
        assert all(re.fullmatch(pattern, f) for f in leftovers), leftovers
        rounds_with_leftovers += bool(leftovers)
        for name in leftovers:
            os.unlink(folder / name)
        last = index
    # Some kills landed mid-write: they left a partial temporary file behind.
    assert rounds_with_leftovers >= 1 and last > 0


# -- rejection -------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    model = gm.ModelBuilder((6,)).dense(8).batch_norm().relu().dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="adam", batch_size=4)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    trainer.train_batch(x, np.array([0, 1, 2, 0], np.int32))
    path = tmp_path / "good.safetensors"
    trainer.save(path)
    return path


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def test_truncated_files_are_rejected_at_every_cut(checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    header_end = 8 + _header_length(data)
    cuts = [0, 1, 7, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 3]
    cuts += [len(data) - 4, len(data) - 1]
    for cut in cuts:
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        for load in (gm.Trainer.load, gm.load_model):
            with pytest.raises(CheckpointError) as err:
                load(path)
            message = str(err.value)
            assert str(path) in message
            assert "byte(s)" in message or "truncated" in message or "not a valid" in message
    gm.Trainer.load(checkpoint)  # the intact file loads


def test_flipped_bytes_anywhere_are_rejected(checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    header_end = 8 + _header_length(data)
    gen = np.random.default_rng(0)
    in_header = sorted(set(range(0, header_end, 5)) | set(range(8)))
    in_tensors = gen.integers(header_end, len(data), 40).tolist()
    path = tmp_path / "flipped.safetensors"
    for position in in_header + in_tensors:
        for bit in (0x01, 0x40):
            corrupted = bytearray(data)
            corrupted[position] ^= bit
            path.write_bytes(bytes(corrupted))
            with pytest.raises(CheckpointError):
                gm.Trainer.load(path)


def test_a_go_metal_json_export_is_not_a_checkpoint(checkpoint, tmp_path):
    trainer = gm.Trainer.load(checkpoint)
    trainer.export_json(tmp_path / "export.json")
    for load in (gm.Trainer.load, gm.load_model):
        with pytest.raises(CheckpointError, match="looks like a JSON document"):
            load(tmp_path / "export.json")


class _TouchOnLoad:
    """Unpickling this creates a marker file: proof that a loader unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_is_never_unpickled(tmp_path):
    payload = pickle.dumps(_TouchOnLoad(tmp_path / "control"), protocol=4)
    pickle.loads(payload)  # control: unpickling this payload does create its marker
    assert (tmp_path / "control").exists()

    marker = tmp_path / "executed"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_TouchOnLoad(marker), protocol=4))
    for load in (gm.Trainer.load, gm.load_model):
        with pytest.raises(CheckpointError, match="looks like a Python pickle"):
            load(path)
    model = gm.ModelBuilder((3,)).dense(2).build(seed=0)
    with pytest.raises(CheckpointError):
        model.load_weights(path)
    assert not marker.exists()


def _raw_safetensors(header: dict, payload: bytes, declared_length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    length = len(text) if declared_length is None else declared_length
    return struct.pack("<Q", length) + text + payload


def test_absurd_sizes_in_the_header_are_rejected_without_allocating(tmp_path):
    metadata = {"gometal": json.dumps({"format": "gometal.checkpoint", "format_version": 1})}
    huge = 10**15
    cases = {
        "offsets_match_the_shape": {"dtype": "F32", "shape": [huge], "data_offsets": [0, 4 * huge]},
        "offsets_cover_the_file": {"dtype": "F32", "shape": [huge], "data_offsets": [0, 16]},
        "shape_overflows": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]},
    }
    for name, entry in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(_raw_safetensors({"__metadata__": metadata, "w": entry}, bytes(16)))
        with pytest.raises(CheckpointError, match="not a valid gometal file"):
            gm.Trainer.load(path)
    path = tmp_path / "header_length.safetensors"
    path.write_bytes(_raw_safetensors({"w": cases["offsets_cover_the_file"]}, bytes(16), 2**62))
    with pytest.raises(CheckpointError, match="not a valid gometal file"):
        gm.load_model(path)


def test_a_checkpoint_of_another_architecture_names_the_mismatching_tensors(checkpoint):
    wider = gm.ModelBuilder((6,)).dense(10).batch_norm().relu().dense(3).build(seed=0)
    with pytest.raises(CheckpointError) as err:
        wider.load_weights(checkpoint)
    message = str(err.value)
    for name, expected, found in [
        ("dense_0.weight", (10, 6), (8, 6)),
        ("batch_norm_0.running_var", (10,), (8,)),
        ("dense_1.weight", (3, 10), (3, 8)),
    ]:
        assert f"{name}: expected shape {expected}, found {found}" in message
    assert "dense_1.bias" not in message  # it fits


def test_forged_tensor_sets_name_every_missing_and_extra_tensor(checkpoint, tmp_path):
    document, tensors = read_container(checkpoint)
    tensors.pop("dense_0.weight.exp_avg_sq")
    tensors["dense_0.weight.unknown_slot"] = np.zeros((8, 6), np.float32)
    tensors["optimizer.step"] = np.zeros((2,), np.float32)
    write_container(tmp_path / "forged.safetensors", tensors, document)
    with pytest.raises(CheckpointError) as err:
        gm.Trainer.load(tmp_path / "forged.safetensors")
    message = str(err.value)
    assert "dense_0.weight.exp_avg_sq: missing from the file (expected shape (8, 6))" in message
    assert "dense_0.weight.unknown_slot: not in the trainer" in message
    assert "optimizer.step: expected shape (), found (2,)" in message


def test_wrong_formats_and_newer_versions_are_rejected(checkpoint, tmp_path):
    document, tensors = read_container(checkpoint)
    newer = {**document, "format_version": 7}
    write_container(tmp_path / "newer.safetensors", tensors, newer)
    with pytest.raises(CheckpointError, match=r"newer gometal \(format version 7\).*up to 1"):
        gm.Trainer.load(tmp_path / "newer.safetensors")
    other = {**document, "format": "someone.else"}
    write_container(tmp_path / "other.safetensors", tensors, other)
    with pytest.raises(CheckpointError, match=r"format 'someone.else'; expected"):
        gm.Trainer.load(tmp_path / "other.safetensors")

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(CheckpointError, match="not one gometal wrote"):
        gm.load_model(foreign)
    doubles = tmp_path / "doubles.safetensors"
    save_file({"w": np.zeros(3, np.float64)}, str(doubles), metadata={"gometal": "{}"})
    with pytest.raises(CheckpointError, match=r"float32 \(F32\) tensors only.*'w' \(F64\)"):
        gm.load_model(doubles)

    model_file = tmp_path / "model.safetensors"
    gm.load_model(checkpoint).save(model_file)
    with pytest.raises(CheckpointError, match="without training state.*gm.load_model"):
        gm.Trainer.load(model_file)
    with pytest.raises(CheckpointError, match="is a folder"):
        gm.Trainer.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        gm.Trainer.load(tmp_path / "absent.safetensors")


def test_lbfgs_memory_is_saved_and_resumes_exactly(tmp_path, two_threads):
    # L-BFGS keeps its curvature pairs on the host: a resume without them would take a
    # plain gradient step first and diverge from the uninterrupted run.
    spec = {"kind": "arrays", "n": 32, "features": 5, "classes": 3, "batch_size": 16, "seed": 9}
    model = gm.ModelBuilder((5,)).dense(8).tanh().dense(3).build(seed=3)
    optimizer = gm.optim.LBFGS(lr=0.5, max_iter=4, history_size=3, line_search_fn="strong_wolfe")
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=16)
    batches = make_batches(spec)
    train_epochs(trainer, batches, 2)
    checkpoint = tmp_path / "half.safetensors"
    trainer.save(checkpoint)
    assert any(name.startswith("host_optimizer.steps.") for name in load_file(str(checkpoint)))
    expected_losses = train_epochs(trainer, batches, 2)

    out = tmp_path / "resumed.safetensors"
    losses = json.loads(_run_worker("resume", str(checkpoint), str(out), json.dumps(spec), "2"))
    assert losses == expected_losses
    resumed = load_file(str(out))
    for name, value in _engine_state(trainer).items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)

    # Control: the same resume with the memory dropped gives other losses.
    forgetful = gm.Trainer.load(checkpoint)
    forgetful._host_optimizer.memory = type(forgetful._host_optimizer.memory)()
    assert train_epochs(forgetful, make_batches(spec), 2) != expected_losses
