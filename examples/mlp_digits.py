"""Train a small MLP on scikit-learn's 8x8 handwritten digits with gometal.

    pip install .[examples]
    python examples/mlp_digits.py

Each call to ``trainer.train_batch`` runs the whole training step (forward pass, loss,
backward pass, Adam update) as one call into the engine, which keeps the weights and the
optimizer state. Held-out accuracy is usually around 97%.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gometal as gm


def main(epochs: int = 20, batch_size: int = 32, seed: int = 0) -> float:
    digits = load_digits()
    # Pixels are 0..16. Scaled and stored as float32, batches are read in place by the engine.
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)  # class indices, as cross-entropy expects
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )

    model = gm.ModelBuilder(input_shape=(64,)).dense(128).relu().dense(10).build(seed=seed)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-3), batch_size=batch_size
    )

    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        loss_sum = correct = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]  # the last batch may be shorter
            step = trainer.train_batch(x_train[rows], y_train[rows])
            loss_sum += step.loss * len(rows)
            correct += step.accuracy * len(rows)
        if epoch == 1 or epoch % 5 == 0:
            print(
                f"epoch {epoch:2d}: loss {loss_sum / len(order):.4f}, "
                f"train accuracy {correct / len(order):.3f}"
            )

    # Evaluation runs the forward pass only (dropout off, no update) over the held-out split.
    accuracy = trainer.evaluate(x_test, y_test)["accuracy"]
    print(f"held-out accuracy: {accuracy:.3f} on {len(x_test)} digits")
    return accuracy


if __name__ == "__main__":
    main()
