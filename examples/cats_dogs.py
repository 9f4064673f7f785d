"""Train the go-metal style cats-vs-dogs CNN on a folder with cat/ and dog/ sub-folders.

    python examples/cats_dogs.py PATH/TO/FOLDER --epochs 10

The folder may hold any number of JPEG or PNG images of any size per class; unreadable
files are skipped with one warning. Images are resized to 64x64 RGB and augmented with
random crops and flips; 20 % are held out for validation.
"""

from __future__ import annotations

import argparse
import sys

import gometal as gm
from gometal.vision import IMAGENET_MEAN, IMAGENET_STD, DataLoader, ImageCache, ImageFolderDataset


def cats_dogs_cnn(seed: int = 0) -> gm.Model:
    """3x64x64 in, two logits out: three conv blocks and a dense head with dropout."""
    return (
        gm.ModelBuilder(input_shape=(3, 64, 64))
        .conv2d(16, 3, padding=1).relu().max_pool2d(2)
        .conv2d(32, 3, padding=1).batch_norm().relu().max_pool2d(2)
        .conv2d(64, 3, padding=1).relu().max_pool2d(2)
        .flatten().dense(128).relu().dropout(0.5).dense(2)
        .build(seed=seed)
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder with cat/ and dog/ sub-folders")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    dataset = ImageFolderDataset(args.folder, image_size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    dataset = dataset.filter_classes(["cat", "dog"])
    train_set, val_set = dataset.split(0.2, seed=args.seed)
    cache = ImageCache()  # decoded images, shared by both loaders
    train = DataLoader(train_set, args.batch_size, seed=args.seed, cache=cache, augment=True)
    val = DataLoader(val_set, args.batch_size, shuffle=False, cache=cache)

    model = cats_dogs_cnn(args.seed)
    model.summary()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(args.lr),
                         batch_size=args.batch_size)  # fmt: skip
    for epoch in range(1, args.epochs + 1):
        steps = [trainer.train_batch(x, y) for x, y in train]
        loss = sum(s.loss for s in steps) / len(steps)
        results = [(trainer.evaluate(x, y), len(y)) for x, y in val]
        seen = sum(n for _, n in results)
        val_acc = sum(r["accuracy"] * n for r, n in results) / seen
        print(f"epoch {epoch:2d}  train loss {loss:.4f}  val accuracy {val_acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
