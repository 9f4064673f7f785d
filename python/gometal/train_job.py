"""The main job: train a CNN on an image folder (``gometal train``).

With no folder given, it trains on scikit-learn's handwritten digits, written out locally
as PNG files, so the job runs end to end on real images with nothing to download.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from .serialization.atomic import write_atomically

DEFAULT_OUT = "gometal-run"


def build_cnn(input_shape: tuple[int, int, int], classes: int, seed: int = 0):
    """Three conv blocks (conv, batch norm, ReLU, 2x2 max pool), then a small dense head.

    Args:
        input_shape: ``(channels, height, width)``; height and width divisible by 8.
        classes: the number of output classes.
        seed: initialisation seed.

    Returns:
        A ``gm.Model`` producing logits.

    Example:
        >>> model = build_cnn((3, 32, 32), 2)  # doctest: +SKIP
    """
    import gometal as gm

    builder = gm.ModelBuilder(input_shape)
    for channels in (16, 32, 64):
        builder = builder.conv2d(channels, 3, padding=1).batch_norm().relu().max_pool2d(2)
    return builder.flatten().dense(128).relu().dropout(0.3).dense(classes).build(seed=seed)


def add_train_command(commands: Any) -> None:
    """Registers ``gometal train`` on an argparse sub-parser collection."""
    train = commands.add_parser(
        "train",
        help="train a CNN on an image folder (default: the digits, written out as PNGs)",
        description="Train a CNN on DATA_DIR, which holds one sub-folder of images per class. "
        "Without DATA_DIR, scikit-learn's 1,797 handwritten digits are written out as PNG "
        "files under OUT/data and used instead.",
    )
    train.add_argument("data_dir", nargs="?", default=None, metavar="DATA_DIR")
    train.add_argument("--epochs", type=int, default=12, help="passes over the data (12)")
    train.add_argument("--batch-size", type=int, default=32, help="images per step (32)")
    train.add_argument(
        "--image-size", type=int, default=32, help="square input size, divisible by 8 (32)"
    )
    train.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="1 (grey) or 3 (RGB); default 1 for the digits, 3 otherwise",
    )
    train.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (0.002)")
    train.add_argument("--val-fraction", type=float, default=0.2, help="held-out share (0.2)")
    train.add_argument("--seed", type=int, default=0, help="split, shuffling and init seed (0)")
    train.add_argument("--workers", type=int, default=2, help="decoding threads (2)")
    train.add_argument("--out", default=DEFAULT_OUT, help=f"output folder ({DEFAULT_OUT})")
    train.set_defaults(handler=run_train)


def save_model(model: Any, out: Path, metadata: dict[str, Any]) -> None:
    """Writes ``model.safetensors`` (the model: ``gm.load_model`` reads it back) and
    ``model.json`` (what the run was)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.safetensors", metadata=metadata)
    write_atomically(out / "model.json", json.dumps(metadata, indent=2).encode())


def run_train(args: argparse.Namespace) -> int:
    """Runs the main job; returns the process exit code."""
    from tqdm import tqdm

    import gometal as gm
    from gometal.datasets import write_digits_folder
    from gometal.vision import DataLoader, ImageCache, ImageFolderDataset

    for name in ("epochs", "batch_size", "image_size", "workers"):
        if getattr(args, name) < (0 if name == "workers" else 1):
            raise SystemExit(f"gometal train: --{name.replace('_', '-')} must be positive")
    if args.image_size % 8:
        raise SystemExit(
            f"gometal train: --image-size must be divisible by 8, got {args.image_size}"
        )
    if not 0.0 < args.val_fraction < 1.0:
        raise SystemExit(
            f"gometal train: --val-fraction must be in (0, 1), got {args.val_fraction}"
        )
    out = Path(args.out)
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = write_digits_folder(out / "data" / "digits")
        print(f"data: scikit-learn's handwritten digits, written to {data_dir}")
    channels = args.channels or (1 if args.data_dir is None else 3)

    dataset = ImageFolderDataset(data_dir, image_size=args.image_size, channels=channels)
    train_set, val_set = dataset.split(args.val_fraction, seed=args.seed)
    cache = ImageCache()
    loader_args = {
        "batch_size": args.batch_size,
        "cache": cache,
        "num_workers": args.workers,
        "seed": args.seed,
    }
    train_loader = DataLoader(train_set, shuffle=True, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    print(
        f"classes: {', '.join(dataset.classes)}; {len(train_set)} training and "
        f"{len(val_set)} validation images of {channels}x{args.image_size}x{args.image_size}"
    )

    model = build_cnn((channels, args.image_size, args.image_size), len(dataset.classes), args.seed)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=args.lr), batch_size=args.batch_size
    )
    history = []
    for epoch in range(1, args.epochs + 1):
        start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", leave=False, unit="batch")
        for x, y in bar:
            step = trainer.train_batch(x, y)
            seen += len(y)
            loss_sum += step.loss * len(y)
            correct += step.accuracy * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        val_seen, val_loss, val_correct = 0, 0.0, 0.0
        for x, y in val_loader:
            result = trainer.evaluate(x, y)
            val_seen += len(y)
            val_loss += result["loss"] * len(y)
            val_correct += result["accuracy"] * len(y)
        record = {
            "epoch": epoch,
            "loss": loss_sum / seen,
            "accuracy": correct / seen,
            "val_loss": val_loss / val_seen,
            "val_accuracy": val_correct / val_seen,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        print(
            f"epoch {epoch:3d}/{args.epochs}  loss {record['loss']:.4f}  acc {record['accuracy']:.4f}  "
            f"val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}  "
            f"({record['seconds']:.1f} s)"
        )
    save_model(
        model,
        out,
        {
            "classes": dataset.classes,
            "input_shape": [channels, args.image_size, args.image_size],
            "history": history,
            "cache": dataclasses.asdict(cache.stats()),
        },
    )
    print(
        f"saved {out / 'model.safetensors'} and {out / 'model.json'}; "
        f"validation accuracy {history[-1]['val_accuracy']:.4f}"
    )
    return 0
