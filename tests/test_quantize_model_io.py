"""A quantized model evaluates like any model: a Trainer over it (nothing of it trains)
reports the accuracy of its predictions and their cross-entropy. Its files store the int8
weights as int8 beside their float32 scales: a save/load round trip predicts bit-identically,
the file shrinks by three bytes per weight, and files written with the int8 weights as
float32 (as before) still load."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors import safe_open
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gometal as gm
from gometal.apps.train_job import build_cnn
from gometal.io.serialization.container import read_container, write_container
from gometal.quantization import QuantizedConv2D, QuantizedDense


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return train_test_split(x, y.astype(np.int32), test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def quantized(digits):
    x_train, _, y_train, _ = digits
    model = build_cnn((1, 8, 8), 10, seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="adam", batch_size=32)
    trainer.fit((x_train, y_train), epochs=3, verbose=0)
    return gm.quantize(model, x_train[:256])


def int8_weight_names(model):
    kinds = (QuantizedConv2D, QuantizedDense)
    return [f"{layer.name}.weight" for layer in model.layers if isinstance(layer, kinds)]


def test_a_trainer_evaluates_a_quantized_model(digits, quantized):
    _, x_test, _, y_test = digits
    trainer = gm.Trainer(quantized, loss="cross_entropy", batch_size=32)
    result = trainer.evaluate(x_test, y_test)
    logits = quantized.predict(x_test).astype(np.float64)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == y_test), abs=1e-12)
    assert result["accuracy"] > 0.8  # the float model learned the digits
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cross_entropy = -log_probabilities[np.arange(len(y_test)), y_test].mean()
    assert result["loss"] == pytest.approx(cross_entropy, rel=1e-5)
    np.testing.assert_array_equal(trainer.predict(x_test), quantized.predict(x_test))


def test_a_trainer_refuses_to_train_a_quantized_model(digits, quantized):
    x_train, _, y_train, _ = digits
    trainer = gm.Trainer(quantized, loss="cross_entropy", batch_size=32)
    with pytest.raises(ValueError, match="every weight of the model is frozen"):
        trainer.train_batch(x_train[:32], y_train[:32])
    with pytest.raises(ValueError, match="every weight of the model is frozen"):
        trainer.fit((x_train, y_train), epochs=1, verbose=0)


def test_int8_weights_are_saved_as_int8_and_load_bit_identically(tmp_path, digits, quantized):
    _, x_test, _, _ = digits
    path = tmp_path / "int8.safetensors"
    quantized.save(path)
    with safe_open(str(path), framework="np") as reader:
        stored = reader.keys()
        dtypes = {name: reader.get_slice(name).get_dtype() for name in stored}
    names = int8_weight_names(quantized)
    assert len(names) == 5 and {dtypes[name] for name in names} == {"I8"}
    # The per-channel scales, biases and every other tensor stay float32.
    assert {dtype for name, dtype in dtypes.items() if name not in names} == {"F32"}
    loaded = gm.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x_test), quantized.predict(x_test))
    weights = quantized.get_weights()
    np.testing.assert_array_equal(loaded.get_weights()[names[0]], weights[names[0]])

    # A file as saved before: the same document, every tensor float32.
    document, tensors = read_container(path)
    old_path = tmp_path / "int8_as_float32.safetensors"
    write_container(old_path, tensors, document)
    int8_values = sum(weights[name].size for name in names)
    saved = old_path.stat().st_size - path.stat().st_size
    assert 3 * int8_values <= saved <= 3 * int8_values + 64  # headers differ by a few bytes
    np.testing.assert_array_equal(
        gm.load_model(old_path).predict(x_test), quantized.predict(x_test)
    )


def test_a_weight_that_is_not_int8_stays_float32(tmp_path, digits, quantized):
    """Storing is exact: a weight someone set to a non-integer value is kept as float32."""
    _, x_test, _, _ = digits
    copy = gm.load_model(_saved(quantized, tmp_path / "a.safetensors"))
    name = int8_weight_names(copy)[0]
    weight = copy.get_weights()[name].copy()
    weight.flat[0] = 0.5
    copy.set_weights({name: weight})
    path = _saved(copy, tmp_path / "b.safetensors")
    with safe_open(str(path), framework="np") as reader:
        assert reader.get_slice(name).get_dtype() == "F32"
    np.testing.assert_array_equal(gm.load_model(path).get_weights()[name], weight)
    np.testing.assert_array_equal(gm.load_model(path).predict(x_test), copy.predict(x_test))


def _saved(model, path):
    model.save(path)
    return path
