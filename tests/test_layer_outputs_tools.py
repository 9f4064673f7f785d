"""Tools over a model's layer calls on a call with several outputs
(``LSTM(return_state=True)``): static and dynamic int8 quantization keep the float model's
predictions (as tests/test_quantize.py measures agreement), the activation probe gives
each output as torch computes it, and the go-metal JSON export refuses the call by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from torch import nn

import gometal as gm
from gometal.io.serialization.go_metal_json import export_json
from gometal.quantization import QuantizedDense, quantize_dynamic
from gometal.viz._probes import ActivationProbe
from layer_outputs_support import as_float32

HIDDEN = 24


@pytest.fixture(scope="module")
def digits():
    """The digits as sequences: each image's 8 rows are 8 steps of 8 features."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8)
    return train_test_split(x, y.astype(np.int32), test_size=0.25, random_state=0, stratify=y)


def _state_heads_model(seed: int = 0) -> gm.Model:
    """An LSTM whose final states (h_n, c_n) feed two Dense heads, added."""
    x = gm.Input((8, 8))
    _, h_n, c_n = gm.layers.LSTM(8, HIDDEN, return_state=True, name="lstm")(x)
    hidden = gm.layers.Dense(32, activation="relu", name="hidden")(gm.layers.Flatten()(h_n))
    from_h = gm.layers.Dense(10, name="head_h")(hidden)
    from_c = gm.layers.Dense(10, name="head_c")(gm.layers.Flatten()(c_n))
    logits = gm.layers.Add(name="logits")([from_h, from_c])
    return gm.Model(x, logits, seed=seed)


@pytest.fixture(scope="module")
def trained_model(digits):
    x_train, _, y_train, _ = digits
    model = _state_heads_model()
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=5e-3), batch_size=32
    )
    trainer.fit((x_train, y_train), epochs=20, verbose=0)
    return model


def _check_close_to_float(float_model, quantized, x_test, y_test):
    float_labels = float_model.predict(x_test).argmax(axis=1)
    int8_labels = quantized.predict(x_test).argmax(axis=1)
    float_accuracy = accuracy_score(y_test, float_labels)
    assert float_accuracy > 0.9  # the float model learned the digits
    assert accuracy_score(y_test, int8_labels) >= float_accuracy - 0.005
    assert np.mean(int8_labels == float_labels) >= 0.99


def test_static_quantization_of_a_return_state_model(digits, trained_model):
    x_train, x_test, _, y_test = digits
    quantized = gm.quantize(trained_model, x_train[:512])
    dense = [layer for layer in quantized.layers if isinstance(layer, QuantizedDense)]
    assert len(dense) == 3
    _check_close_to_float(trained_model, quantized, x_test, y_test)


def test_dynamic_quantization_of_a_return_state_model(digits, trained_model):
    _, x_test, _, y_test = digits
    quantized = quantize_dynamic(trained_model)
    dense = [layer for layer in quantized.layers if isinstance(layer, QuantizedDense)]
    assert len(dense) == 3
    _check_close_to_float(trained_model, quantized, x_test, y_test)


def test_the_activation_probe_gives_every_output_as_torch():
    torch.manual_seed(0)
    module = nn.LSTM(8, HIDDEN, batch_first=True).double()
    model = _state_heads_model()
    model.get_layer("lstm").set_weights(as_float32(module))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8)).astype(np.float32)
    outputs = ActivationProbe(model)(x)
    with torch.no_grad():
        sequence, (h_n, c_n) = module(torch.from_numpy(x).double())
    # gometal's states are batch-first: torch's (layers, N, H) transposed.
    expected = {
        "lstm": sequence.numpy(),
        "lstm_1": h_n.transpose(0, 1).numpy(),
        "lstm_2": c_n.transpose(0, 1).numpy(),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # The heads read the states (not the sequence): NumPy's heads over torch's states.
    w = {name: value.astype(np.float64) for name, value in model.get_weights().items()}

    def dense(layer, v):
        return v @ w[f"{layer}.weight"].T + w[f"{layer}.bias"]

    hidden = np.maximum(dense("hidden", h_n[0].numpy()), 0.0)
    logits = dense("head_h", hidden) + dense("head_c", c_n[0].numpy())
    np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-5, atol=1e-5)


def test_go_metal_json_refuses_a_call_with_several_outputs(tmp_path):
    model = _state_heads_model()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    path = tmp_path / "checkpoint.json"
    with pytest.raises(ValueError, match=r"layer 'lstm' \(LSTM\) gives 3 outputs") as error:
        export_json(trainer, path)
    assert "go-metal" in str(error.value) and "(8, 24)" in str(error.value)
    assert not path.exists()


def test_go_metal_json_still_writes_a_one_output_recurrent_model(tmp_path):
    x = gm.Input((8, 8))
    sequence = gm.layers.LSTM(8, HIDDEN, output="last", name="lstm")(x)
    model = gm.Model(x, gm.layers.Dense(10)(sequence))
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    export_json(trainer, tmp_path / "checkpoint.json")
    document = json.loads((tmp_path / "checkpoint.json").read_text())
    names = [layer["name"] for layer in document["model_spec"]["layers"]]
    assert names[0] == "lstm"


def test_the_collector_records_each_output_while_training(digits):
    x_train, x_val, y_train, y_val = digits
    model = _state_heads_model()
    trainer = gm.Trainer(model, "cross_entropy", "adam", batch_size=32)
    collector = gm.viz.VisualizationCollector(validation=(x_val[:64], y_val[:64]))
    trainer.fit((x_train[:256], y_train[:256]), 1, callbacks=[collector], verbose=0)
    assert collector.errors == []
    assert {"lstm", "lstm_1", "lstm_2", "logits"} <= set(collector.activations)
    assert collector.activations["lstm"].shape == (64, 8, HIDDEN)
    assert collector.activations["lstm_2"].shape == (64, 1, HIDDEN)
    assert set(collector.gradients) == set(model.trainable_weight_names)
