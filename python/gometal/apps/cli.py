"""The ``gometal`` command line.

``gometal train [DATA_DIR]`` trains a CNN on an image folder (the main job; the digits
written out as PNG files when no folder is given); ``gometal predict MODEL IMAGE...``
classifies image files with the model it saved. ``gometal train-digits`` trains a
64-128-10 MLP on scikit-learn's 8x8 handwritten digits held in memory. ``gometal train-lm``
trains a GPT on text (the standard library's source by default) and ``gometal generate``
samples from it. ``gometal serve`` serves models over the Open Inference Protocol, and
``gometal launch -n N SCRIPT`` runs a training script on N MPI ranks.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

import numpy as np

from ..viz.server_cli import add_sidecar_command
from .arguments import positive_int
from .launch_command import add_launch_command
from .lm_job import add_lm_commands
from .predict_job import add_predict_command
from .serve_command import add_serve_command
from .train_job import add_train_command

DIGITS_FEATURES = 64  # 8 x 8 pixels
DIGITS_CLASSES = 10
DIGITS_PIXEL_MAX = 16.0
EXIT_USAGE = 2  # argparse's exit status for bad arguments
MAX_BATCH_SIZE = 2**31 - 1  # the engine keeps the batch dimension in an int32
SPLIT_SEED_LIMIT = 2**32  # scikit-learn's random_state takes 32-bit seeds


def _batch_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH_SIZE}, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < SPLIT_SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32 - 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the ``gometal`` command.

    Returns:
        The parser, with one sub-command per task.

    Example:
        >>> build_parser().parse_args(["train-digits", "--epochs", "3"]).epochs
        3
    """
    parser = argparse.ArgumentParser(prog="gometal", description="gometal command line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    digits = commands.add_parser(
        "train-digits",
        help="train an MLP on scikit-learn's 8x8 digits and report held-out accuracy",
        description="Train a 64-128-10 MLP (ReLU, Adam, cross entropy) on scikit-learn's "
        "digits, holding out 20% of the images for testing.",
    )
    digits.add_argument(
        "--epochs", type=positive_int, default=20, help="passes over the training set (20)"
    )
    digits.add_argument("--batch-size", type=_batch_size, default=32, help="samples per step (32)")
    digits.add_argument(
        "--lr", type=_non_negative_float, default=1e-3, help="Adam learning rate (0.001)"
    )
    digits.add_argument("--hidden", type=positive_int, default=128, help="hidden units (128)")
    digits.add_argument(
        "--seed", type=_seed, default=0, help="seed for the split, init and shuffling (0)"
    )
    digits.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_train_command(commands)
    add_predict_command(commands)
    add_lm_commands(commands)
    add_sidecar_command(commands)
    add_serve_command(commands)
    add_launch_command(commands)
    return parser


def train_digits(args: argparse.Namespace) -> int:
    """Trains the digits MLP as configured by ``args``; returns the process exit code.

    Args:
        args: parsed ``train-digits`` arguments.

    Returns:
        0 on success, 1 when scikit-learn is missing.

    Example:
        >>> train_digits(build_parser().parse_args(["train-digits", "--epochs", "1"]))  # doctest: +SKIP
        0
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        print("train-digits needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 1
    from tqdm import tqdm

    from ..base.runtime import get_num_threads
    from ..nn.builder import ModelBuilder
    from ..train import optim
    from ..train.trainer import Trainer

    digits = load_digits()
    images = (digits.data / DIGITS_PIXEL_MAX).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=args.seed
    )
    model = (
        ModelBuilder((DIGITS_FEATURES,))
        .dense(args.hidden)
        .relu()
        .dense(DIGITS_CLASSES)
        .build(seed=args.seed)
    )
    model.summary()
    trainer = Trainer(
        model, loss="cross_entropy", optimizer=optim.Adam(lr=args.lr), batch_size=args.batch_size
    )
    print(f"{len(x_train)} training and {len(x_test)} held-out images, {get_num_threads()} threads")

    shuffler = np.random.default_rng(args.seed)
    num_batches = -(-len(x_train) // args.batch_size)
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = shuffler.permutation(len(x_train))
        # One gather per epoch yields contiguous float32 batches the engine reads in place.
        x_epoch, y_epoch = x_train[order], y_train[order].astype(np.int32)
        loss_sum = correct_sum = 0.0
        bar = tqdm(
            total=num_batches,
            desc=f"epoch {epoch}/{args.epochs}",
            leave=False,
            disable=args.no_progress,
        )
        for start in range(0, len(x_epoch), args.batch_size):
            rows = slice(start, start + args.batch_size)
            result = trainer.train_batch(x_epoch[rows], y_epoch[rows])
            count = len(x_epoch[rows])
            loss_sum += result.loss * count
            correct_sum += result.accuracy * count
            bar.update(1)
            bar.set_postfix(
                loss=f"{result.loss:.4f}", accuracy=f"{result.accuracy:.3f}", refresh=False
            )
        bar.close()
        held_out = trainer.evaluate(x_test, y_test)
        tqdm.write(
            f"epoch {epoch:>3}/{args.epochs}  loss {loss_sum / len(x_epoch):.4f}  "
            f"accuracy {correct_sum / len(x_epoch):.4f}  held-out accuracy {held_out['accuracy']:.4f}"
        )
    elapsed = time.perf_counter() - started
    final = trainer.evaluate(x_test, y_test)
    print(
        f"held-out accuracy: {final['accuracy']:.4f} on {len(x_test)} images "
        f"({trainer.step} steps in {elapsed:.2f} s)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gometal`` command.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit code.

    Example:
        >>> main(["train-digits", "--epochs", "1", "--no-progress"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    if args.command == "train-digits":
        try:
            return train_digits(args)
        except MemoryError as err:
            print(
                f"gometal train-digits: not enough memory for --hidden {args.hidden} and "
                f"--batch-size {args.batch_size} ({err}); try smaller values",
                file=sys.stderr,
            )
            return EXIT_USAGE
    # Every other command registers its handler with its parser (set_defaults).
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
