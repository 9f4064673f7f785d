"""Model files: ``model.save`` / ``gm.load_model`` round trips for every layer type and graph
shape, ``load_weights`` into a different architecture, the layer registry, go-metal's JSON
export and the atomic write helper.

References: the original model (its summary, weight names, weights and predictions), the
file read back with ``safetensors`` into a PyTorch twin, and NumPy copies of the weights.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import load_file as torch_load_file
from torch import nn

import gometal as gm
from gometal.apps.train_job import build_cnn
from gometal.base.atomic import atomic_open, atomic_path, write_atomically
from gometal.io.serialization.container import write_container
from gometal.serialization import CheckpointError, model_to_config
from helpers import mlp_pair, t

L = gm.layers


# -- models ----------------------------------------------------------------------------------


def _mlp():
    return gm.ModelBuilder((20,)).dense(32).relu().dropout(0.2).dense(16).tanh().dense(5).build(7)


def _residual():
    """Two residual blocks, a shared dense layer called twice, concat and product merges."""
    x = gm.Input((3, 8, 8), name="image")
    h = L.ReLU()(L.BatchNorm(name="stem_bn")(L.Conv2D(6, 3, padding=1, name="stem")(x)))
    for block in range(2):
        r = L.Conv2D(6, 3, padding="same", use_bias=False, name=f"b{block}_conv1")(h)
        r = L.ReLU()(L.BatchNorm(name=f"b{block}_bn1")(r))
        r = L.Conv2D(6, 3, padding=1, name=f"b{block}_conv2")(r)
        h = L.ReLU()(r + h)
    pooled = L.GlobalAvgPool2D()(h)
    shared = L.Dense(6, name="shared")
    a, b = shared(pooled), shared(L.Tanh()(pooled))
    joined = L.Concatenate()([a * b, a])
    return gm.Model(x, L.Dense(4, name="head")(joined), seed=3)


def _every_layer():
    """One model holding every layer class gm.layers exports."""
    x = gm.Input((3, 8, 8))
    h = L.LeakyReLU(0.2)(L.BatchNorm(momentum=0.3, eps=1e-4)(L.Conv2D(4, 3, padding="same")(x)))
    h = L.MaxPool2D(2)(h)  # (4, 4, 4)
    a = L.ELU(0.5)(L.Conv2D(4, (3, 1), padding=(1, 0), groups=2, use_bias=False)(h))
    b = L.Sigmoid()(L.AvgPool2D(3, stride=1, padding=1)(h))
    merged = L.Multiply()([L.Add()([a, b]), L.Tanh()(a)])
    c = L.Concatenate(axis=1)([merged, L.Swish()(b)])  # (8, 4, 4)
    dilated = L.Conv2D(2, 2, stride=2, dilation=(1, 1), padding="valid")(c)  # (2, 2, 2)
    d = L.Dropout(0.25)(L.GELU()(L.Dense(16)(L.Flatten()(dilated))))
    g = L.ReLU()(L.Dense(5, use_bias=False)(L.GlobalAvgPool2D()(c)))
    spatial = L.ZeroPadding2D(((1, 0), (0, 1)))(h)  # (4, 5, 5)
    spatial = L.Conv2DTranspose(4, 3, stride=2, padding=1, output_padding=1, groups=2)(spatial)
    spatial = L.AdaptiveAvgPool2D((3, 4))(L.UpSampling2D(1.5, mode="bilinear")(spatial))
    s = L.Dense(5)(L.GlobalMaxPool2D()(spatial))
    sequence = L.Conv1D(3, 2, padding="same")(L.Reshape((4, 12))(spatial))
    s = L.Add()([s, L.Dense(5)(L.Flatten()(sequence))])  # (3, 12) -> (5,)
    out = L.Softmax()(L.Add()([L.Dense(5)(d), g, s]))
    return gm.Model(x, out, seed=11)


def _keras_layers():
    """The layers Keras and torch users reach for."""
    x = gm.Input((3, 8, 8))
    conv = L.Conv2D(
        4,
        3,
        padding=1,
        activation="relu",
        kernel_initializer="he_normal",
        kernel_regularizer=gm.regularizers.l2(1e-4),
    )
    h = L.PReLU(4)(L.InstanceNorm2D(4, affine=True)(L.GroupNorm(2, 4)(conv(x))))
    h = L.SiLU()(L.Mish()(L.Hardswish()(h)))
    h = L.Flatten(start_dim=2)(L.Permute((2, 1))(L.Reshape((4, 64))(h)))
    h = L.Lambda(gm.ops.tanh)(L.Reshape((-1,))(L.LayerNorm(4)(h)))
    head = L.Dense(
        3,
        activation="tanh",
        bias_initializer="zeros",
        bias_regularizer=gm.regularizers.l1_l2(l1=1e-5, l2=1e-4),
    )
    return gm.Model(x, head(h), seed=4)


def _transformer_layers():
    """Every transformer layer, on int32 token ids of a fixed length."""
    ids = gm.Input((6,), dtype="int32", name="ids")
    h = L.Embedding(11, 8, padding_idx=0)(ids)
    h = L.PositionalEmbedding(10, 8, kind="sinusoidal")(L.PositionalEmbedding(10, 8)(h))
    h = L.TransformerEncoderLayer(8, 2, dim_feedforward=12, causal=True, activation="gelu")(h)
    memory = L.TransformerEncoder(2, 8, 2, dim_feedforward=12, norm_first=True, final_norm=True)(h)
    h = L.TransformerDecoderLayer(8, 4, dim_feedforward=12, bias=False)([h, memory])
    h = L.TransformerDecoder(1, 8, 2, dim_feedforward=10, causal=True)([h, memory])
    h = L.MultiHeadAttention(8, 2, kdim=4, vdim=8)([h, L.Dense(4)(memory), h])
    h = L.RMSNorm(8, eps=1e-4)(h)
    # A head tied to the token embedding (one shared variable), beside a plain one.
    tied = L.TiedLinear("embedding_0", 11, 8)(h)
    return gm.Model(ids, L.Add()([L.Dense(11)(h), tied]), seed=6)


def _recurrent_layers():
    """Every recurrent layer: stacked, bidirectional, projected, and the last step."""
    ids = gm.Input((7,), dtype="int32", name="ids")
    h = L.Embedding(11, 6)(ids)
    h = L.LSTM(6, 5, num_layers=2, bidirectional=True, proj_size=3)(h)
    h = L.GRU(6, 4, dropout=0.2, num_layers=2)(h)
    h = L.SimpleRNN(4, 5, nonlinearity="relu", output="last")(h)
    return gm.Model(ids, L.Dense(3)(h), seed=7)


def _cnn():
    return build_cnn((3, 64, 64), 2, seed=5)


MODELS = {"mlp": (_mlp, (20,)), "cnn": (_cnn, (3, 64, 64)), "residual": (_residual, (3, 8, 8))}
MODELS["every_layer"] = (_every_layer, (3, 8, 8))
MODELS["keras_layers"] = (_keras_layers, (3, 8, 8))
MODELS["transformer_layers"] = (_transformer_layers, (6,))
MODELS["recurrent_layers"] = (_recurrent_layers, (7,))
ALL_LAYERS_MODELS = (_every_layer, _keras_layers, _transformer_layers, _recurrent_layers)


def _inputs(shape, n=6, seed=0, dtype="float32"):
    gen = np.random.default_rng(seed)
    if dtype == "int32":
        return gen.integers(0, 11, (n, *shape)).astype(np.int32)
    return gen.standard_normal((n, *shape)).astype(np.float32)


def _perturb(model, seed=1):
    # Non-default values everywhere (running statistics included), so a loader that left
    # any weight at its initial value would be caught.
    gen = np.random.default_rng(seed)
    weights = {}
    for name, shape in model.weight_shapes.items():
        value = gen.standard_normal(shape) * 0.3
        if name.endswith("running_var"):
            value = np.abs(value) + 0.5  # variances stay positive
        weights[name] = value.astype(np.float32)
    model.set_weights(weights)


@pytest.mark.parametrize("case", list(MODELS))
def test_model_round_trip_keeps_summary_weights_and_predictions(case, tmp_path, capsys):
    make, shape = MODELS[case]
    model = make()
    _perturb(model)
    path = tmp_path / f"{case}.safetensors"
    model.save(path, metadata={"case": case})
    loaded = gm.load_model(path)

    loaded_lines: list[str] = []
    model_lines: list[str] = []
    loaded.summary(print_fn=loaded_lines.append)
    model.summary(print_fn=model_lines.append)
    assert loaded_lines == model_lines
    assert list(loaded.weight_shapes) == list(model.weight_shapes)
    assert loaded.trainable_weight_names == model.trainable_weight_names
    assert model_to_config(loaded) == model_to_config(model)
    expected, got = model.get_weights(), loaded.get_weights()
    for name in expected:
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    x = _inputs(shape, dtype=model.inputs[0].dtype)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # The file is a standard safetensors file: another reader sees the same tensors.
    raw = load_file(str(path))
    assert set(raw) == set(expected)
    assert gm.serialization.read_metadata(path)["user"] == {"case": case}
    assert os.listdir(tmp_path) == [path.name]


def test_every_exported_layer_class_is_in_the_all_layers_model():
    exported = {
        getattr(L, name)
        for name in L.__all__
        if isinstance(getattr(L, name), type)
        and issubclass(getattr(L, name), L.Layer)
        and getattr(L, name) is not L.Layer
    }
    used = {type(layer) for make in ALL_LAYERS_MODELS for layer in make().layers}
    assert exported - used == set()
    assert set(gm.serialization.registered_layers().values()) >= exported


def test_saved_mlp_runs_in_pytorch_with_the_same_outputs(tmp_path):
    _, model = mlp_pair([12, 24, 8, 3], activation="tanh", seed=4)
    path = tmp_path / "mlp.safetensors"
    model.save(path)
    tensors = torch_load_file(str(path))
    twin = nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 8), nn.Tanh(), nn.Linear(8, 3))
    linears = [m for m in twin if isinstance(m, nn.Linear)]
    twin.load_state_dict(
        {
            f"{2 * i}.{kind}": tensors[f"dense_{i}.{kind}"]
            for i in range(len(linears))
            for kind in ("weight", "bias")
        }
    )
    x = _inputs((12,), n=9)
    with torch.no_grad():
        expected = twin(t(x)).numpy()
    np.testing.assert_allclose(gm.load_model(path).predict(x), expected, rtol=1e-5, atol=1e-6)


def test_model_save_holds_the_trained_weights(tmp_path):
    model = _mlp()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-2), batch_size=8)
    x, y = _inputs((20,), n=8), np.arange(8, dtype=np.int32) % 5
    for _ in range(3):
        trainer.train_batch(x, y)
    model.save(tmp_path / "trained.safetensors")
    loaded = gm.load_model(tmp_path / "trained.safetensors")
    np.testing.assert_array_equal(loaded.predict(x), trainer.predict(x))
    # A trainer checkpoint also loads as a model (its training state is ignored).
    trainer.save(tmp_path / "ckpt.safetensors")
    from_checkpoint = gm.load_model(tmp_path / "ckpt.safetensors")
    np.testing.assert_array_equal(from_checkpoint.predict(x), trainer.predict(x))


def test_load_weights_into_a_different_architecture_names_every_mismatch(tmp_path):
    saved = gm.ModelBuilder((20,)).dense(32).relu().dense(5).build(seed=0)
    saved.save(tmp_path / "a.safetensors")
    other = gm.ModelBuilder((20,)).dense(16).relu().dense(5, use_bias=False).dense(3).build(0)
    before = other.get_weights()
    with pytest.raises(CheckpointError) as err:
        other.load_weights(tmp_path / "a.safetensors")
    message = str(err.value)
    assert "dense_0.weight: expected shape (16, 20), found (32, 20)" in message
    assert "dense_0.bias: expected shape (16,), found (32,)" in message
    assert "dense_1.weight: expected shape (5, 16), found (5, 32)" in message
    assert "dense_2.weight: missing from the file" in message
    assert "dense_1.bias: not in this model (found shape (5,))" in message
    for name, value in other.get_weights().items():
        np.testing.assert_array_equal(value, before[name])  # nothing was half-loaded

    same = gm.ModelBuilder((20,)).dense(32).relu().dense(5).build(seed=9)
    same.load_weights(tmp_path / "a.safetensors")
    x = _inputs((20,))
    np.testing.assert_array_equal(same.predict(x), saved.predict(x))


# -- the layer registry ----------------------------------------------------------------------


class _Scale(L.Layer):
    kind = "scale"

    def __init__(self, factor: float, name: str | None = None):
        super().__init__(name)
        self.factor = float(factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}

    def emit(self, ctx, inputs):
        return ctx.graph.op("mul", [inputs[0], ctx.graph.constant(self.factor)], {})


def test_custom_layers_must_be_registered_to_save_and_load(tmp_path):
    model = gm.Model(x := gm.Input((4,)), L.Dense(2)(_Scale(3.0)(x)))
    with pytest.raises(TypeError, match=r"_Scale.*not registered.*register_layer"):
        model.save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()

    gm.serialization.register_layer(_Scale)
    model.save(tmp_path / "m.safetensors")
    data = _inputs((4,))
    np.testing.assert_array_equal(
        gm.load_model(tmp_path / "m.safetensors").predict(data), model.predict(data)
    )

    class Forgetful(L.Layer):
        def __init__(self, width: int, name: str | None = None):
            super().__init__(name)
            self.width = width

    with pytest.raises(TypeError, match=r"\['width'\].*get_config"):
        gm.serialization.register_layer(Forgetful)
    with pytest.raises(TypeError, match="Layer subclass"):
        gm.serialization.register_layer(int)


def _forged(path, model_config, tensors):
    document = {
        "format": "gometal.model",
        "format_version": 1,
        "model": model_config,
        "weights": list(tensors),
        "metadata": {},
    }
    write_container(path, tensors, document)


def test_unknown_or_malformed_layer_definitions_are_clear_errors(tmp_path):
    model = gm.ModelBuilder((4,)).dense(3).build(seed=0)
    config = model_to_config(model)
    weights = model.get_weights()

    evil = json.loads(json.dumps(config))
    evil["layers"][0]["class_name"] = "os.system"
    _forged(tmp_path / "evil.safetensors", evil, weights)
    with pytest.raises(CheckpointError, match=r"unknown layer class 'os.system'.*Dense"):
        gm.load_model(tmp_path / "evil.safetensors")

    bad_args = json.loads(json.dumps(config))
    bad_args["layers"][0]["config"]["units"] = -3
    _forged(tmp_path / "args.safetensors", bad_args, weights)
    with pytest.raises(CheckpointError, match=r"cannot rebuild layer 'dense_0' \(Dense\)"):
        gm.load_model(tmp_path / "args.safetensors")

    cyclic = json.loads(json.dumps(config))
    cyclic["calls"][0]["inputs"] = [1]
    _forged(tmp_path / "cyclic.safetensors", cyclic, weights)
    with pytest.raises(CheckpointError, match=r"indices of earlier tensors"):
        gm.load_model(tmp_path / "cyclic.safetensors")

    # A definition declaring a huge layer is rejected before any weight is allocated.
    huge = json.loads(json.dumps(config))
    huge["layers"][0]["config"]["units"] = 10**9
    _forged(tmp_path / "huge.safetensors", huge, weights)
    with pytest.raises(CheckpointError, match=r"dense_0.weight.*\(1000000000, 4\).*found \(3, 4\)"):
        gm.load_model(tmp_path / "huge.safetensors")


def test_metadata_must_be_json_data(tmp_path):
    model = gm.ModelBuilder((4,)).dense(3).build(seed=0)
    with pytest.raises(ValueError, match="metadata must hold only JSON values"):
        model.save(tmp_path / "m.safetensors", metadata={"when": object()})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        model.save(tmp_path / "m.safetensors", metadata=["a"])
    assert list(tmp_path.iterdir()) == []


# -- go-metal's JSON layout -------------------------------------------------------------------


def test_export_json_writes_go_metals_layout_with_exact_values(tmp_path):
    model = gm.ModelBuilder((6,)).dense(8).batch_norm().relu().dense(3).build(seed=2)
    optimizer = gm.optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-7)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=4)
    x, y = _inputs((6,), n=4), np.array([0, 1, 2, 1], np.int32)
    for _ in range(2):
        trainer.train_batch(x, y)
    path = tmp_path / "go.json"
    trainer.export_json(path, description="two steps")
    doc = json.loads(path.read_text())
    assert list(doc) == ["model_spec", "weights", "training_state", "optimizer_state", "metadata"]

    spec = doc["model_spec"]
    assert [layer["type"] for layer in spec["layers"]] == ["Dense", "BatchNorm", "ReLU", "Dense"]
    dense = spec["layers"][0]
    assert dense["name"] == "dense_0"
    assert dense["parameters"] == {"units": 8, "use_bias": True}
    assert dense["input_shape"] == [4, 6] and dense["output_shape"] == [4, 8]
    assert dense["parameter_shapes"] == [[8, 6], [8]] and dense["parameter_count"] == 56
    assert spec["total_parameters"] == 6 * 8 + 8 + 2 * 8 + 8 * 3 + 3
    assert spec["input_shape"] == [4, 6] and spec["output_shape"] == [4, 3]

    expected = model.get_weights()
    assert [w["name"] for w in doc["weights"]] == list(expected)
    for entry in doc["weights"]:
        value = expected[entry["name"]]
        assert entry["shape"] == list(value.shape)
        assert entry["layer"] == entry["name"].split(".")[0]
        assert entry["type"] == entry["name"].split(".", 1)[1]
        data = np.asarray(entry["data"], dtype=np.float32).reshape(value.shape)
        np.testing.assert_array_equal(data, value, err_msg=entry["name"])

    state = doc["optimizer_state"]
    assert state["type"] == "Adam"
    assert state["parameters"]["lr"] == 0.01 and state["parameters"]["betas"] == [0.8, 0.99]
    slots = {s["name"]: s for s in state["state_data"]}
    engine = trainer._engine
    expected_slots = {n for n in engine.variable_names() if n.endswith((".exp_avg", ".exp_avg_sq"))}
    assert expected_slots <= set(slots) and len(expected_slots) == 2 * 6
    for name in expected_slots:
        data = np.asarray(slots[name]["data"], np.float32).reshape(slots[name]["shape"])
        np.testing.assert_array_equal(data, engine.get_variable(name), err_msg=name)
        assert slots[name]["state_type"] == name.rsplit(".", 1)[1]

    training = doc["training_state"]
    assert training["step"] == 2 and training["epoch"] == 0
    assert training["learning_rate"] == pytest.approx(0.01, rel=1e-6)
    meta = doc["metadata"]
    assert meta["framework"] == "gometal" and meta["version"] == gm.__version__
    assert meta["description"] == "two steps"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", meta["created_at"])
    assert os.listdir(tmp_path) == ["go.json"]


def test_export_json_refuses_non_finite_weights_and_keeps_the_old_file(tmp_path):
    model = gm.ModelBuilder((3,)).dense(2).build(seed=0)
    trainer = gm.Trainer(model, loss="mse", optimizer="sgd", batch_size=2)
    path = tmp_path / "go.json"
    trainer.export_json(path)
    before = path.read_bytes()
    model.set_weights({"dense_0.bias": np.array([np.nan, 1.0], np.float32)})
    with pytest.raises(ValueError, match=r"'dense_0.bias'.*NaN or infinite"):
        trainer.export_json(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["go.json"]


# -- the atomic write helper --------------------------------------------------------------------


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    write_atomically(path, b"first")
    write_atomically(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    write_atomically(path, b"keep me")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_write_atomically_rejects_bad_targets(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_atomically(tmp_path / "missing" / "f.bin", b"x")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        write_atomically(tmp_path, b"x")
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        write_atomically(tmp_path / "f.bin", "text")
