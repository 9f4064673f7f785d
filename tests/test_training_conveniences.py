"""Gradient accumulation, gradients for inspection, sample and class weights, Keras's fit
forms, prediction over loaders and copies of trainers, against torch and NumPy."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import gometal as gm
from helpers import assert_weights_match, mlp_pair, t

SIZES = (5, 7, 3)


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, SIZES[0])).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_accumulating_k_batches_equals_one_k_times_larger_batch(optimizer):
    make = {
        "sgd": lambda: gm.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
        "adam": lambda: gm.optim.Adam(lr=0.01),
    }[optimizer]
    _, accumulating = mlp_pair(SIZES, seed=1)
    _, large = mlp_pair(SIZES, seed=1)
    a = gm.Trainer(accumulating, loss="cross_entropy", optimizer=make(), accumulate_steps=4)
    b = gm.Trainer(large, loss="cross_entropy", optimizer=make())
    x, y = data(96)
    for update in range(3):
        rows = slice(update * 32, (update + 1) * 32)
        for micro in range(4):
            part = slice(rows.start + micro * 8, rows.start + (micro + 1) * 8)
            a.train_batch(x[part], y[part])
            assert a.step == update + (micro == 3)
        b.train_batch(x[rows], y[rows])
        for name, value in large.get_weights().items():
            np.testing.assert_allclose(
                accumulating.get_weights()[name], value, rtol=1e-5, atol=1e-6
            )


def test_accumulation_refuses_what_it_cannot_do():
    _, model = mlp_pair(SIZES)
    with pytest.raises(ValueError, match="accumulate_steps must be an int >= 1, got 0"):
        gm.Trainer(model, loss="cross_entropy", accumulate_steps=0)
    with pytest.raises(ValueError, match="needs an in-graph optimizer"):
        gm.Trainer(model, loss="cross_entropy", optimizer="lbfgs", accumulate_steps=2)
    with pytest.raises(ValueError, match="does not combine with loss scaling"):
        gm.Trainer(model, loss="cross_entropy", loss_scaling=True, accumulate_steps=2)


def test_compute_gradients_match_torch_and_change_nothing():
    net, model = mlp_pair(SIZES, seed=2)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    x, y = data(16, seed=3)
    grads = trainer.compute_gradients(x, y)
    torch.nn.functional.cross_entropy(net(t(x)), t(y)).backward()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for i, linear in enumerate(linears):
        np.testing.assert_allclose(
            grads[f"dense_{i}.weight"], linear.weight.grad.numpy(), rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(
            grads[f"dense_{i}.bias"], linear.bias.grad.numpy(), rtol=1e-5, atol=1e-7
        )
    assert trainer.step == 0
    assert_weights_match(model, net, rtol=0, atol=0)


def test_sample_weights_train_as_a_weighted_torch_loss():
    net, model = mlp_pair(SIZES, seed=4)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.2, momentum=0.5))
    reference = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.5)
    rng = np.random.default_rng(5)
    for step in range(20):
        x, y = data(12, seed=10 + step)
        w = rng.uniform(0, 2, 12).astype(np.float32)
        reference.zero_grad()
        per_sample = torch.nn.functional.cross_entropy(net(t(x)), t(y), reduction="none")
        loss = (per_sample * t(w)).mean()  # Keras's sum_over_batch_size
        loss.backward()
        reference.step()
        result = (
            trainer.train_batch(x, y, sample_weight=w) if step % 2 else trainer.train_batch(x, y, w)
        )
        assert result.loss == pytest.approx(loss.item(), rel=1e-5)
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)
    x, y = data(40, seed=99)
    w = rng.uniform(0, 2, 40).astype(np.float32)
    with torch.no_grad():
        expected = (
            torch.nn.functional.cross_entropy(net(t(x)), t(y), reduction="none") * t(w)
        ).mean()
    assert trainer.evaluate(x, y, batch_size=40, sample_weight=w)["loss"] == pytest.approx(
        expected.item(), rel=1e-5
    )
    assert trainer.evaluate(x, y)["loss"] != pytest.approx(expected.item(), rel=1e-3)


def test_fit_with_class_weight_scales_each_sample_by_its_class():
    net, model = mlp_pair(SIZES, seed=6)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1), batch_size=8)
    reference = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = data(32, seed=7)
    table = np.array([1.0, 3.0, 0.5], np.float32)
    trainer.fit((x, y), epochs=2, class_weight={1: 3.0, 2: 0.5}, shuffle=False, verbose=0)
    for _ in range(2):
        for start in range(0, 32, 8):
            xb, yb = x[start : start + 8], y[start : start + 8]
            reference.zero_grad()
            per_sample = torch.nn.functional.cross_entropy(net(t(xb)), t(yb), reduction="none")
            (per_sample * t(table[yb])).mean().backward()
            reference.step()
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="class_weight names class 3, but the model has 3 classes"):
        trainer.fit((x, y), epochs=1, class_weight={3: 1.0}, verbose=0)
    with pytest.raises(
        ValueError, match=r"sample_weight must hold finite weights >= 0, got -1.0 at position 2"
    ):
        trainer.fit(
            (x, y), epochs=1, sample_weight=np.array([1, 1, -1] + [1] * 29, np.float32), verbose=0
        )


def test_keras_fit_forms_and_validation_split():
    x, y = data(50, seed=8)
    histories = []
    for call in (
        lambda tr: tr.fit(
            x, y, epochs=2, batch_size=10, validation_split=0.2, verbose=0, shuffle=False
        ),
        lambda tr: tr.fit(x, y, 10, 2, validation_split=0.2, verbose=0, shuffle=False),
        lambda tr: tr.fit(
            (x[:40], y[:40]),
            2,
            validation_data=(x[40:], y[40:]),
            batch_size=10,
            verbose=0,
            shuffle=False,
        ),
    ):
        _, model = mlp_pair(SIZES, seed=9)
        histories.append(
            call(gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))).to_dict()
        )
    assert histories[0]["history"]["val_loss"] == histories[2]["history"]["val_loss"]
    assert histories[1]["history"]["loss"] == histories[2]["history"]["loss"]
    _, model = mlp_pair(SIZES)
    trainer = gm.Trainer(model, loss="cross_entropy")
    assert len(trainer.fit(x, y, verbose=0)) == 1  # Keras's default: one epoch
    with pytest.raises(TypeError, match="fit got epochs twice"):
        trainer.fit((x, y), 2, epochs=3)
    with pytest.raises(ValueError, match=r"validation_split must be in \(0, 1\), got 1.5"):
        trainer.fit(x, y, validation_split=1.5)
    with pytest.raises(ValueError, match="pass validation data or validation_split, not both"):
        trainer.fit(x, y, validation=(x, y), validation_split=0.1)


def test_predict_and_evaluate_take_any_loader_or_generator():
    _, model = mlp_pair(SIZES, seed=10)
    trainer = gm.Trainer(model, loss="cross_entropy")
    x, y = data(30, seed=11)

    def pairs():
        for start in range(0, 30, 7):
            yield x[start : start + 7], y[start : start + 7]

    def inputs_only():
        for start in range(0, 30, 9):
            yield x[start : start + 9]

    # Batches of 7 and 9 rows run another product kernel than 30 rows do: they agree to
    # float32 rounding, not bit for bit.
    expected = trainer.predict(x)
    np.testing.assert_allclose(trainer.predict(pairs()), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        trainer.predict_proba(inputs_only()), trainer.predict_proba(x), rtol=1e-5, atol=1e-7
    )
    assert trainer.evaluate(pairs())["loss"] == pytest.approx(
        trainer.evaluate(x, y)["loss"], rel=1e-5
    )
    with pytest.raises(ValueError, match="yielded no batch"):
        trainer.predict(iter([]))


def test_trainers_copy_and_pickle_through_checkpoints():
    _, model = mlp_pair(SIZES, seed=12)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=0.01))
    x, y = data(16, seed=13)
    trainer.train_batch(x, y)
    clones = [copy.deepcopy(trainer), pickle.loads(pickle.dumps(trainer))]
    for clone in clones:
        assert clone.model is not model and clone.step == 1
    # The same state trains to the same numbers (Adam's slots and step came along).
    expected = trainer.train_batch(x, y).loss
    for clone in clones:
        assert clone.train_batch(x, y).loss == expected
    # A copy is independent: training it leaves the original's weights as they were.
    before = model.get_weights()
    clones[0].train_batch(x, y)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])
