"""Losses refuse what torch refuses: BCE on values outside [0, 1], cross entropy over one class.

A refused step raises ``ValueError`` and changes nothing (weights, optimizer state, batch-norm
statistics, the step count, the dropout stream), so training goes on as if it never ran.
"""

import numpy as np
import pytest
import torch

import gometal as gm


def _cnn(with_sigmoid: bool):
    builder = (
        gm.ModelBuilder((1, 8, 8))
        .conv2d(4, 3, padding=1)
        .batch_norm()
        .relu()
        .max_pool2d(2)
        .flatten()
        .dropout(0.3)
        .dense(1)
    )
    if with_sigmoid:
        builder = builder.sigmoid()
    return builder.build(seed=0)


def _images(n=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32) * 3


def _torch_bce_error(p: np.ndarray, t: np.ndarray) -> str:
    with pytest.raises(RuntimeError) as caught:
        torch.nn.BCELoss()(torch.from_numpy(p), torch.from_numpy(t))
    return str(caught.value)


@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum", "lbfgs", "adam_loss_scaling"])
def test_bce_on_outputs_outside_unit_interval_raises_and_changes_nothing(optimizer):
    model = _cnn(with_sigmoid=False)  # raw outputs: some are outside [0, 1]
    make = {
        "adam": lambda: gm.optim.Adam(lr=1e-2),
        "sgd_momentum": lambda: gm.optim.SGD(lr=0.1, momentum=0.9),
        "lbfgs": lambda: gm.optim.LBFGS(),
        "adam_loss_scaling": lambda: gm.optim.Adam(lr=1e-2),
    }[optimizer]
    scaling = optimizer == "adam_loss_scaling"
    trainer = gm.Trainer(model, loss="binary_cross_entropy", optimizer=make(), loss_scaling=scaling)
    x, y = _images(), np.ones((8, 1), np.float32)
    outputs = model.predict(x)
    assert (outputs < 0).any() or (outputs > 1).any()
    assert "input should be between 0 and 1" in _torch_bce_error(outputs, y)

    before = model.get_weights()
    rng_before, step_before = trainer._engine.rng_step, trainer.step
    with pytest.raises(
        ValueError,
        match=r"\[binary_cross_entropy\] all elements of the model's "
        r"outputs .* should be between 0 and 1, got -?[0-9.e+-]+ "
        r"at index \(\d+, 0\)",
    ):
        trainer.train_batch(x, y)
    after = model.get_weights()
    for name, value in before.items():  # batch-norm running statistics included
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert trainer.step == step_before and trainer._engine.rng_step == rng_before
    with pytest.raises(ValueError, match="should be between 0 and 1"):
        trainer.evaluate(x, y)


def test_bce_on_targets_outside_unit_interval_raises_like_torch():
    model = _cnn(with_sigmoid=True)
    trainer = gm.Trainer(model, loss="binary_cross_entropy", optimizer="adam")
    x = _images()
    for bad in (1.5, -0.25):
        y = np.full((8, 1), 0.5, np.float32)
        y[3, 0] = bad
        assert "target should be between 0 and 1" in _torch_bce_error(model.predict(x), y)
        with pytest.raises(
            ValueError,
            match=rf"the targets should be between 0 and 1, got "
            rf"{bad} at index \(3, 0\)",
        ):
            trainer.train_batch(x, y)


def test_training_after_a_refused_step_is_exactly_training_without_it():
    x, good_y = _images(seed=1), (np.arange(8) % 2).astype(np.float32).reshape(8, 1)
    bad_y = good_y.copy()
    bad_y[0, 0] = 2.0
    refused = gm.Trainer(_cnn(True), loss="binary_cross_entropy", optimizer="adam")
    clean = gm.Trainer(_cnn(True), loss="binary_cross_entropy", optimizer="adam")
    with pytest.raises(ValueError):
        refused.train_batch(x, bad_y)
    for _ in range(3):
        a, b = refused.train_batch(x, good_y), clean.train_batch(x, good_y)
        assert a.loss == b.loss
    for name, value in clean.model.get_weights().items():
        np.testing.assert_array_equal(refused.model.get_weights()[name], value, err_msg=name)


def test_bce_in_range_matches_torch():
    model = _cnn(with_sigmoid=True)
    trainer = gm.Trainer(model, loss="binary_cross_entropy", optimizer="sgd")
    x = _images(seed=2)
    y = np.random.default_rng(3).uniform(0, 1, (8, 1)).astype(np.float32)
    p = model.predict(x)
    expected = torch.nn.BCELoss()(torch.from_numpy(p), torch.from_numpy(y)).item()
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "loss", ["cross_entropy", "sparse_cross_entropy", "categorical_cross_entropy"]
)
def test_cross_entropy_on_one_output_is_refused_at_construction(loss):
    model = gm.ModelBuilder((4,)).dense(1).build(seed=0)
    # torch computes 0 for any logits: nothing would train.
    logits = torch.randn(5, 1, requires_grad=True)
    torch.nn.functional.cross_entropy(logits, torch.zeros(5, dtype=torch.long)).backward()
    assert float(logits.grad.abs().max()) == 0.0
    with pytest.raises(
        ValueError,
        match=rf"loss '{loss}' needs at least 2 classes, but the "
        r"model has 1 output; .*bce_with_logits",
    ):
        gm.Trainer(model, loss=loss, optimizer="adam")


def test_lbfgs_trial_point_outside_the_range_leaves_weights_and_memory_as_they_were():
    # The first evaluation is valid (every output 0.5); a later trial point of the same step
    # pushes outputs past 1, so the step is refused mid-way and must be undone.
    x_in = gm.Input((2,))
    model = gm.Model(x_in, gm.layers.Dense(1, name="fc")(x_in))
    start = {"fc.weight": np.zeros((1, 2), np.float32), "fc.bias": np.full(1, 0.5, np.float32)}
    model.set_weights(start)
    optimizer = gm.optim.LBFGS(lr=1.0, max_iter=20)
    trainer = gm.Trainer(model, loss="binary_cross_entropy", optimizer=optimizer)
    x = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
    y = np.ones((8, 1), np.float32)
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(np.log(2.0), rel=1e-6)
    with pytest.raises(ValueError, match="should be between 0 and 1, got 1"):
        trainer.train_batch(x, y)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, start[name])
    assert trainer.step == 0
    fresh_model = gm.Model(x_in, gm.layers.Dense(1, name="fc")(x_in))
    fresh_model.set_weights(start)
    fresh = gm.Trainer(fresh_model, loss="binary_cross_entropy", optimizer=gm.optim.LBFGS())
    scalars, vectors = trainer._host_optimizer.state()
    fresh_scalars, fresh_vectors = fresh._host_optimizer.state()
    assert scalars == fresh_scalars and vectors.keys() == fresh_vectors.keys()
