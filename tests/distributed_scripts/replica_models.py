"""The model, data and optimizers both sides of the distributed tests build: the ranks under
mpirun (the scripts here) and the one-process reference in the test."""

from __future__ import annotations

import numpy as np

import gometal as gm

SIZES = (12, 24, 16, 4)
STEPS = 20
SAMPLES = 160  # two epochs of 20 steps at a global batch of 16
LOADER_SEED = 3

OPTIMIZERS = {
    "sgd_momentum": lambda: gm.optim.SGD(0.05, momentum=0.9),
    "adam": lambda: gm.optim.Adam(5e-3),
    "adamw": lambda: gm.optim.AdamW(5e-3, weight_decay=0.1),
    # Clipping must read the global gradient: clipping each rank's own would differ.
    "sgd_clipped": lambda: gm.optim.SGD(0.05, momentum=0.9, clip_grad_norm=0.2),
}


def mlp(seed: int, hidden: int = SIZES[1]) -> gm.Model:
    """A tanh MLP (no unit sits on a kink, where rounding alone could flip a gradient)."""
    return (
        gm.ModelBuilder((SIZES[0],))
        .dense(hidden)
        .tanh()
        .dense(SIZES[2])
        .tanh()
        .dense(SIZES[3])
        .build(seed=seed)
    )


def regression_data() -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets every process draws alike."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, SIZES[0])).astype(np.float32)
    y = rng.standard_normal((SAMPLES, SIZES[3])).astype(np.float32)
    return x, y


def train(trainer: gm.Trainer, batch_size: int) -> int:
    """STEPS steps over shuffled batches (sharded by rank in a distributed job); returns
    the steps after which this rank's weights differed from rank 0's (0 outside a job)."""
    x, y = regression_data()
    loader = gm.training.ArrayLoader(x, y, batch_size=batch_size, seed=LOADER_SEED)
    steps = differing = 0
    while steps < STEPS:
        for xb, yb in loader:
            trainer.train_batch(xb, yb)
            steps += 1
            weights = np.concatenate([w.ravel() for w in trainer.model.get_weights().values()])
            differing += int(not np.array_equal(gm.distributed.broadcast(weights), weights))
            if steps == STEPS:
                return differing
    return differing


CLASSES = 3
EVALUATION_SAMPLES = 50  # 17, 17 and 16 on three ranks: uneven shards


def classifier(seed: int) -> gm.Model:
    """A softmax classifier over ``SIZES[0]`` features."""
    return (
        gm.ModelBuilder((SIZES[0],))
        .dense(SIZES[1])
        .tanh()
        .dense(CLASSES)
        .softmax()
        .build(seed=seed)
    )


def classification_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, labels (every class present) and sample weights every process draws alike."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((EVALUATION_SAMPLES, SIZES[0])).astype(np.float32)
    y = (np.arange(EVALUATION_SAMPLES) % CLASSES).astype(np.int32)
    x[:, :CLASSES] += 0.8 * np.eye(CLASSES, dtype=np.float32)[y]  # learnable, not perfect
    weights = rng.uniform(0.5, 2.0, EVALUATION_SAMPLES).astype(np.float32)
    return x, y, weights
