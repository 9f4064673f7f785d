"""Hostile checkpoints: forged documents (with their checksum recomputed), non-finite
tensors and files that are not regular files all end in ``CheckpointError``.

References: files forged with ``safetensors``' own writer and a checksum computed
without gometal (``checkpoint_forge``), NumPy's ``isnan``/``isfinite`` for the tensors
that are named, the shipped JSON Schema run through ``jsonschema`` itself, and a
subprocess with a timeout for files that could block a reader.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import gometal as gm
from checkpoint_forge import edited, layer_config, read_parts, write_forged
from checkpoint_models import cnn_trainer
from gometal.io.serialization.document import MAX_DOCUMENT_CHARS, MAX_NESTING_DEPTH
from gometal.serialization import CheckpointError

L = gm.layers


@pytest.fixture
def cnn_checkpoint(tmp_path) -> Path:
    path = tmp_path / "cnn.safetensors"
    cnn_trainer().save(path, metadata={"run": "hostile"})
    return path


@pytest.fixture
def lbfgs_checkpoint(tmp_path) -> Path:
    model = gm.ModelBuilder((5,)).dense(4).tanh().dense(3).build(seed=3)
    optimizer = gm.optim.LBFGS(lr=0.5, max_iter=3, history_size=2)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=8)
    gen = np.random.default_rng(1)
    for _ in range(2):
        x = gen.standard_normal((8, 5)).astype(np.float32)
        trainer.train_batch(x, gen.integers(0, 3, 8).astype(np.int32))
    path = tmp_path / "lbfgs.safetensors"
    trainer.save(path)
    return path


def _every_layer_model() -> gm.Model:
    """One model with every built-in layer class, most arguments away from defaults."""
    x = gm.Input((3, 8, 8))
    h = L.LeakyReLU(0.2)(L.BatchNorm(momentum=0.3, eps=1e-4)(L.Conv2D(4, 3, padding="same")(x)))
    h = L.MaxPool2D(2, stride=(2, 1), padding=(1, 0))(h)
    a = L.ELU(0.5)(L.Conv2D(4, (3, 1), padding=(1, 0), groups=2, use_bias=False)(h))
    b = L.Sigmoid()(L.AvgPool2D(3, stride=1, padding=1)(h))
    merged = L.Multiply()([L.Add()([a, b]), L.Tanh()(a)])
    c = L.Concatenate(axis=1)([merged, L.Swish()(b)])
    d = L.Conv2D(2, 2, stride=2, dilation=(1, 2), padding="valid")(c)
    d = L.Dropout(0.25)(L.GELU()(L.Dense(6)(L.Flatten()(d))))
    g = L.ReLU()(L.Dense(6, use_bias=False)(L.GlobalAvgPool2D()(c)))
    return gm.Model(x, L.Softmax(axis=-1)(L.Add()([d, g])), seed=11)


def _refusal(load, path) -> str:
    with pytest.raises(CheckpointError) as err:
        load(path)
    return str(err.value)


# -- the shipped schema --------------------------------------------------------------------


def _shipped_schema() -> dict:
    text = resources.files("gometal.serialization").joinpath("checkpoint_schema.json").read_text()
    return json.loads(text)


def test_every_file_gometal_writes_fits_the_shipped_schema(
    cnn_checkpoint, lbfgs_checkpoint, tmp_path
):
    schema = _shipped_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    model_file = tmp_path / "every_layer.safetensors"
    _every_layer_model().save(model_file, metadata={"nested": {"list": [1, [2, {"a": None}]]}})
    mixed = tmp_path / "mixed.safetensors"
    model = gm.ModelBuilder((6,)).dense(4).relu().dense(2).build(seed=0)
    gm.Trainer(
        model, loss="mse", optimizer="sgd", batch_size=2, mixed_precision="bf16-emulated"
    ).save(mixed)
    for path in (cnn_checkpoint, lbfgs_checkpoint, model_file, mixed):
        document, _ = read_parts(path)
        assert list(validator.iter_errors(document)) == [], path.name
    # Control: the same validator does refuse a forged document.
    document, _ = read_parts(cnn_checkpoint)
    forged = edited(document, ["training", "host_optimizer"], 5)
    assert list(validator.iter_errors(forged))


# -- forged documents (the reported cases) -------------------------------------------------


def test_a_forged_host_optimizer_entry_is_refused_naming_it(lbfgs_checkpoint, tmp_path):
    document, tensors = read_parts(lbfgs_checkpoint)
    for value in (5, "state", [1, 2], {"iterations": "many"}):
        path = write_forged(
            tmp_path / "forged.safetensors",
            edited(document, ["training", "host_optimizer"], value),
            tensors,
        )
        assert "training.host_optimizer" in _refusal(gm.Trainer.load, path)
    gm.Trainer.load(lbfgs_checkpoint)  # the genuine file loads


@pytest.mark.parametrize("field", ["stride", "padding", "dilation", "kernel_size", "groups"])
def test_a_conv_argument_no_integer_type_holds_is_refused_naming_it(
    field, cnn_checkpoint, tmp_path
):
    document, tensors = read_parts(cnn_checkpoint)
    config = layer_config(document, "Conv2D")
    value = 2**64 if field == "groups" else [2**64, 1]
    path = write_forged(
        tmp_path / "f.safetensors", edited(document, [*config, field], value), tensors
    )
    index = config[2]
    for load in (gm.Trainer.load, gm.load_model):
        message = _refusal(load, path)
        assert f"model.layers[{index}].config.{field}" in message, message
        assert str(2**64) in message


@pytest.mark.parametrize("field", ["stride", "padding", "kernel_size"])
def test_a_pool_argument_beyond_the_engines_integers_is_refused(field, cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    config = layer_config(document, "MaxPool2D")
    path = write_forged(
        tmp_path / "f.safetensors", edited(document, [*config, field], [2, 2**63]), tensors
    )
    assert f"model.layers[{config[2]}].config.{field}" in _refusal(gm.load_model, path)


def test_a_document_nested_100000_deep_is_refused_before_parsing(cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    text = json.dumps(edited(document, ["metadata", "user"], "PLACEHOLDER"))
    deep = text.replace('"PLACEHOLDER"', "[" * 100_000 + "]" * 100_000)
    path = write_forged(tmp_path / "deep.safetensors", deep, tensors)
    for load in (gm.Trainer.load, gm.load_model, gm.serialization.read_metadata):
        message = _refusal(load, path)
        assert f"nested 100002 levels deep; at most {MAX_NESTING_DEPTH}" in message, message
    # Brackets inside strings are text, not nesting: a file with such a string loads.
    text = json.dumps(edited(document, ["metadata", "user"], {"note": "[" * 100_000}))
    gm.Trainer.load(write_forged(tmp_path / "brackets.safetensors", text, tensors))


@pytest.mark.parametrize(
    ("path", "value", "shown"),
    [
        (["training", "history", "epoch"], [-math.inf], "training.history.epoch[0] (-inf)"),
        (["training", "learning_rate"], math.nan, "training.learning_rate (nan)"),
        (
            ["training", "history", "history", "loss"],
            [math.inf],
            "training.history.history.loss[0]",
        ),
        (["metadata", "user"], {"score": math.nan}, "metadata.user.score (nan)"),
    ],
    ids=["history_epoch", "learning_rate", "history_values", "user_metadata"],
)
def test_non_finite_numbers_in_the_document_are_refused_naming_them(
    path, value, shown, cnn_checkpoint, tmp_path
):
    document, tensors = read_parts(cnn_checkpoint)
    forged = write_forged(tmp_path / "f.safetensors", edited(document, path, value), tensors)
    for load in (gm.Trainer.load, gm.load_model):
        assert shown in _refusal(load, forged)


def test_a_number_too_large_for_a_double_is_refused_not_read_as_infinity(cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    text = json.dumps(edited(document, ["training", "learning_rate"], 0.5)).replace(
        '"learning_rate": 0.5', '"learning_rate": 1e999'
    )
    path = write_forged(tmp_path / "f.safetensors", text, tensors)
    assert "training.learning_rate (inf)" in _refusal(gm.Trainer.load, path)


@pytest.mark.parametrize(
    ("path", "value", "shown"),
    [
        (["training", "growth_interval"], 10**30, "training.growth_interval"),
        (["training", "optimizer", "config", "lr"], 2**1030, "training.optimizer.config.lr"),
        (["training", "batch_size"], 2**31, "training.batch_size"),
        (["training", "epoch"], -1, "training.epoch"),
        (["training", "scheduler"], {"config": 1, "state": {}}, "training.scheduler.config"),
        (["training", "history", "epoch"], [0.5], "training.history.epoch[0]"),
        (["model", "input", "shape"], [3, 2**40, 8], "model.input.shape[1]"),
        (["model", "seed"], 2**64, "model.seed"),
        (["weights"], {"dense_0.weight": 1}, "weights"),
    ],
    ids=[
        "growth_interval",
        "optimizer_lr",
        "batch_size",
        "epoch",
        "scheduler",
        "history_epoch",
        "input_shape",
        "model_seed",
        "weights",
    ],
)
def test_out_of_range_and_mistyped_fields_are_refused_naming_them(
    path, value, shown, cnn_checkpoint, tmp_path
):
    document, tensors = read_parts(cnn_checkpoint)
    forged = write_forged(tmp_path / "f.safetensors", edited(document, path, value), tensors)
    message = _refusal(gm.Trainer.load, forged)
    assert shown in message, message


def test_an_oversized_document_is_refused_and_never_written(cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    blob = {"blob": "x" * MAX_DOCUMENT_CHARS}
    path = write_forged(
        tmp_path / "big.safetensors", edited(document, ["metadata", "user"], blob), tensors
    )
    message = _refusal(gm.load_model, path)
    assert f"at most {MAX_DOCUMENT_CHARS}" in message, message

    trainer = gm.Trainer.load(cnn_checkpoint)
    target = tmp_path / "save.safetensors"
    with pytest.raises(ValueError, match=f"at most {MAX_DOCUMENT_CHARS}"):
        trainer.save(target, metadata=blob)
    deep: dict = {}
    for _ in range(MAX_NESTING_DEPTH):
        deep = {"d": deep}
    with pytest.raises(ValueError, match=f"at most {MAX_NESTING_DEPTH}"):
        trainer.model.save(target, metadata=deep)
    assert not target.exists()


def test_a_call_with_more_inputs_than_its_layer_takes_is_refused(cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    call = ["model", "calls", 1, "inputs"]
    forged = edited(document, call, [*document["model"]["calls"][1]["inputs"], 0])
    path = write_forged(tmp_path / "f.safetensors", forged, tensors)
    layer = document["model"]["calls"][1]["layer"]
    assert f"calls[1] gives 2 inputs to '{layer}', which takes 1" in _refusal(gm.load_model, path)


def test_a_custom_layer_argument_beyond_64_bits_is_refused_naming_it(tmp_path):
    import gometal.onnx  # noqa: F401  (registers the layers ONNX imports build)

    model = gm.ModelBuilder((4,)).dense(2).build(seed=0)
    model.save(tmp_path / "m.safetensors")
    document, tensors = read_parts(tmp_path / "m.safetensors")
    definition = document["model"]
    assert "OnnxReshape" in gm.serialization.registered_layers()
    reshape = {"class_name": "OnnxReshape", "config": {"name": "r", "shape": [-1, 2**63]}}
    definition["layers"].insert(0, reshape)
    definition["calls"] = [{"layer": "r", "inputs": [0]}, {"layer": "dense_0", "inputs": [1]}]
    definition["output"] = 2
    path = write_forged(tmp_path / "f.safetensors", document, tensors)
    message = _refusal(gm.load_model, path)
    assert f"model.layers[0].config.shape[1]: {2**63} does not fit" in message, message


# -- tensors -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0, 2.5])
def test_a_stored_step_that_is_not_a_count_is_refused(value, cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    tensors["optimizer.step"] = np.array(value, np.float32)
    path = write_forged(tmp_path / "step.safetensors", document, tensors)
    message = _refusal(gm.Trainer.load, path)
    assert "optimizer.step" in message and "whole number" in message, message
    message = _refusal(lambda p: gm.serialization.load_checkpoint(p, allow_non_finite=True), path)
    assert "optimizer.step" in message  # the opt-in covers values, not counters


def test_an_empty_tensor_is_refused_not_a_crash_in_the_checksum(cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    tensors["dense_0.weight"] = np.zeros((0, 64), np.float32)
    path = write_forged(tmp_path / "empty.safetensors", document, tensors)
    for load in (gm.Trainer.load, gm.load_model):
        assert "dense_0.weight" in _refusal(load, path)


def test_non_finite_weights_are_refused_by_name_unless_explicitly_allowed(cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    tensors["dense_0.weight"] = np.full_like(tensors["dense_0.weight"], np.nan)
    tensors["conv2d_0.bias"][1] = -np.inf
    path = write_forged(tmp_path / "nan.safetensors", document, tensors)
    fresh = gm.load_model(cnn_checkpoint)
    for load in (gm.Trainer.load, gm.load_model, fresh.load_weights):
        message = _refusal(load, path)
        assert "'conv2d_0.bias' (1 of 4 values)" in message, message
        assert f"'dense_0.weight' ({tensors['dense_0.weight'].size} of" in message
        assert "allow_non_finite=True" in message
    assert "dense_0.bias" not in message  # finite tensors are not named

    trainer = gm.Trainer.load(path, allow_non_finite=True)
    model = gm.load_model(path, allow_non_finite=True)
    fresh.load_weights(path, allow_non_finite=True)
    for loaded in (trainer.model, model, fresh):
        weights = loaded.get_weights()
        assert np.isnan(weights["dense_0.weight"]).all()
        np.testing.assert_array_equal(weights["conv2d_0.bias"], tensors["conv2d_0.bias"])
    with pytest.raises(TypeError, match="allow_non_finite must be True or False, got 'yes'"):
        gm.load_model(path, allow_non_finite="yes")


def test_non_finite_optimizer_state_is_refused_by_trainer_load_only(cnn_checkpoint, tmp_path):
    document, tensors = read_parts(cnn_checkpoint)
    tensors["dense_0.weight.exp_avg_sq"][0, 0] = np.inf
    path = write_forged(tmp_path / "slots.safetensors", document, tensors)
    assert "'dense_0.weight.exp_avg_sq' (1 of" in _refusal(gm.Trainer.load, path)
    model = gm.load_model(path)  # a model file's reader never uses optimizer state
    assert all(np.isfinite(value).all() for value in model.get_weights().values())


def test_non_finite_lbfgs_memory_is_refused(lbfgs_checkpoint, tmp_path):
    document, tensors = read_parts(lbfgs_checkpoint)
    name = next(n for n in tensors if n.startswith("host_optimizer.steps."))
    tensors[name][0] = np.nan
    path = write_forged(tmp_path / "lbfgs_nan.safetensors", document, tensors)
    assert f"'{name}' (1 of" in _refusal(gm.Trainer.load, path)


# -- files that are not regular files ------------------------------------------------------

_LOAD_EVERY_WAY = """
import sys
import gometal as gm
from gometal.serialization import CheckpointError
model = gm.ModelBuilder((3,)).dense(2).build(seed=0)
for load in (gm.Trainer.load, gm.load_model, model.load_weights, gm.serialization.read_metadata):
    try:
        load(sys.argv[1])
    except CheckpointError as err:
        print("refused:", err)
