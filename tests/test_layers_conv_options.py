"""Keras's per-layer options on Conv1D and Conv2DTranspose (activation, initializers by
name, weight penalties), trained beside torch and exported to onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal import layers as L
from onnx_runtime import run_ort


def _copy_torch_weights(model: gm.Model, net: nn.Module) -> None:
    params = [p for p in net.parameters()]
    model.set_weights(
        {name: p.detach().numpy().copy() for name, p in zip(model.trainable_weight_names, params)}
    )


CASES = {
    "conv1d": (
        lambda: (
            gm.ModelBuilder((3, 12))
            .conv1d(4, 3, padding=1, activation="relu", kernel_regularizer=gm.regularizers.l2(0.05))
            .flatten()
            .dense(3)
        ),
        lambda: nn.Sequential(
            nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3)
        ),
        (3, 12),
    ),
    "conv2d_transpose": (
        lambda: (
            gm.ModelBuilder((4, 3, 3))
            .conv2d_transpose(
                2, 3, stride=2, activation="tanh", kernel_regularizer=gm.regularizers.l2(0.05)
            )
            .flatten()
            .dense(3)
        ),
        lambda: nn.Sequential(
            nn.ConvTranspose2d(4, 2, 3, stride=2), nn.Tanh(), nn.Flatten(), nn.Linear(98, 3)
        ),
        (4, 3, 3),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_activation_and_penalty_train_as_torch(case):
    make_model, make_net, shape = CASES[case]
    torch.manual_seed(0)
    net = make_net()
    model = make_model().build(seed=0)
    _copy_torch_weights(model, net)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.05))
    conv_weight = next(net.parameters())
    # l2(c) on the conv weight is SGD's weight_decay 2c on it alone.
    others = [p for p in net.parameters()][1:]
    optimizer = torch.optim.SGD(
        [{"params": [conv_weight], "weight_decay": 0.1}, {"params": others}], lr=0.05
    )
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.standard_normal((8, *shape)).astype(np.float32)
        y = rng.integers(0, 3, 8)
        step = trainer.train_batch(x, y.astype(np.int32))
        optimizer.zero_grad()
        penalty = 0.05 * conv_weight.detach().square().sum().item()  # before the update
        data_loss = nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        data_loss.backward()
        optimizer.step()
        assert step.loss == pytest.approx(data_loss.item() + penalty, rel=1e-5)
    for name, param in zip(model.trainable_weight_names, net.parameters()):
        np.testing.assert_allclose(
            model.get_weights()[name], param.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_initializers_use_torch_fans():
    conv1d = L.Conv1D(6, 5, groups=2, kernel_initializer="he_uniform", bias_initializer="ones")
    model = gm.Model(x := gm.Input((4, 20)), conv1d(x), seed=3)
    weights = model.get_weights()
    bound = np.sqrt(6.0 / (2 * 5))  # he_uniform: sqrt(6 / fan_in), fan_in = C / groups * k
    assert np.abs(weights["conv1d_0.weight"]).max() <= bound
    assert np.abs(weights["conv1d_0.weight"]).max() > 0.8 * bound
    np.testing.assert_array_equal(weights["conv1d_0.bias"], np.ones(6, np.float32))
    transpose = L.Conv2DTranspose(6, 3, kernel_initializer="glorot_uniform")
    model = gm.Model(x := gm.Input((4, 5, 5)), transpose(x), seed=3)
    weight = model.get_weights()["conv2d_transpose_0.weight"]
    # torch's fans of a (C, out, kh, kw) weight: fan_in = out * 9, fan_out = C * 9.
    bound = np.sqrt(6.0 / (6 * 9 + 4 * 9))
    assert bound * 0.8 < np.abs(weight).max() <= bound


@pytest.mark.parametrize("case", sorted(CASES))
def test_options_save_load_and_export(case, tmp_path):
    make_model, _, shape = CASES[case]
    model = make_model().build(seed=1)
    x = np.random.default_rng(2).standard_normal((5, *shape)).astype(np.float32)
    model.save(tmp_path / "m.safetensors")
    loaded = gm.load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    model.export_onnx(tmp_path / "m.onnx")
    np.testing.assert_allclose(
        run_ort(tmp_path / "m.onnx", x), model.predict(x), rtol=1e-5, atol=1e-5
    )


def test_a_bad_option_names_the_layer():
    with pytest.raises(ValueError, match="Conv1D.*activation"):
        L.Conv1D(4, 3, activation="nonsense")
    with pytest.raises(ValueError, match="Conv2DTranspose.*initializer"):
        L.Conv2DTranspose(4, 3, kernel_initializer="nonsense")
