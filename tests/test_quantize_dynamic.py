"""gm.quantization.quantize_dynamic: Dense layers with int8 weights that quantize each batch
of their input from its own range; the digits MLP keeps its accuracy, one layer matches a
NumPy formula, the model saves and loads, and its ONNX export (DynamicQuantizeLinear) runs
in onnxruntime with the same top-1 labels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

import gometal as gm
from gometal.quantization import QuantizedConv2D, QuantizedDense, quantize_dynamic


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int32), test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def digits_mlp(digits):
    x_train, _, y_train, _ = digits
    model = gm.ModelBuilder((64,)).dense(128).relu().dense(10).build(seed=0)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=2e-3), batch_size=32
    )
    trainer.fit((x_train, y_train), epochs=15, verbose=0)
    return model


def test_the_digits_mlp_keeps_its_accuracy(digits, digits_mlp):
    _, x_test, _, y_test = digits
    quantized = quantize_dynamic(digits_mlp)
    layers = [layer for layer in quantized.layers if isinstance(layer, QuantizedDense)]
    assert len(layers) == 2 and all(layer.input_scale is None for layer in layers)
    float_labels = digits_mlp.predict(x_test).argmax(axis=1)
    int8_labels = quantized.predict(x_test).argmax(axis=1)
    float_accuracy = accuracy_score(y_test, float_labels)
    assert float_accuracy > 0.9
    assert accuracy_score(y_test, int8_labels) >= float_accuracy - 0.005
    assert np.mean(int8_labels == float_labels) >= 0.99


def test_one_dynamic_layer_matches_numpy(digits):
    x = digits[1][:100]
    model = gm.ModelBuilder((64,)).dense(7).build(seed=3)
    layer = quantize_dynamic(model).get_layer("dense_0")
    weights = layer.get_weights()
    # uint8 from the batch's range widened to hold 0; then as the static layer
    low, high = min(np.float32(0), x.min()), max(np.float32(0), x.max())
    scale = (high - low) / np.float32(255)
    zero_point = int(np.clip(np.rint(-low / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zero_point, 0, 255).astype(np.int64)
    sums = (q - zero_point) @ weights["weight"].astype(np.int64).T
    want = sums.astype(np.float32) * (weights["weight_scale"] * scale) + weights["bias"]
    got = quantize_dynamic(model).predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_save_load_and_onnx_export(tmp_path, digits, digits_mlp):
    x_test = digits[1]
    quantized = quantize_dynamic(digits_mlp)
    expected = quantized.predict(x_test)
    quantized.save(tmp_path / "dynamic.gmz")
    np.testing.assert_array_equal(gm.load_model(tmp_path / "dynamic.gmz").predict(x_test), expected)
    quantized.export_onnx(tmp_path / "dynamic.onnx")
    ops = [node.op_type for node in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node]
    assert "DynamicQuantizeLinear" in ops and "Gemm" in ops
    session = ort.InferenceSession(
        str(tmp_path / "dynamic.onnx"), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {session.get_inputs()[0].name: x_test})[0]
    assert np.mean(got.argmax(axis=1) == expected.argmax(axis=1)) >= 0.995


def test_convolutions_stay_float_and_bad_layers_are_refused():
    model = gm.ModelBuilder((1, 4, 4)).conv2d(2, 3).flatten().dense(3).build(seed=0)
    quantized = quantize_dynamic(model)
    assert [type(layer).__name__ for layer in quantized.layers] == [
        "Conv2D",
        "Flatten",
        "QuantizedDense",
    ]
    with pytest.raises(ValueError, match=r"no Dense layer left to quantize"):
        quantize_dynamic(gm.ModelBuilder((1, 4, 4)).conv2d(2, 3).build(seed=0))
    with pytest.raises(ValueError, match="QuantizedConv2D needs an input_scale"):
        QuantizedConv2D(4, (3, 3), None, 0)
    with pytest.raises(ValueError, match=r"dynamic input .* got input_zero_point=3"):
        QuantizedDense(4, None, 3)
