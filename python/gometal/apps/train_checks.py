"""Checks of ``gometal train``'s options and data folder, before any work starts.

Every problem is a ``TrainJobError`` whose message names the option or folder, the value
received and what would work; the job prints it as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from ..base.atomic import writable_folder_problem

DEFAULT_LR = 2e-3
# The CNN halves the image three times (one 2x2 max pool per conv block).
IMAGE_SIZE_MULTIPLE = 8
MAX_BATCH_SIZE = 2**31 - 1  # the engine keeps the batch dimension in an int32
SEED_LIMIT = 2**64  # seeds are unsigned 64-bit integers


class TrainJobError(ValueError):
    """An argument or data folder ``gometal train`` cannot use; the message says what to do."""


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


def check_patience(patience: int | None) -> None:
    """Checks ``--patience``: ``None`` (no early stopping) or an int >= 0.

    Args:
        patience: the parsed value.

    Raises:
        TrainJobError: a negative value.

    Example:
        >>> check_patience(3)
    """
    if patience is not None and patience < 0:
        raise TrainJobError(
            f"--patience must be >= 0 (epochs without a better val_loss), got {patience}"
        )
