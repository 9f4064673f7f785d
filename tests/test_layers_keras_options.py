"""Keras's per-layer options on Dense and Conv2D (initializers by name, weight
regularizers), Lambda's function registry, and EmitContext.add_loss.

References: the initializers' formulas (bounds and standard deviations, Keras's and
torch's), NumPy for the penalties' values, and torch for training with them (an explicit
penalty in the loss, and SGD's weight_decay for l2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal import _core
from gometal import layers as L
from layer_parity import engine_gradients


def _dense_weight(initializer, fan_in=300, units=400, seed=0):
    x = gm.Input((fan_in,))
    model = gm.Model(x, L.Dense(units, kernel_initializer=initializer)(x), seed=seed)
    return model.get_weights()["dense_0.weight"].astype(np.float64)


UNIFORM_BOUNDS = {
    "glorot_uniform": math.sqrt(6 / (300 + 400)),
    "he_uniform": math.sqrt(6 / 300),
    "lecun_uniform": math.sqrt(3 / 300),
    "default": 1 / math.sqrt(300),
    "random_uniform": 0.05,
}
NORMAL_STDS = {
    "glorot_normal": math.sqrt(2 / (300 + 400)),
    "he_normal": math.sqrt(2 / 300),
    "lecun_normal": math.sqrt(1 / 300),
    "random_normal": 0.05,
}


@pytest.mark.parametrize("name", sorted(UNIFORM_BOUNDS))
def test_uniform_initializers_fill_their_bounds(name):
    w, bound = _dense_weight(name), UNIFORM_BOUNDS[name]
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.99 * bound
    # U(-b, b) has standard deviation b / sqrt(3).
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(w.mean()) < 0.01 * bound


@pytest.mark.parametrize("name", sorted(NORMAL_STDS))
def test_normal_initializers_have_their_standard_deviation(name):
    w, std = _dense_weight(name), NORMAL_STDS[name]
    assert w.std() == pytest.approx(std, rel=0.01)
    assert abs(w.mean()) < 0.01 * std
    # A normal, not a uniform: about 4.6% of the values lie beyond two deviations.
    assert np.mean(np.abs(w) > 2 * std) == pytest.approx(0.0455, abs=0.005)


def test_constant_initializers_and_bias_initializer():
    x = gm.Input((5,))
    dense = L.Dense(3, kernel_initializer="ones", bias_initializer="zeros")
    weights = gm.Model(x, dense(x)).get_weights()
    np.testing.assert_array_equal(weights["dense_0.weight"], np.ones((3, 5), np.float32))
    np.testing.assert_array_equal(weights["dense_0.bias"], np.zeros(3, np.float32))


def test_conv_initializers_use_torch_fans():
    x = gm.Input((8, 12, 12))
    conv = L.Conv2D(16, 3, groups=2, kernel_initializer="he_uniform", bias_initializer="ones")
    weights = gm.Model(x, conv(x)).get_weights()
    fan_in = 8 // 2 * 9  # C / groups * kh * kw, as torch's _calculate_fan_in_and_fan_out
    assert np.abs(weights["conv2d_0.weight"]).max() <= math.sqrt(6 / fan_in) * (1 + 1e-6)
    assert np.abs(weights["conv2d_0.weight"]).max() > 0.95 * math.sqrt(6 / fan_in)
    np.testing.assert_array_equal(weights["conv2d_0.bias"], np.ones(16, np.float32))


def test_initializers_depend_on_the_seed_only():
    np.testing.assert_array_equal(
        _dense_weight("he_normal", seed=3), _dense_weight("he_normal", seed=3)
    )
    assert not np.array_equal(
        _dense_weight("he_normal", seed=3), _dense_weight("he_normal", seed=4)
    )


def test_penalties_are_the_numpy_values_in_training_only():
    x = gm.Input((4, 6))
    conv_in = gm.Input((2, 5, 5))
    dense = L.Dense(
        3, kernel_regularizer=gm.regularizers.l2(0.01), bias_regularizer=gm.regularizers.l1(0.5)
    )
    model = gm.Model(x, dense(x))
    data = np.random.default_rng(0).standard_normal((2, 4, 6)).astype(np.float32)
    up = np.ones((2, 4, 3), np.float32)
    _, _, _, penalties = engine_gradients(model, data, up)
    w = model.get_weights()
    expected = [
        0.01 * np.sum(w["dense_0.weight"].astype(np.float64) ** 2),
        0.5 * np.sum(np.abs(w["dense_0.bias"].astype(np.float64))),
    ]
    np.testing.assert_allclose(penalties, expected, rtol=1e-5)

    conv = L.Conv2D(3, 3, kernel_regularizer=gm.regularizers.l1_l2(l1=0.2, l2=0.3))
    conv_model = gm.Model(conv_in, conv(conv_in))
    images = np.zeros((1, 2, 5, 5), np.float32)
    _, _, _, penalties = engine_gradients(conv_model, images, np.ones((1, 3, 3, 3), np.float32))
    kernel = conv_model.get_weights()["conv2d_0.weight"].astype(np.float64)
    expected = 0.2 * np.abs(kernel).sum() + 0.3 * (kernel**2).sum()
    np.testing.assert_allclose(penalties, [expected], rtol=1e-5)

    # Inference adds nothing.
    g = _core.Graph()
    ctx = gm.EmitContext(g, training=False, variables=model.declare_variables(g))
    model.emit(ctx, model.declare_inputs(g))
    assert ctx.losses == []


def test_training_with_penalties_matches_torch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    model = (
        gm.ModelBuilder((6,))
        .dense(8, activation="tanh", kernel_regularizer=gm.regularizers.l2(0.05))
        .dense(3, bias_regularizer=gm.regularizers.l1_l2(0.02, 0.01))
        .build(seed=0)
    )
    model.set_weights(
        {
            name: p.detach().numpy().copy()
            for name, p in zip(model.trainable_weight_names, net.parameters())
        }
    )
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1), batch_size=16)
    # l2(c) on the first weight is SGD's weight_decay 2c on it alone; the other penalty is
    # written into torch's loss.
    first_weight, first_bias, second_weight, second_bias = net.parameters()
    optimizer = torch.optim.SGD(
        [
            {"params": [first_weight], "weight_decay": 0.1},
            {"params": [first_bias, second_weight, second_bias]},
        ],
        lr=0.1,
    )
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.standard_normal((16, 6)).astype(np.float32)
        y = rng.integers(0, 3, 16)
        step = trainer.train_batch(x, y.astype(np.int32))
        optimizer.zero_grad()
        data_loss = nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        penalty = 0.02 * second_bias.abs().sum() + 0.01 * second_bias.square().sum()
        (data_loss + penalty).backward()
        reported = data_loss.item() + penalty.item() + 0.05 * first_weight.square().sum().item()
        optimizer.step()
        # The reported loss is what is minimized: the data loss and every penalty.
        assert step.loss == pytest.approx(reported, rel=1e-5)
    for name, param in zip(model.trainable_weight_names, net.parameters()):
        np.testing.assert_allclose(
            model.get_weights()[name], param.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_options_survive_get_config_and_from_config():
    dense = L.Dense(
        4, activation="mish", kernel_initializer="glorot_normal", bias_initializer="ones",
        kernel_regularizer=gm.regularizers.l2(1e-4), bias_regularizer=gm.regularizers.l1(1e-3),
    )  # fmt: skip
    rebuilt = L.Dense.from_config(dense.get_config())
    assert rebuilt.get_config() == dense.get_config()
    assert rebuilt.options.kernel_regularizer == gm.regularizers.l2(1e-4)
    conv = L.Conv2D(
        4, 3, activation="softmax", kernel_regularizer=gm.regularizers.l1_l2(1e-5, 1e-4)
    )
    assert L.Conv2D.from_config(conv.get_config()).get_config() == conv.get_config()
    # Defaults stay out of the config, so earlier model files read the same.
    assert L.Dense(4).get_config() == {"name": None, "units": 4, "use_bias": True}
    assert L.Flatten().get_config() == {"name": None}
    assert L.Flatten(2).get_config() == {"name": None, "start_dim": 2}


@L.register_function
def _doubled_tanh(x):
    return gm.ops.tanh(x) * 2.0


def test_a_lambda_of_a_registered_function_saves_and_loads(tmp_path):
    x = gm.Input((3,))
    model = gm.Model(x, L.Lambda(_doubled_tanh)(L.Lambda(gm.ops.square)(x)))
    model.save(tmp_path / "lambda.safetensors")
    loaded = gm.load_model(tmp_path / "lambda.safetensors")
    data = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(data), np.tanh(data**2) * 2.0, rtol=1e-6, atol=1e-6)
    assert [layer.get_config()["function"] for layer in loaded.layers] == [
        "square",
        "_doubled_tanh",
    ]


def test_a_lambda_of_an_unregistered_function_is_refused_at_save(tmp_path):
    x = gm.Input((3,))
    model = gm.Model(x, L.Lambda(lambda t: t * 3.0, name="triple")(x))
    np.testing.assert_allclose(model.predict(np.ones((2, 3), np.float32)), 3.0)
    with pytest.raises(
        ValueError,
        match=r"layer 'triple' \(Lambda\) cannot be saved: .*'<lambda>' is not registered",
    ):
        model.save(tmp_path / "lambda.safetensors")
    assert not (tmp_path / "lambda.safetensors").exists()


def test_function_registry_refuses_ambiguous_names():
    with pytest.raises(ValueError, match="needs a name"):
        L.register_function(lambda t: t)
    with pytest.raises(ValueError, match="already registered as 'square'"):
        L.register_function(lambda t: t * t, name="square")
    with pytest.raises(ValueError, match="Lambda function 'no_such_function' is not registered"):
        L.Lambda("no_such_function")
    assert L.Lambda("square").function is gm.ops.square


def test_add_loss_takes_scalars_only():
    g = _core.Graph()
    ctx = gm.EmitContext(g, training=True, variables={})
    ctx.scope = "custom"
    vector = g.input("x", (-1, 3), "float32")
    with pytest.raises(
        ValueError,
        match=r"added loss from layer 'custom' must be a scalar \(shape \(\)\), got \(-1, 3\)",
    ):
        ctx.add_loss(vector)
    scalar = g.op("sum", [vector], {"axes": [], "keepdims": False})
    ctx.add_loss(scalar)
    assert ctx.losses == [scalar]
