"""Regression "accuracy" (go-metal's 1 - NMAE) pools the whole set: it does not depend on
how the data is batched, in ``evaluate`` or per epoch in ``fit``."""

import numpy as np
import pytest

import gometal as gm


def _problem(n=203, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    # Targets of different sizes per row (large where x[:, 0] > 1), so per-batch ratios
    # differ from the pooled one.
    scale = np.where(x[:, 0] > 1.0, 5.0, 0.5).astype(np.float32)
    y = (x @ rng.standard_normal((5, 2)).astype(np.float32)) * scale[:, None]
    return x, y


def _pooled_accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    # The NumPy formula: 1 - sum |y_pred - y| / sum |y| over every element of the set.
    return 1.0 - np.abs(predictions.astype(np.float64) - targets).sum() / np.abs(targets).sum()


def _trained_trainer():
    """A trainer whose model fits the data partly; its learning rate is then 0, so fit and
    evaluate see one fixed model."""
    model = gm.ModelBuilder((5,)).dense(16).relu().dense(2).build(seed=1)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.Adam(lr=0.01))
    x, y = _problem()
    for _ in range(150):
        trainer.train_batch(x, y)
    trainer.set_learning_rate(0.0)
    return trainer


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_evaluate_accuracy_is_the_pooled_one_minus_nmae_at_every_batch_size(batch_size):
    trainer = _trained_trainer()
    x, y = _problem()
    expected = _pooled_accuracy(trainer.predict(x), y)
    assert 0.05 < expected < 0.95
    got = trainer.evaluate(x, y, batch_size=batch_size)["accuracy"]
    assert got == pytest.approx(expected, rel=1e-5)
    assert got == pytest.approx(1.0 - gm.metrics.nmae(y, trainer.predict(x)), rel=1e-5)


@pytest.mark.parametrize("batch_size", [5, 32])
def test_fit_epoch_accuracy_pools_the_epoch(batch_size):
    trainer = _trained_trainer()
    x, y = _problem()
    assert 0.05 < _pooled_accuracy(trainer.predict(x), y) < 0.95
    history = trainer.fit(
        (x, y), epochs=1, batch_size=batch_size, shuffle=False, verbose=0, validation=(x, y)
    )
    expected = _pooled_accuracy(trainer.predict(x), y)
    assert history["accuracy"][0] == pytest.approx(expected, rel=1e-5)
    assert history["val_accuracy"][0] == pytest.approx(expected, rel=1e-5)


def test_train_batch_accuracy_is_clamped_like_go_metal():
    trainer = _trained_trainer()
    x, y = _problem()
    # Tiny targets: the error is far larger than the targets, so 1 - NMAE is negative.
    tiny = np.full_like(y, 1e-3)
    assert _pooled_accuracy(trainer.predict(x), tiny) < -10
    assert trainer.train_batch(x, tiny).accuracy == 0.0
    assert trainer.evaluate(x, tiny)["accuracy"] == 0.0
    assert trainer.train_batch(x, np.zeros_like(y)).accuracy == 0.0  # NMAE undefined
    expected = _pooled_accuracy(trainer.predict(x), y)
    assert 0 < expected < 1
    assert trainer.train_batch(x, y).accuracy == pytest.approx(expected, rel=1e-5)
