"""Small models and trainers that the checkpoint tests save, damage and load back."""

from __future__ import annotations

import numpy as np

import gometal as gm
from gometal.train.history import History


def image_cnn_trunk() -> gm.ModelBuilder:
    """Convolution, batch norm, pooling: (3, 8, 8) images to 64 features; a head follows."""
    return (
        gm.ModelBuilder((3, 8, 8))
        .conv2d(4, 3, padding=1)
        .batch_norm()
        .relu()
        .max_pool2d(2)
        .flatten()
    )


def image_batch() -> tuple[np.ndarray, np.ndarray]:
    """Four (3, 8, 8) images and their labels among three classes."""
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    return x, np.array([0, 1, 2, 0], np.int32)


def cnn_trainer() -> gm.Trainer:
    """A CNN one step into training with Adam, a step schedule and a history: a checkpoint
    of it holds optimizer moments, scheduler state, counters and records."""
    model = image_cnn_trunk().dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-2), batch_size=4)
    trainer.scheduler = gm.schedulers.StepLR(trainer, step_size=1, gamma=0.5)
    trainer.train_batch(*image_batch())
    trainer.history = History()
    trainer.history.record(0, {"loss": 0.5, "accuracy": 0.25})
    trainer.epoch = 1
    return trainer
