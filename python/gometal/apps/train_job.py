"""The main job: train a CNN on an image folder (``gometal train``).

With no folder given, it trains on scikit-learn's handwritten digits, written out locally
as PNG files, so the job runs end to end on real images with nothing to download. The job
runs on ``Trainer.fit``: a checkpoint after every epoch (``--resume`` continues from the
last one exactly), optional early stopping and plots, and the preprocessing recorded with
the saved model for ``gometal predict``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..base.atomic import write_atomically
from .train_checks import (
    DEFAULT_LR,
    TrainJobError,
    check_arguments,
    check_data_folder,
    check_patience,
    check_splits,
    prepare_output_folder,
)
from .train_resume import (
    CHECKPOINT_FOLDER,
    latest_checkpoint,
    new_run_settings,
    read_run_record,
    resumed_settings,
    write_run_record,
)

DEFAULT_OUT = "gometal-run"
EXIT_USAGE = 2  # argparse's exit status for bad arguments
KEEP_CHECKPOINTS = 2  # the newest epoch checkpoints a run keeps; --resume reads the last
PLOT_MODES = ("html", "sidecar")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_OUT",
    "TrainJobError",
    "add_train_command",
    "build_cnn",
    "run_train",
    "save_model",
]


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
    """Registers ``gometal train`` on an argparse sub-parser collection.

    Args:
        commands: the collection ``add_subparsers`` returned.

    Example:
        >>> add_train_command(parser.add_subparsers())  # doctest: +SKIP
    """
    train = commands.add_parser(
        "train",
        help="train a CNN on an image folder (default: the digits, written out as PNGs)",
        description="Train a CNN on DATA_DIR, which holds one sub-folder of images per class. "
        "Without DATA_DIR, scikit-learn's 1,797 handwritten digits are written out as PNG "
        "files under OUT/data and used instead. A checkpoint is saved under "
        "OUT/checkpoints after every epoch; --resume OUT continues the run from the last one.",
    )
    train.add_argument("data_dir", nargs="?", default=None, metavar="DATA_DIR")
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the data (12); the total with --resume",
    )
    train.add_argument("--batch-size", type=int, default=None, help="images per step (32)")
    train.add_argument(
        "--image-size", type=int, default=None, help="square input size, divisible by 8 (32)"
    )
    train.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="1 (grey) or 3 (RGB); default 1 for the digits, 3 otherwise",
    )
    train.add_argument(
        "--lr", type=float, default=None, help=f"Adam learning rate ({DEFAULT_LR:g})"
    )
    train.add_argument("--val-fraction", type=float, default=None, help="held-out share (0.2)")
    train.add_argument("--seed", type=int, default=None, help="split, shuffling and init seed (0)")
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without a better val_loss and keep the best "
        "epoch's weights (default: no early stopping)",
    )
    train.add_argument("--workers", type=int, default=2, help="decoding threads (2)")
    train.add_argument("--out", default=None, help=f"output folder ({DEFAULT_OUT})")
    train.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the run whose --out is DIR from its last checkpoint, with its settings",
    )
    train.add_argument(
        "--plots",
        choices=PLOT_MODES,
        default=None,
        help="html: write OUT/plots/dashboard.html at the end; sidecar: send plots to the sidecar",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.set_defaults(handler=run_train)


def save_model(model: Any, out: Path, metadata: dict[str, Any]) -> None:
    """Writes ``model.safetensors`` (the model: ``gm.load_model`` reads it back) and
    ``model.json`` (what the run was), both holding ``metadata``.

    Args:
        model: the trained model.
        out: the output folder.
        metadata: JSON data: classes, preprocessing, settings, history.

    Example:
        >>> save_model(model, Path("gometal-run"), {"classes": ["cat", "dog"]})  # doctest: +SKIP
    """
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.safetensors", metadata=metadata)
    write_atomically(out / "model.json", json.dumps(metadata, indent=2).encode())


def run_train(args: argparse.Namespace) -> int:
    """Runs the main job; returns the process exit code.

    Args:
        args: the parsed ``gometal train`` arguments.

    Returns:
        0 on success; 2 after a one-line ``gometal train: ...`` error on stderr when an
        argument, the data folder or the ``--resume`` folder cannot be used (the exit
        status of argparse's errors).

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
        size = args.image_size if args.image_size is not None else "(default)"
        batch = args.batch_size if args.batch_size is not None else "(default)"
        print(
            f"gometal train: not enough memory for --image-size {size} and "
            f"--batch-size {batch} ({err}); try smaller values",
            file=sys.stderr,
        )
        return EXIT_USAGE


@dataclasses.dataclass
class _Job:
    """A run's resolved inputs: where it writes, what it reads, its settings."""

    out: Path
    data_dir: Path | None
    settings: dict[str, Any]
    checkpoint: Path | None  # set when resuming


def _resolve_job(args: argparse.Namespace) -> _Job:
    if args.resume is None:
        settings = new_run_settings(args)
        out = Path(args.out if args.out is not None else DEFAULT_OUT)
        data_dir = None if args.data_dir is None else Path(args.data_dir)
        return _Job(out, data_dir, settings, None)
    run_dir = Path(args.resume)
    record = read_run_record(run_dir)
    if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
        raise TrainJobError(
            f"--out {args.out!r} differs from --resume {args.resume!r}; a resumed run writes "
            "into its own folder (leave --out out)"
        )
    recorded_dir = record["data_dir"]
    if args.data_dir is not None and (
        recorded_dir is None or Path(args.data_dir).resolve() != Path(recorded_dir)
    ):
        raise TrainJobError(
            f"DATA_DIR {args.data_dir!r} differs from the resumed run's "
            f"{recorded_dir or 'digits'}; leave DATA_DIR out with --resume"
        )
    settings = resumed_settings(args, record["settings"])
    data_dir = None if recorded_dir is None else Path(recorded_dir)
    return _Job(run_dir, data_dir, settings, latest_checkpoint(run_dir))


def _load_data(job: _Job) -> tuple[Any, Any, Any]:
    """The dataset and its (train, val) split, or a TrainJobError."""
    from ..data.vision import ImageFolderDataset

    settings = job.settings
    if job.data_dir is None:
        try:
            from ..data.datasets import write_digits_folder

            data_dir = write_digits_folder(job.out / "data" / "digits")
        except ImportError as err:
            raise TrainJobError(
                f"training on the digits needs scikit-learn ({err}): pip install scikit-learn, "
                "or pass DATA_DIR"
            ) from err
        print(f"data: scikit-learn's handwritten digits, written to {data_dir}")
    else:
        data_dir = job.data_dir
    try:
        dataset = ImageFolderDataset(
            data_dir, image_size=settings["image_size"], channels=settings["channels"]
        )
    except (ValueError, OSError) as err:
        raise TrainJobError(" ".join(str(err).split())) from err
    train_set, val_set = dataset.split(settings["val_fraction"], seed=settings["seed"])
    check_splits(dataset, len(train_set), len(val_set), settings["val_fraction"])
    return dataset, train_set, val_set


def _history_records(history: Any) -> list[dict[str, Any]]:
    """The fit history as one record per epoch (1-based), as ``model.json`` lists it."""
    records = []
    for row, epoch in enumerate(history.epoch):
        record: dict[str, Any] = {"epoch": epoch + 1}
        for key in HISTORY_KEYS:
            if key in history:
                record[key] = history[key][row]
        if "time" in history:
            record["seconds"] = history["time"][row]
        records.append(record)
    return records


def _callbacks(job: _Job) -> list[Any]:
    from ..train.callbacks import EarlyStopping, ModelCheckpoint

    checkpoints = ModelCheckpoint(job.out / CHECKPOINT_FOLDER, keep_last=KEEP_CHECKPOINTS)
    if job.settings["patience"] is None:
        return [checkpoints]
    stop = EarlyStopping("val_loss", patience=job.settings["patience"], restore_best=True)
    return [checkpoints, stop]


def _new_trainer(job: _Job, classes: int) -> Any:
    """A fresh model and trainer; an earlier run's epoch checkpoints in the folder go, so
    that ``--resume`` never picks one of them up."""
    from ..train import optim
    from ..train.callbacks import ModelCheckpoint
    from ..train.trainer import Trainer

    stale = ModelCheckpoint(job.out / CHECKPOINT_FOLDER).periodic_checkpoints()
    if stale:
        print(
            f"removing {len(stale)} checkpoint(s) of an earlier run in {job.out / CHECKPOINT_FOLDER}"
        )
        for path in stale:
            path.unlink()
    settings = job.settings
    size = settings["image_size"]
    model = build_cnn((settings["channels"], size, size), classes, settings["seed"])
    return Trainer(
        model,
        loss="cross_entropy",
        optimizer=optim.Adam(lr=settings["lr"]),
        batch_size=settings["batch_size"],
    )


def _resumed_trainer(job: _Job, dataset: Any) -> Any:
    """The trainer of the run's last checkpoint, checked against the data's classes."""
    from ..io.serialization import CheckpointError
    from ..train.trainer import Trainer

    assert job.checkpoint is not None
    try:
        trainer = Trainer.load(job.checkpoint)
    except CheckpointError as err:
        raise TrainJobError(
            f"--resume: cannot load {os.fspath(job.checkpoint)!r} ({err}); remove it to resume "
            "from the checkpoint before it"
        ) from err
    outputs = trainer.model.output_shape[-1]
    if outputs != len(dataset.classes):
        raise TrainJobError(
            f"DATA_DIR {os.fspath(dataset.root)!r} now has {len(dataset.classes)} class "
            f"folders, but the resumed model was trained on {outputs}; restore the folder "
            "or start a new run without --resume"
        )
    print(f"resuming from {job.checkpoint} after epoch {trainer.epoch}")
    return trainer


def _train(args: argparse.Namespace) -> int:
    from ..data.vision import DataLoader, ImageCache, ImagePreprocessing

    job = _resolve_job(args)
    settings = job.settings
    if job.checkpoint is None:
        settings["channels"] = settings["channels"] or (1 if job.data_dir is None else 3)
    check_arguments(argparse.Namespace(**settings, workers=args.workers))
    check_patience(settings["patience"])
    if job.data_dir is not None and job.checkpoint is None:
        check_data_folder(job.data_dir)
    prepare_output_folder(job.out)
    dataset, train_set, val_set = _load_data(job)
    size, channels = settings["image_size"], settings["channels"]
    if job.checkpoint is None:
        trainer = _new_trainer(job, len(dataset.classes))
    else:
        trainer = _resumed_trainer(job, dataset)
    remaining = settings["epochs"] - trainer.epoch
    if remaining < 1:
        raise TrainJobError(
            f"the run in {os.fspath(job.out)!r} has trained {trainer.epoch} epochs; pass "
            f"--epochs above {trainer.epoch} to train further"
        )
    # Written on resume too: a later --resume reads the new --epochs total.
    write_run_record(job.out, job.data_dir, settings)
    cache = ImageCache()
    loader_args = {
        "batch_size": settings["batch_size"],
        "cache": cache,
        "num_workers": args.workers,
        "seed": settings["seed"],
    }
    print(
        f"classes: {', '.join(dataset.classes)}; {len(train_set)} training and "
        f"{len(val_set)} validation images of {channels}x{size}x{size}"
    )
    with (
        DataLoader(train_set, shuffle=True, **loader_args) as train_loader,
        DataLoader(val_set, shuffle=False, **loader_args) as val_loader,
    ):
        history = trainer.fit(
            train_loader,
            remaining,
            validation=val_loader,
            callbacks=_callbacks(job),
            verbose=2 if args.no_progress else 1,
            plots=args.plots,
            plots_dir=job.out / "plots",
        )
    if not len(history):
        raise TrainJobError("training stopped before its first epoch ended; nothing was saved")
    metadata = {
        "classes": dataset.classes,
        "input_shape": [channels, size, size],
        "outputs": "logits",
        "preprocessing": ImagePreprocessing.from_dataset(dataset).to_dict(),
        "data_dir": None if job.data_dir is None else os.fspath(job.data_dir.resolve()),
        "settings": settings,
        "history": _history_records(history),
        "cache": dataclasses.asdict(cache.stats()),
    }
    save_model(trainer.model, job.out, metadata)
    hint = f"; continue with: gometal train --resume {job.out}" if history.interrupted else ""
    print(
        f"saved {job.out / 'model.safetensors'} and {job.out / 'model.json'}; "
        f"validation accuracy {history.val_accuracy[-1]:.4f}{hint}"
    )
    return 0
