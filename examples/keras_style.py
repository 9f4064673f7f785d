"""From NumPy arrays to a saved and reloaded model, the way a Keras user writes it.

    pip install .[examples]
    python examples/keras_style.py

Digits (scikit-learn's 8x8 images) train a small network built with the functional API;
``fit`` takes ``(x, y)`` positionally with ``validation_split``, early stopping restores
the best weights, and the saved model predicts the same after it is loaded again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import gometal as gm


def build_model(seed: int) -> gm.Model:
    inputs = gm.Input((64,), name="pixels")
    h = gm.layers.Dense(128, activation="relu", kernel_initializer="he_normal")(inputs)
    h = gm.layers.Dropout(0.2)(h)
    h = gm.layers.Dense(64, activation="relu", kernel_regularizer=gm.regularizers.l2(1e-4))(h)
    outputs = gm.layers.Dense(10)(h)
    return gm.Model(inputs, outputs, seed=seed)


def main(epochs: int = 30, seed: int = 0) -> float:
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype(np.float32)
    y = digits.target[order].astype(np.int32)
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]

    model = build_model(seed)
    model.summary()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-3))
    stop = gm.callbacks.EarlyStopping(monitor="val_loss", patience=4, restore_best=True)
    trainer.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=32,
        validation_split=0.2,
        callbacks=[stop, gm.callbacks.TerminateOnNaN()],
        verbose=2,
    )
    results = trainer.evaluate(x_test, y_test, metrics=["f1_macro"])
    print(
        f"test: loss {results['loss']:.4f}, accuracy {results['accuracy']:.4f}, "
        f"f1_macro {results['f1_macro']:.4f}"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "digits.safetensors"
        model.save(path)
        reloaded = gm.load_model(path)
        same = np.array_equal(reloaded(x_test), model(x_test))
        print(f"reloaded from {path.name}: predictions identical: {same}")
    return float(results["accuracy"])


if __name__ == "__main__":
    main()
