"""gm.quantize on the digits MLP and the digits CNN of the train job: held-out accuracy within
half a point of the float model and at least 99 % of the same predictions, for each
calibration method; the quantized MLP against a NumPy int8 reference of its own layers;
saving, loading and copying; and bad input."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

import gometal as gm
from gometal.apps.train_job import build_cnn
from gometal.quantization import QuantizedConv2D, QuantizedDense


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int32), test_size=0.25, random_state=0, stratify=y)


def trained(model, x, y, epochs):
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=2e-3), batch_size=32
    )
    trainer.fit((x, y), epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def digits_mlp(digits):
    x_train, _, y_train, _ = digits
    model = (
        gm.ModelBuilder((64,))
        .dense(128)
        .relu()
        .dense(64, activation="relu")
        .dense(10)
        .build(seed=0)
    )
    return trained(model, x_train, y_train, epochs=15)


@pytest.fixture(scope="module")
def digits_cnn(digits):
    x_train, _, y_train, _ = digits
    model = build_cnn((1, 8, 8), 10, seed=0)
    return trained(model, x_train.reshape(-1, 1, 8, 8), y_train, epochs=12)


def check_close_to_float(float_model, quantized, x_test, y_test):
    float_labels = float_model.predict(x_test).argmax(axis=1)
    int8_labels = quantized.predict(x_test).argmax(axis=1)
    float_accuracy = accuracy_score(y_test, float_labels)
    assert float_accuracy > 0.9  # the float model learned the digits
    assert accuracy_score(y_test, int8_labels) >= float_accuracy - 0.005
    assert np.mean(int8_labels == float_labels) >= 0.99


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_the_digits_mlp_keeps_its_accuracy(digits, digits_mlp, method):
    x_train, x_test, _, y_test = digits
    quantized = gm.quantize(digits_mlp, x_train[:512], method=method)
    assert [type(layer) for layer in quantized.layers if "dense" in str(layer.name)] == [
        QuantizedDense
    ] * 3
    check_close_to_float(digits_mlp, quantized, x_test, y_test)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_the_digits_cnn_keeps_its_accuracy(digits, digits_cnn, method):
    x_train, x_test, _, y_test = digits
    images = x_train.reshape(-1, 1, 8, 8)
    quantized = gm.quantize(digits_cnn, images[:512], method=method)
    kinds = [type(layer).__name__ for layer in quantized.layers]
    # Each conv's batch norm and relu run inside its int8 kernel, as the dense's relu does.
    assert kinds.count("QuantizedConv2D") == 3 and kinds.count("QuantizedDense") == 2
    assert "BatchNorm" not in kinds and "ReLU" not in kinds
    check_close_to_float(digits_cnn, quantized, x_test.reshape(-1, 1, 8, 8), y_test)


def numpy_quantized_mlp(quantized, x):
    """The quantized MLP computed by NumPy from its layers' configs and weights: quantize the
    input, int64 sums of (q - zero point) * int8 weights, then sum * (weight scale * input
    scale) + bias in float32, relu where the layer fuses it."""
    h = x
    for layer in quantized.layers:
        if not isinstance(layer, QuantizedDense):
            h = np.maximum(h, np.float32(0)) if type(layer).__name__ == "ReLU" else h
            continue
        config, weights = layer.get_config(), layer.get_weights()
        scale, zero_point = np.float32(config["input_scale"]), config["input_zero_point"]
        q = np.clip(np.rint(h / scale) + zero_point, 0, 255)
        sums = (q.astype(np.int64) - zero_point) @ weights["weight"].astype(np.int64).T
        h = sums.astype(np.float32) * (weights["weight_scale"] * scale) + weights["bias"]
        if config["relu"]:
            h = np.maximum(h, np.float32(0))
    return h


def test_the_quantized_mlp_matches_a_numpy_int8_reference(digits, digits_mlp):
    x_train, x_test, _, _ = digits
    quantized = gm.quantize(digits_mlp, x_train[:256], per_channel=True)
    weights = quantized.get_layer("dense_0").get_weights()
    assert np.array_equal(weights["weight"], np.rint(weights["weight"]))
    assert (
        np.abs(weights["weight"]).max() == 127
    )  # symmetric: the largest weight of a row maps to 127
    np.testing.assert_allclose(
        quantized.predict(x_test), numpy_quantized_mlp(quantized, x_test), rtol=1e-6, atol=1e-6
    )


def test_per_tensor_weights_and_int8_activations(digits, digits_mlp):
    x_train, x_test, _, y_test = digits
    quantized = gm.quantize(digits_mlp, x_train[:512], per_channel=False, activation_dtype="int8")
    scales = quantized.get_layer("dense_0").get_weights()["weight_scale"]
    assert np.all(scales == scales[0])
    assert quantized.get_layer("dense_1").get_config()["input_dtype"] == "int8"
    check_close_to_float(digits_mlp, quantized, x_test, y_test)


def test_the_quantized_model_saves_loads_and_copies(tmp_path, digits, digits_cnn):
    x_train, x_test, _, _ = digits
    images = x_test.reshape(-1, 1, 8, 8)
    quantized = gm.quantize(digits_cnn, x_train[:256].reshape(-1, 1, 8, 8))
    expected = quantized.predict(images)
    quantized.save(tmp_path / "int8.gmz")
    loaded = gm.load_model(tmp_path / "int8.gmz")
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in quantized.layers]
    np.testing.assert_array_equal(loaded.predict(images), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(quantized)).predict(images), expected)
    assert all(not layer.trainable for layer in loaded.layers)  # inference only


def test_the_float_model_is_left_alone(digits, digits_mlp):
    x_train, x_test, _, _ = digits
    before = digits_mlp.predict(x_test)
    gm.quantize(digits_mlp, x_train[:64])
    np.testing.assert_array_equal(digits_mlp.predict(x_test), before)
    assert all(type(layer) is not QuantizedDense for layer in digits_mlp.layers)


def test_excluded_and_unquantizable_layers_stay_float(digits):
    x_train = digits[0]
    model = (
        gm.ModelBuilder((64,)).dense(16, activation="tanh").dense(16).relu().dense(10).build(seed=0)
    )
    with pytest.warns(UserWarning, match=r"kept float: dense_0: activation 'tanh'"):
        quantized = gm.quantize(model, x_train[:64], exclude=["dense_2"])
    kinds = {str(layer.name): type(layer).__name__ for layer in quantized.layers}
    assert (
        kinds["dense_0"] == "Dense"
        and kinds["dense_1"] == "QuantizedDense"
        and kinds["dense_2"] == "Dense"
    )
    np.testing.assert_allclose(
        quantized.predict(x_train[:64]), model.predict(x_train[:64]), atol=0.1
    )


def test_a_grouped_convolution_stays_float():
    model = gm.ModelBuilder((4, 6, 6)).conv2d(4, 3, groups=2).flatten().dense(3).build(seed=0)
    x = np.random.default_rng(0).standard_normal((8, 4, 6, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"conv2d_0: groups=2"):
        quantized = gm.quantize(model, x)
    assert type(quantized.get_layer("conv2d_0")).__name__ == "Conv2D"


def test_an_exclude_pattern_matching_nothing_warns_with_the_layers(digits, digits_mlp):
    with pytest.warns(UserWarning, match=r"'conv\*' matches no layer; the layers are \['dense_0'"):
        gm.quantize(digits_mlp, digits[0][:64], exclude=["conv*"])


def test_bad_calibration_data_and_options_are_refused(digits, digits_mlp):
    x = digits[0][:64].copy()
    with pytest.raises(ValueError, match="calibration_data is None"):
        gm.quantize(digits_mlp, None)
    with pytest.raises(ValueError, match="calibration_data is empty"):
        gm.quantize(digits_mlp, np.zeros((0, 64), np.float32))
    with pytest.raises(ValueError, match="calibration_data is empty"):
        gm.quantize(digits_mlp, [])
    x[3, 7] = np.nan
    with pytest.raises(
        ValueError,
        match=r"1 NaN or infinite value\(s\); the first is nan in batch 0 at index \(3, 7\)",
    ):
        gm.quantize(digits_mlp, x)
    with pytest.raises(
        ValueError, match=r"method must be one of \['minmax', 'percentile', 'entropy'\], got 'kl'"
    ):
        gm.quantize(digits_mlp, digits[0][:64], method="kl")
    with pytest.raises(ValueError, match="activation_dtype must be 'uint8' or 'int8', got 'int4'"):
        gm.quantize(digits_mlp, digits[0][:64], activation_dtype="int4")
    with pytest.raises(TypeError, match="model must be a gm.Model"):
        gm.quantize("model", digits[0][:64])


def test_a_model_with_nothing_to_quantize_is_refused():
    model = gm.ModelBuilder((4,)).relu().build(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            ValueError, match=r"no Dense or Conv2D layer left to quantize \(layers: \['relu_0'\]\)"
        ):
            gm.quantize(model, np.ones((2, 4), np.float32))


def test_quantized_layers_refuse_bad_parameters():
    with pytest.raises(
        ValueError, match=r"input_zero_point must be an int in \[0, 255\] for uint8, got 300"
    ):
        QuantizedDense(4, input_scale=0.1, input_zero_point=300)
    with pytest.raises(ValueError, match="input_scale must be a positive finite number, got 0.0"):
        QuantizedConv2D(4, (3, 3), 0.0, 0)


def conv_batch_norm_relu(outputs_too: bool):
    x = gm.Input((2, 6, 6))
    conv = gm.layers.Conv2D(4, 3, padding=1)(x)
    y = gm.layers.ReLU()(gm.layers.BatchNorm()(conv))
    model = gm.Model(x, [y, conv] if outputs_too else gm.layers.Flatten()(y), seed=0)
    rng = np.random.default_rng(1)
    model.get_layer("batch_norm_0").set_weights(
        {
            "weight": rng.uniform(0.5, 2, 4),
            "bias": rng.standard_normal(4),
            "running_mean": rng.standard_normal(4),
            "running_var": rng.uniform(0.2, 3, 4),
        }
    )
    return model, rng.standard_normal((32, 2, 6, 6)).astype(np.float32)


def test_a_batch_norm_folds_into_the_convolution():
    model, x = conv_batch_norm_relu(outputs_too=False)
    quantized = gm.quantize(model, x)
    assert [type(layer).__name__ for layer in quantized.layers] == ["QuantizedConv2D", "Flatten"]
    conv = quantized.get_layer("conv2d_0")
    assert conv.relu
    norm, float_conv = (model.get_layer(n).get_weights() for n in ("batch_norm_0", "conv2d_0"))
    # y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta, eps = 1e-5
    factor = norm["weight"] / np.sqrt(norm["running_var"].astype(np.float64) + 1e-5)
    folded_weight = float_conv["weight"] * factor[:, None, None, None]
    folded_bias = (float_conv["bias"] - norm["running_mean"]) * factor + norm["bias"]
    got = conv.get_weights()
    scales = got["weight_scale"][:, None, None, None]
    assert np.all(np.abs(got["weight"] * scales - folded_weight) <= scales / 2 + 1e-7)
    np.testing.assert_allclose(got["bias"], folded_bias, rtol=1e-5, atol=1e-6)
    float_out, int8_out = model.predict(x), quantized.predict(x)
    assert np.abs(int8_out - float_out).max() <= 0.05 * np.abs(float_out).max()


def test_a_convolution_read_elsewhere_keeps_its_batch_norm():
    model, x = conv_batch_norm_relu(outputs_too=True)
    quantized = gm.quantize(model, x)
    kinds = [type(layer).__name__ for layer in quantized.layers]
    assert kinds == ["QuantizedConv2D", "BatchNorm", "ReLU"]
    assert not quantized.get_layer("conv2d_0").relu
