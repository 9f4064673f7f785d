"""What ``gometal train --resume DIR`` needs: the run's settings and its last checkpoint.

A run writes ``run.json`` (its data folder and settings) into its output folder when it
starts and ``checkpoints/epoch-NNN.gmckpt`` after every epoch. Resuming reads both, so the
data split, the shuffling and the model are the same, and continues from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..base.atomic import write_atomically
from ..train.callbacks import ModelCheckpoint
from .train_checks import DEFAULT_LR, TrainJobError

RUN_RECORD = "run.json"
CHECKPOINT_FOLDER = "checkpoints"
RUN_RECORD_VERSION = 1
# The settings a run keeps when resumed, with their defaults for a new run; --epochs is the
# total a resumed run trains to.
SETTING_DEFAULTS: dict[str, Any] = {
    "epochs": 12,
    "batch_size": 32,
    "image_size": 32,
    "channels": None,
    "lr": DEFAULT_LR,
    "val_fraction": 0.2,
    "seed": 0,
    "patience": None,
}
_OPTION_NAMES = {name: "--" + name.replace("_", "-") for name in SETTING_DEFAULTS}


def new_run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of a new run: each option given on the command line, else its default.

    Args:
        args: the parsed ``gometal train`` arguments (unset options are ``None``).

    Returns:
        ``{setting: value}`` for every key of ``SETTING_DEFAULTS``.

    Example:
        >>> new_run_settings(argparse.Namespace(epochs=3, batch_size=None, image_size=None,
        ...     channels=None, lr=None, val_fraction=None, seed=None, patience=None))["epochs"]
        3
    """
    given = {name: getattr(args, name) for name in SETTING_DEFAULTS}
    return {
        name: SETTING_DEFAULTS[name] if value is None else value for name, value in given.items()
    }


def resumed_settings(args: argparse.Namespace, recorded: dict[str, Any]) -> dict[str, Any]:
    """The settings of a resumed run: the recorded ones, with a new ``--epochs`` total.

    Args:
        args: the parsed ``gometal train --resume`` arguments.
        recorded: the settings in the run's ``run.json``.

    Returns:
        The recorded settings, ``epochs`` replaced when ``--epochs`` is given.

    Raises:
        TrainJobError: an option other than ``--epochs`` is given with a value that
            differs from the recorded one.

    Example:
        >>> resumed_settings(args, {"epochs": 4, "seed": 0, ...})  # doctest: +SKIP
    """
    settings = dict(recorded)
    for name in SETTING_DEFAULTS:
        given = getattr(args, name)
        if given is None or name == "epochs":
            continue
        if given != recorded.get(name):
            raise TrainJobError(
                f"{_OPTION_NAMES[name]} {given} differs from the resumed run's "
                f"{recorded.get(name)}; a resumed run keeps its settings (leave "
                f"{_OPTION_NAMES[name]} out), only --epochs may change"
            )
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    return settings


def write_run_record(out: Path, data_dir: Path | None, settings: dict[str, Any]) -> None:
    """Writes ``out/run.json``: the data folder (absolute, or ``None`` for the digits) and
    the settings, which ``--resume`` reads back."""
    record = {
        "version": RUN_RECORD_VERSION,
        "data_dir": None if data_dir is None else os.fspath(data_dir.resolve()),
        "settings": settings,
    }
    write_atomically(out / RUN_RECORD, json.dumps(record, indent=2).encode())


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """Reads a run's ``run.json``.

    Args:
        run_dir: the ``--resume`` folder (the earlier run's ``--out``).

    Returns:
        ``{"data_dir": str | None, "settings": {...}}``.

    Raises:
        TrainJobError: the folder or its ``run.json`` is missing or unreadable.

    Example:
        >>> read_run_record(Path("gometal-run"))["settings"]["seed"]  # doctest: +SKIP
        0
    """
    shown = os.fspath(run_dir)
    if not run_dir.is_dir():
        raise TrainJobError(
            f"--resume {shown!r} is not a folder; pass the --out folder of an earlier "
            "gometal train run"
        )
    path = run_dir / RUN_RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainJobError(
            f"--resume {shown!r} holds no {RUN_RECORD}; pass the --out folder of an earlier "
            "gometal train run"
        ) from None
    except (OSError, ValueError) as err:
        raise TrainJobError(f"--resume {shown!r}: cannot read {RUN_RECORD} ({err})") from err
    settings = record.get("settings") if isinstance(record, dict) else None
    if (
        record.get("version") != RUN_RECORD_VERSION
        or not isinstance(settings, dict)
        or set(settings) != set(SETTING_DEFAULTS)
        or not (record.get("data_dir") is None or isinstance(record.get("data_dir"), str))
    ):
        raise TrainJobError(
            f"--resume {shown!r}: {RUN_RECORD} is not a gometal train run record "
            f"(version {RUN_RECORD_VERSION} with data_dir and settings)"
        )
    return record


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest ``checkpoints/epoch-NNN.gmckpt`` of a run.

    Args:
        run_dir: the ``--resume`` folder.

    Returns:
        The checkpoint's path.

    Raises:
        TrainJobError: the run has no checkpoint yet (it stopped in its first epoch).

    Example:
        >>> latest_checkpoint(Path("gometal-run")).name  # doctest: +SKIP
        'epoch-004.gmckpt'
    """
    found = ModelCheckpoint(run_dir / CHECKPOINT_FOLDER).periodic_checkpoints()
    if not found:
        raise TrainJobError(
            f"--resume {os.fspath(run_dir)!r} has no checkpoint in {CHECKPOINT_FOLDER}/ (the "
            "run stopped before its first epoch ended); start it again without --resume"
        )
    return found[-1]