"""


def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    # A loader that opened the pipe for reading would wait for a writer forever; the
    # timeout only turns such a hang into a failure.
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_EVERY_WAY, str(fifo)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all("is not a regular file (a named pipe)" in line for line in lines)


def test_a_device_file_is_refused(tmp_path):
    device = Path(os.devnull)
    for load in (gm.Trainer.load, gm.load_model, gm.serialization.read_metadata):
        assert "is not a regular file (a character device)" in _refusal(load, device)
    link = tmp_path / "link.safetensors"
    link.symlink_to(device)
    assert "is not a regular file (a character device)" in _refusal(gm.load_model, link)


def test_a_model_that_needs_too_much_memory_per_sample_is_refused_before_allocating(tmp_path):
    # A few bytes of definition: a padding of 100,000 around a 4x4 image, ahead of a global
    # pool, so no weight shape gives it away. Building its plan would take about 160 GB.
    model = gm.ModelBuilder((1, 4, 4)).conv2d(2, 3, padding=100_000).global_avg_pool2d().build()
    assert model.bytes_per_sample() > gm.serialization.MAX_SAMPLE_BYTES
    model_file, checkpoint = tmp_path / "huge.safetensors", tmp_path / "huge_ckpt.safetensors"
    model.save(model_file)
    gm.Trainer(model, loss="mse", optimizer="sgd").save(checkpoint)  # compiles nothing yet
    for load, path in ((gm.load_model, model_file), (gm.Trainer.load, checkpoint)):
        with pytest.raises(CheckpointError, match=r"one sample's forward pass needs [\d,]+ bytes"):
            load(path)


def test_bytes_per_sample_counts_every_forward_intermediate():
    model = gm.ModelBuilder((3, 8, 8)).conv2d(4, 3, padding=1).relu().flatten().dense(5).build()
    elements = [
        3 * 8 * 8,  # the input
        4 * 3 * 3 * 3, 4, 5 * 256, 5,  # the weights: conv weight and bias, dense weight and bias
        4 * 8 * 8, 4, 4 * 8 * 8,  # conv, its bias reshaped to (4, 1, 1), the bias add
        4 * 8 * 8, 256,  # relu, flatten
        5, 5,  # matmul, bias add
    ]  # fmt: skip
    assert model.bytes_per_sample() == 4 * sum(elements)
