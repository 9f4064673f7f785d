"""The main job: train a CNN on an image folder (``gometal train``).

With no folder given, it trains on scikit-learn's handwritten digits, written out locally
as PNG files, so the job runs end to end on real images with nothing to download.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..base.atomic import writable_folder_problem, write_atomically

DEFAULT_OUT = "gometal-run"
DEFAULT_LR = 2e-3
# The CNN halves the image three times (one 2x2 max pool per conv block).
IMAGE_SIZE_MULTIPLE = 8
EXIT_USAGE = 2  # argparse's exit status for bad arguments
MAX_BATCH_SIZE = 2**31 - 1  # the engine keeps the batch dimension in an int32
SEED_LIMIT = 2**64  # seeds are unsigned 64-bit integers


class TrainJobError(ValueError):
    """An argument or data folder ``gometal train`` cannot use; the message says what to do."""


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
    from ..nn.builder import ModelBuilder

    builder = ModelBuilder(input_shape)
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
    train.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate ({DEFAULT_LR:g})"
    )
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


def check_arguments(args: argparse.Namespace) -> None:
    """Checks the numeric ``gometal train`` options before any work starts.

    Args:
        args: the parsed ``gometal train`` arguments.

    Raises:
        TrainJobError: naming the option, the value received and what it accepts.

    Example:
        >>> check_arguments(argparse.Namespace(epochs=12, batch_size=32, image_size=32,
        ...     lr=0.002, val_fraction=0.2, workers=2, seed=0))
    """
    if args.epochs < 1:
        raise TrainJobError(f"--epochs must be at least 1, got {args.epochs}")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise TrainJobError(
            f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, got {args.batch_size}"
        )
    if args.workers < 0:
        raise TrainJobError(
            f"--workers must be >= 0 (0 decodes on the main thread), got {args.workers}"
        )
    if not 0 <= args.seed < SEED_LIMIT:
        raise TrainJobError(f"--seed must be between 0 and 2**64 - 1, got {args.seed}")
    size = args.image_size
    if size < IMAGE_SIZE_MULTIPLE or size % IMAGE_SIZE_MULTIPLE:
        lower = max(IMAGE_SIZE_MULTIPLE, size // IMAGE_SIZE_MULTIPLE * IMAGE_SIZE_MULTIPLE)
        raise TrainJobError(
            f"--image-size must be a positive multiple of {IMAGE_SIZE_MULTIPLE} (the CNN "
            f"halves it three times), got {size}; e.g. {lower} or {lower + IMAGE_SIZE_MULTIPLE}"
        )
    if not (math.isfinite(args.lr) and args.lr >= 0):
        raise TrainJobError(
            f"--lr must be a finite number >= 0, got {args.lr}; the default is {DEFAULT_LR:g}"
        )
    if not 0.0 < args.val_fraction < 1.0:
        raise TrainJobError(
            f"--val-fraction must be between 0 and 1 (both excluded), got {args.val_fraction}; "
            "e.g. 0.2 holds out a fifth of each class"
        )


def prepare_output_folder(out: Path) -> None:
    """Creates ``out`` and checks that files can be written there, before training starts.

    Args:
        out: the ``--out`` folder.

    Raises:
        TrainJobError: ``out`` is a file, or cannot be created or written.

    Example:
        >>> prepare_output_folder(Path("gometal-run"))  # doctest: +SKIP
    """
    problem = writable_folder_problem(out, "--out")
    if problem is not None:
        raise TrainJobError(problem)


def check_data_folder(data_dir: Path) -> None:
    """Checks that ``DATA_DIR`` is an existing folder.

    Args:
        data_dir: the folder given on the command line.

    Raises:
        TrainJobError: the path does not exist or is a file.

    Example:
        >>> check_data_folder(Path("pets"))  # doctest: +SKIP
    """
    expected = "pass a folder holding one sub-folder of images per class"
    if not data_dir.exists():
        raise TrainJobError(
            f"DATA_DIR {os.fspath(data_dir)!r} does not exist; {expected}, or leave DATA_DIR "
            "out to train on the digits"
        )
    if not data_dir.is_dir():
        raise TrainJobError(f"DATA_DIR {os.fspath(data_dir)!r} is a file; {expected}")


def check_splits(dataset: Any, train_count: int, val_count: int, val_fraction: float) -> None:
    """Checks that the data has two classes or more and that neither split is empty.

    Args:
        dataset: the ``ImageFolderDataset`` of ``DATA_DIR``.
        train_count: images in the training split.
        val_count: images in the validation split.
        val_fraction: the ``--val-fraction`` that made the split.

    Raises:
        TrainJobError: one class only, or an empty training or validation split.

    Example:
        >>> check_splits(dataset, 80, 20, 0.2)  # doctest: +SKIP
    """
    root = os.fspath(dataset.root)
    if len(dataset.classes) < 2:
        raise TrainJobError(
            f"DATA_DIR {root!r} has a single class folder ({dataset.classes[0]!r}); a "
            "classifier needs two or more: add one sub-folder of images per class"
        )
    for count, split in ((val_count, "validation"), (train_count, "training")):
        if count == 0:
            raise TrainJobError(
                f"{len(dataset)} images in {len(dataset.classes)} classes leave no {split} "
                f"images with --val-fraction {val_fraction}; put at least 2 images in each "
                "class folder (one to train on, one to validate)"
            )


def run_train(args: argparse.Namespace) -> int:
    """Runs the main job; returns the process exit code.

    Args:
        args: the parsed ``gometal train`` arguments.

    Returns:
        0 on success; 2 after a one-line ``gometal train: ...`` error on stderr when an
        argument or the data folder cannot be used (the exit status of argparse's errors).

    Example:
        >>> run_train(build_parser().parse_args(["train", "pets"]))  # doctest: +SKIP
        0
    """
    try:
        return _train(args)
    except TrainJobError as err:
        print(f"gometal train: {err}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as err:
        print(
            f"gometal train: not enough memory for --image-size {args.image_size} and "
            f"--batch-size {args.batch_size} ({err}); try smaller values",
            file=sys.stderr,
        )
        return EXIT_USAGE


def _load_data(args: argparse.Namespace, out: Path) -> tuple[Any, Any, Any, int]:
    """The dataset, its (train, val) split and the channel count, or a TrainJobError."""
    from ..data.vision import ImageFolderDataset

    if args.data_dir is None:
        try:
            from ..data.datasets import write_digits_folder

            data_dir = write_digits_folder(out / "data" / "digits")
        except ImportError as err:
            raise TrainJobError(
                f"training on the digits needs scikit-learn ({err}): pip install scikit-learn, "
                "or pass DATA_DIR"
            ) from err
        print(f"data: scikit-learn's handwritten digits, written to {data_dir}")
    else:
        data_dir = Path(args.data_dir)
    channels = args.channels or (1 if args.data_dir is None else 3)
    try:
        dataset = ImageFolderDataset(data_dir, image_size=args.image_size, channels=channels)
    except (ValueError, OSError) as err:
        raise TrainJobError(" ".join(str(err).split())) from err
    train_set, val_set = dataset.split(args.val_fraction, seed=args.seed)
    check_splits(dataset, len(train_set), len(val_set), args.val_fraction)
    return dataset, train_set, val_set, channels


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.vision import DataLoader, ImageCache
    from ..train import optim
    from ..train.trainer import Trainer

    check_arguments(args)
    if args.data_dir is not None:
        check_data_folder(Path(args.data_dir))
    out = Path(args.out)
    prepare_output_folder(out)
    dataset, train_set, val_set, channels = _load_data(args, out)
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
    trainer = Trainer(
        model, loss="cross_entropy", optimizer=optim.Adam(lr=args.lr), batch_size=args.batch_size
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
