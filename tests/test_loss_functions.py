"""A custom loss as a plain function of symbolic tensors, compiled into the step: torch
parity, accuracy, errors that name the function, and saving through ``gm.losses.register``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal.io.serialization.container import CheckpointError
from gometal.io.serialization.training_state import loss_from_config
from helpers import assert_weights_match, mlp_pair, t
from loss_parity import loss_and_gradient
from test_multi_io import WEIGHTS, dataset, gm_weights, rows, torch_losses, twin_pair


def mse(y_pred, y_true):
    return gm.ops.mean(gm.ops.square(y_pred - y_true))


def pseudo_huber(y_pred, y_true):
    return gm.ops.mean(gm.ops.sqrt(gm.ops.square(y_pred - y_true) / 4.0 + 1.0) - 1.0) * 4.0


def torch_pseudo_huber(out, y):
    return (torch.sqrt((out - y) ** 2 / 4.0 + 1.0) - 1.0).mean() * 4.0


@gm.losses.register("test_registered_pseudo_huber")
def registered_pseudo_huber(y_pred, y_true):
    return pseudo_huber(y_pred, y_true)


def _regression_batches(steps=25, seed=0):
    gen = np.random.default_rng(seed)
    teacher = gen.standard_normal((8, 3))
    return [
        (x, (np.tanh(x @ teacher) * 3).astype(np.float32))
        for x in (gen.standard_normal((16, 8)).astype(np.float32) for _ in range(steps))
    ]


def test_the_value_and_gradient_of_a_function_loss_match_torch():
    gen = np.random.default_rng(0)
    z = (gen.standard_normal((10, 3)) * 3).astype(np.float32)
    y = gen.standard_normal((10, 3)).astype(np.float32)
    value, gradient = loss_and_gradient(gm.losses.get(pseudo_huber), z, y)
    z_t = torch.tensor(z, requires_grad=True)
    expected = torch_pseudo_huber(z_t, t(y))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-5)
    np.testing.assert_allclose(gradient, z_t.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("function", "reference"),
    [
        (mse, nn.MSELoss()),
        (pseudo_huber, torch_pseudo_huber),
        ("test_registered_pseudo_huber", torch_pseudo_huber),
    ],
    ids=["mse", "pseudo_huber", "registered_name"],
)
def test_training_with_a_function_loss_matches_torch(function, reference):
    net, model = mlp_pair([8, 16, 3], "tanh", seed=0)
    trainer = gm.Trainer(model, loss=function, optimizer=gm.optim.Adam(lr=0.01), batch_size=16)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    ours, theirs = [], []
    for x, y in _regression_batches():
        ours.append(trainer.train_batch(x, y).loss)
        optimizer.zero_grad()
        value = reference(net(t(x)), t(y))
        value.backward()
        optimizer.step()
        theirs.append(value.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert np.mean(theirs[-5:]) < np.mean(theirs[:5])
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)


def test_a_function_loss_for_one_output_of_several_trains_as_torch():
    net, model = twin_pair()
    trainer = gm.Trainer(
        model,
        loss={"label": "cross_entropy", "box": mse},
        loss_weights=WEIGHTS,
        optimizer=gm.optim.SGD(lr=0.05, momentum=0.9),
        batch_size=12,
    )
    reference = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = dataset()
    for step in range(24):
        r = slice((step % 4) * 12, (step % 4 + 1) * 12)
        result = trainer.train_batch(rows(x, r), rows(y, r))
        reference.zero_grad()
        total, label_loss, box_loss, _ = torch_losses(net, rows(x, r), rows(y, r))
        total.backward()
        reference.step()
        assert result.losses == pytest.approx({"label": label_loss, "box": box_loss}, rel=1e-5)
    for name, value in gm_weights(net).items():
        np.testing.assert_allclose(model.get_weights()[name], value, rtol=1e-5, atol=1e-6)


def test_the_accuracy_of_a_function_loss_is_one_minus_nmae_unless_it_says_otherwise():
    gen = np.random.default_rng(1)
    model = gm.ModelBuilder((5,)).dense(3).build(seed=0)
    x = gen.standard_normal((20, 5)).astype(np.float32)
    y = gen.standard_normal((20, 3)).astype(np.float32)
    out = model.predict(x)
    nmae = np.abs(out - y).sum() / np.abs(y).sum()
    result = gm.Trainer(model, loss=mse, batch_size=7).evaluate(x, y)
    assert result["accuracy"] == pytest.approx(max(0.0, 1 - nmae), rel=1e-5)

    one_hot = np.eye(3, dtype=np.float32)[gen.integers(0, 3, 20)]
    argmax = gm.Trainer(model, loss=gm.losses.FunctionLoss(mse, accuracy="argmax"), batch_size=7)
    expected = float((out.argmax(1) == one_hot.argmax(1)).mean())
    assert argmax.evaluate(x, one_hot)["accuracy"] == pytest.approx(expected)


def returns_per_element(y_pred, y_true):
    return gm.ops.square(y_pred - y_true)


def raises_inside(y_pred, y_true):
    raise KeyError("no such column")


def returns_a_number(y_pred, y_true):
    return 0.5


@pytest.mark.parametrize(
    ("function", "error", "message"),
    [
        (
            returns_per_element,
            ValueError,
            r"'returns_per_element' must return a scalar .* \(N, 3\)",
        ),
        (raises_inside, ValueError, r"'raises_inside' raised KeyError: 'no such column'"),
        (
            returns_a_number,
            TypeError,
            r"'returns_a_number' must return a scalar tensor .* got float",
        ),
    ],
)
def test_a_bad_function_loss_is_named_when_the_trainer_is_made(function, error, message):
    model = gm.ModelBuilder((4,)).dense(3).build(seed=0)
    with pytest.raises(error, match=message):
        gm.Trainer(model, loss=function)


def test_a_bad_function_loss_for_one_output_names_the_output():
    _, model = twin_pair()
    with pytest.raises(
        ValueError, match=r"output 'box': custom loss function 'returns_per_element'"
    ):
        gm.Trainer(model, loss={"label": "cross_entropy", "box": returns_per_element})


def test_saving_an_unregistered_function_loss_is_refused_by_name(tmp_path):
    model = gm.ModelBuilder((4,)).dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss=pseudo_huber)
    with pytest.raises(TypeError, match=r"'pseudo_huber': it is not registered; .*register"):
        trainer.save(tmp_path / "c.safetensors")


def test_a_registered_function_loss_round_trips_through_a_checkpoint(tmp_path):
    model = gm.ModelBuilder((4,)).dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss=registered_pseudo_huber, optimizer=gm.optim.SGD(lr=0.1))
    x, y = _regression_batches(1)[0]
    x = x[:, :4].copy()
    trainer.train_batch(x, y)
    trainer.save(tmp_path / "c.safetensors")
    restored = gm.Trainer.load(tmp_path / "c.safetensors")
    assert isinstance(restored.loss, gm.losses.FunctionLoss)
    assert restored.loss.function is registered_pseudo_huber
    assert restored.train_batch(x, y).loss == trainer.train_batch(x, y).loss


def test_a_checkpoint_naming_an_unregistered_function_is_refused():
    with pytest.raises(CheckpointError, match=r"no loss function is registered as 'gone'"):
        loss_from_config({"name": "function", "config": {"function": "gone", "accuracy": "nmae"}})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mse", "'mse' is a built-in loss's name"),
        ("", "needs a non-empty name"),
        ("test_registered_pseudo_huber", "already taken by the function 'registered_pseudo_huber'"),
    ],
)
def test_bad_registrations_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        gm.losses.register(name)(mse)


def test_an_unknown_accuracy_is_refused():
    with pytest.raises(ValueError, match=r"accuracy must be one of .* got 'top5'"):
        gm.losses.FunctionLoss(mse, accuracy="top5")


def test_get_wraps_functions_and_refuses_loss_classes():
    assert isinstance(gm.losses.get(mse), gm.losses.FunctionLoss)
    assert "test_registered_pseudo_huber" in gm.losses.available()
    with pytest.raises(TypeError, match=r"got the class Huber; pass an instance, e.g. Huber\(\)"):
        gm.losses.get(gm.losses.Huber)


def test_a_function_loss_has_no_per_sample_values_and_says_why():
    with pytest.raises(NotImplementedError, match="'mse' gives one value per batch"):
        gm.losses.get(mse).per_sample(None, 0, 1)
