"""Smoke test for a built wheel: the engine loads its BLAS and trains a small CNN.

cibuildwheel runs it against each wheel in a fresh environment (see [tool.cibuildwheel] in
pyproject.toml). The CNN goes through convolution, ReLU, 2x2 max pooling and a dense layer,
the kernels whose code differs between x86_64 and arm64.
"""

from __future__ import annotations

import math

import numpy as np

import gometal as gm
from gometal import _core


def quadrant_labels(images: np.ndarray) -> np.ndarray:
    """The brightest quadrant of each 16x16 image: a task a small CNN learns in a few steps."""
    quadrants = images[:, 0].reshape(len(images), 2, 8, 2, 8).mean(axis=(2, 4))
    return quadrants.reshape(len(images), 4).argmax(axis=1).astype(np.int32)


def main() -> None:
    """Trains 40 steps on one fixed batch and checks that the loss stays finite and falls."""
    print("gometal BLAS:", _core.blas_info())
    rng = np.random.default_rng(0)
    images = rng.standard_normal((32, 1, 16, 16), dtype=np.float32)
    labels = quadrant_labels(images)
    model = (
        gm.ModelBuilder(input_shape=(1, 16, 16))
        .conv2d(8, 3, padding=1)
        .relu()
        .max_pool2d(2)
        .flatten()
        .dense(4)
        .build(seed=0)
    )
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2), batch_size=32
    )
    losses = [float(trainer.train_batch(images, labels).loss) for _ in range(40)]
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if not all(math.isfinite(loss) for loss in losses):
        raise SystemExit(f"a training loss is not finite: {losses}")
    if not losses[-1] < 0.5 * losses[0]:
        raise SystemExit(f"the loss did not fall by half in 40 steps: {losses}")


if __name__ == "__main__":
    main()
