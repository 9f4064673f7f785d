"""Does the image pipeline keep up with training? Epoch time from a warm image cache
against the same batches held in memory, on workload B's CNN.

    python benchmarks/bench_pipeline.py [--images-per-class 320] [--workers 2] [--epochs 3]

Writes a generated two-class JPEG folder (96x80 images) to a temporary directory,
warms the cache with one epoch, then times alternating epochs; target: the warm-cache
epoch runs at >= 90 % of the in-memory speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import gometal as gm
from gometal.vision import DataLoader, ImageCache, ImageFolderDataset


def write_folder(root: Path, per_class: int, rng: np.random.Generator) -> None:
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(80, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.jpg")


def cnn() -> gm.Model:
    return (
        gm.ModelBuilder((3, 64, 64))
        .conv2d(16, 3, padding=1).relu().max_pool2d(2)
        .conv2d(32, 3, padding=1).batch_norm().relu().max_pool2d(2)
        .conv2d(64, 3, padding=1).relu().max_pool2d(2)
        .flatten().dense(128).relu().dropout(0.5).dense(2)
        .build(seed=0)
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=320)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.images_per_class, np.random.default_rng(0))
        loader = DataLoader(
            ImageFolderDataset(root, image_size=64),
            32,
            cache=ImageCache(),
            num_workers=args.workers,
            augment=True,
        )
        trainer = gm.Trainer(cnn(), loss="cross_entropy", optimizer=gm.optim.Adam(1e-3))
        for x, y in loader:  # the first epoch decodes every image into the cache
            trainer.train_batch(x, y)
        in_memory = [(x.copy(), y.copy()) for x, y in loader]
        ratios = []
        for epoch in range(args.epochs):
            start = time.perf_counter()
            for x, y in loader:
                trainer.train_batch(x, y)
            cached = time.perf_counter() - start
            start = time.perf_counter()
            for x, y in in_memory:
                trainer.train_batch(x, y)
            memory = time.perf_counter() - start
            ratios.append(memory / cached)
            print(f"epoch {epoch}: warm cache {cached:.2f} s, in memory {memory:.2f} s "
                  f"({ratios[-1]:.0%} of in-memory speed)")  # fmt: skip
        median = float(np.median(ratios))
        verdict = "met" if median >= 0.9 else "MISSED"
        print(f"median: {median:.0%} of in-memory speed (target >= 90 %: {verdict})")


if __name__ == "__main__":
    main()
