"""The child-process side of test_checkpoint.py, also imported by it for the shared parts.

``python checkpoint_worker.py resume CKPT OUT DATA EPOCHS`` loads a checkpoint in a fresh
interpreter, trains EPOCHS more epochs on the batches DATA (JSON) describes, saves the
result to OUT and prints the step losses as JSON.

``python checkpoint_worker.py fit CKPT OUT DATA EPOCHS`` does the same with ``trainer.fit``
on arrays, with validation data and the scheduler the checkpoint holds.

``python checkpoint_worker.py hammer PATH START`` saves a large checkpoint over and over,
filling every engine variable with the save's index first, until it is killed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import gometal as gm

THREADS = 2


class ArrayBatches:
    """Seeded arrays, visited in an order that depends only on ``(seed, epoch)``."""

    def __init__(self, n: int, features: int, classes: int, batch_size: int, seed: int):
        gen = np.random.default_rng(seed)
        self.x = gen.standard_normal((n, features)).astype(np.float32)
        self.y = gen.integers(0, classes, n).astype(np.int32)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))
        self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            yield self.x[rows], self.y[rows]


def write_png_folder(root: Path, per_class: int = 10, size: int = 8, seed: int = 0) -> Path:
    """Two classes of small RGB PNG images (brighter left or right half)."""
    from PIL import Image

    gen = np.random.default_rng(seed)
    for label, side in (("left", 0), ("right", 1)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = gen.integers(0, 90, (size, size, 3)).astype(np.uint8)
            half = slice(0, size // 2) if side == 0 else slice(size // 2, size)
            pixels[:, half] += 140
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def make_batches(spec: dict[str, Any]) -> Any:
    """A loader with ``set_epoch``: a shuffling, augmenting image DataLoader or arrays."""
    if spec["kind"] == "images":
        from gometal.vision import DataLoader, ImageFolderDataset

        dataset = ImageFolderDataset(spec["root"], image_size=8, channels=3)
        return DataLoader(
            dataset,
            spec["batch_size"],
            shuffle=True,
            seed=spec["seed"],
            num_workers=0,
            augment=True,
        )
    return ArrayBatches(
        spec["n"], spec["features"], spec["classes"], spec["batch_size"], spec["seed"]
    )


def train_epochs(trainer: Any, batches: Any, epochs: int) -> list[float]:
    """Trains whole epochs from ``trainer.epoch`` on; steps an attached scheduler per epoch."""
    losses = []
    for _ in range(epochs):
        epoch = getattr(trainer, "epoch", 0)
        batches.set_epoch(epoch)
        for x, y in batches:
            losses.append(trainer.train_batch(x, y).loss)
        trainer.epoch = epoch + 1
        scheduler = getattr(trainer, "scheduler", None)
        if scheduler is not None:
            scheduler.step()
    return losses


def hammer_trainer() -> Any:
    """A trainer with about 3 million float32 values of state (12 MB checkpoints)."""
    model = gm.ModelBuilder((512,)).dense(1024).relu().dense(512).relu().dense(10).build(seed=0)
    return gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-3), batch_size=8)


def fill_state(trainer: Any, index: int) -> None:
    """Sets every engine variable, the generator position and the rate from ``index``."""
    engine = trainer._engine
    for name in engine.variable_names():
        engine.set_variable(name, np.full(engine.variable_shape(name), float(index), np.float32))
    engine.rng_step = index
    trainer.set_learning_rate(index * 1e-3)


def _resume(checkpoint: str, out: str, data: str, epochs: str) -> None:
    trainer = gm.Trainer.load(checkpoint)
    losses = train_epochs(trainer, make_batches(json.loads(data)), int(epochs))
    trainer.save(out)
    print(json.dumps(losses))


def fit_arrays(spec: dict[str, Any]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Training and validation arrays for ``trainer.fit``, from a seed."""
    data = ArrayBatches(
        spec["n"], spec["features"], spec["classes"], spec["batch_size"], spec["seed"]
    )
    split = spec["n"] * 3 // 4
    return (data.x[:split], data.y[:split]), (data.x[split:], data.y[split:])


def _fit(checkpoint: str, out: str, data: str, epochs: str) -> None:
    trainer = gm.Trainer.load(checkpoint)
    train, validation = fit_arrays(json.loads(data))
    trainer.fit(train, int(epochs), validation=validation, verbose=0)
    trainer.save(out)


def _hammer(path: str, start: str) -> None:
    trainer = hammer_trainer()
    print("ready", flush=True)
    index = int(start)
    while True:
        fill_state(trainer, index)
        trainer.save(path, metadata={"index": index})
        print(index, flush=True)
        index += 1


if __name__ == "__main__":
    gm.set_num_threads(THREADS)
    {"resume": _resume, "fit": _fit, "hammer": _hammer}[sys.argv[1]](*sys.argv[2:])
