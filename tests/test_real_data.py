"""Training on scikit-learn's bundled datasets, judged by held-out scores that scikit-learn
computes from the model's predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import gometal as gm


def fit(trainer, x, y, epochs, batch_size=32, seed=0):
    """Plain epoch loop over shuffled mini-batches (the last one may be short)."""
    order_rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = order_rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            total += trainer.train_batch(x[rows], y[rows]).loss * len(rows)
        losses.append(total / len(x))
    return losses


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def breast_cancer():
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype(np.float32),
        scaler.transform(x_test).astype(np.float32),
        y_train.astype(np.float32),
        y_test.astype(np.float32),
    )


def test_digits_classification(digits):
    """64-128-10 MLP with Adam: at least 95 % held-out accuracy on the 10 digit classes."""
    x_train, x_test, y_train, y_test = digits  # int64 labels, as scikit-learn gives them
    model = gm.ModelBuilder((64,)).dense(128).relu().dense(10).build(seed=0)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-3), batch_size=32
    )
    losses = fit(trainer, x_train, y_train, epochs=40)
    assert losses[-1] < 0.2 * losses[0]

    logits = model.predict(x_test)
    assert logits.shape == (len(x_test), 10)
    accuracy = accuracy_score(y_test, logits.argmax(axis=1))
    assert accuracy >= 0.95

    result = trainer.evaluate(x_test, y_test)
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    proba = trainer.predict_proba(x_test)
    np.testing.assert_allclose(proba, _softmax(logits.astype(np.float64)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert result["loss"] == pytest.approx(log_loss(y_test, proba, labels=range(10)), rel=1e-4)
    np.testing.assert_array_equal(trainer.predict(x_test), logits)

    train_accuracy = accuracy_score(y_train, model.predict(x_train).argmax(axis=1))
    assert trainer.evaluate(x_train, y_train)["accuracy"] == pytest.approx(train_accuracy, abs=1e-9)


def test_breast_cancer_sigmoid_binary_cross_entropy(breast_cancer):
    """30-16-1 MLP ending in a sigmoid, binary cross entropy: at least 93 % held-out accuracy."""
    x_train, x_test, y_train, y_test = breast_cancer
    model = gm.ModelBuilder((30,)).dense(16).relu().dense(1).sigmoid().build(seed=0)
    trainer = gm.Trainer(
        model, loss="binary_cross_entropy", optimizer=gm.optim.Adam(lr=1e-2), batch_size=32
    )
    fit(trainer, x_train, y_train, epochs=20)

    probability = model.predict(x_test)
    assert probability.shape == (len(x_test), 1)
    assert np.all((probability >= 0) & (probability <= 1))
    accuracy = accuracy_score(y_test, (probability[:, 0] > 0.5).astype(np.float32))
    assert accuracy >= 0.93

    result = trainer.evaluate(x_test, y_test)
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert result["loss"] == pytest.approx(log_loss(y_test, probability[:, 0]), rel=1e-4)
    np.testing.assert_allclose(trainer.predict_proba(x_test), probability, rtol=1e-6)


def test_breast_cancer_bce_with_logits(breast_cancer):
    """The same task from logits with bce_with_logits: at least 93 % held-out accuracy."""
    x_train, x_test, y_train, y_test = breast_cancer
    model = gm.ModelBuilder((30,)).dense(16).relu().dense(1).build(seed=1)
    trainer = gm.Trainer(
        model, loss="bce_with_logits", optimizer=gm.optim.Adam(lr=1e-2), batch_size=32
    )
    fit(trainer, x_train, y_train, epochs=20, seed=1)

    logits = model.predict(x_test)
    probability = trainer.predict_proba(x_test)
    np.testing.assert_allclose(
        probability, 1.0 / (1.0 + np.exp(-logits.astype(np.float64))), rtol=1e-5, atol=1e-7
    )
    accuracy = accuracy_score(y_test, (probability[:, 0] > 0.5).astype(np.float32))
    assert accuracy >= 0.93
    result = trainer.evaluate(x_test, y_test)
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert result["loss"] == pytest.approx(log_loss(y_test, probability[:, 0]), rel=1e-4)


def test_diabetes_regression():
    """10-16-1 MLP with MSE on standardised targets: held-out R^2 of at least 0.35."""
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=2)
    scaler = StandardScaler().fit(x_train)
    x_train = scaler.transform(x_train).astype(np.float32)
    x_test = scaler.transform(x_test).astype(np.float32)
    mean, std = y_train.mean(), y_train.std()
    target_train = ((y_train - mean) / std).astype(np.float32)[:, None]
    target_test = ((y_test - mean) / std).astype(np.float32)[:, None]

    model = gm.ModelBuilder((10,)).dense(16).relu().dense(1).build(seed=0)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.Adam(lr=1e-3), batch_size=32)
    fit(trainer, x_train, target_train, epochs=40)

    predicted = model.predict(x_test)
    assert predicted.shape == (len(x_test), 1)
    assert r2_score(y_test, predicted[:, 0] * std + mean) >= 0.35

    result = trainer.evaluate(x_test, target_test)
    assert result["loss"] == pytest.approx(mean_squared_error(target_test, predicted), rel=1e-5)
    # Regression accuracy is 1 - NMAE, NMAE = sum|error| / sum|target| (one batch here).
    nmae = np.abs(predicted - target_test).sum() / np.abs(target_test).sum()
    assert result["accuracy"] == pytest.approx(max(0.0, 1.0 - nmae), abs=1e-5)
    with pytest.raises(ValueError):
        trainer.predict_proba(x_test)
