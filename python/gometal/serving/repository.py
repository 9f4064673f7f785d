"""The model repository the server reads: Triton's folder layout, or one model file.

Layout (as NVIDIA Triton's)::

    REPO/<model>/<version>/model.safetensors   saved by gometal (model.save, gometal train)
    REPO/<model>/<version>/model.onnx          imported with gometal.onnx.load
    REPO/<model>/config.json                   optional: this model's batching settings

A version is a folder named by a positive integer; a request without a version goes to
the highest one. One model file (``run/model.safetensors``) or a folder holding one
(a ``gometal train --out`` folder) is served as a repository of one model, version 1.

Nothing in a request names a path: requests pick among the names found here, which are
checked against :data:`MODEL_NAME_PATTERN`. A model folder, version folder or file that
resolves outside the repository (a symbolic link) is refused, and a model that fails to
load is kept with its reason, reported not ready, while the others serve.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_FILE",
    "CONFIG_KEYS",
    "MODEL_FILES",
    "MODEL_NAME_PATTERN",
    "ModelEntry",
    "ModelRepository",
    "ModelVersion",
    "RepositoryError",
]

MODEL_FILES = ("model.safetensors", "model.onnx")
CONFIG_FILE = "config.json"
# Per-model settings a config.json may give; the server's defaults fill the rest.
CONFIG_KEYS = (
    "max_batch_size",
    "max_queue_delay_ms",
    "instances",
    "max_queue",
    "start_when_idle",
    "gather_while_busy",
)
# The ones that take true or false.
FLAG_KEYS = ("start_when_idle", "gather_while_busy")
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_CONFIG_BYTES = 64 * 1024

_log = logging.getLogger(__name__)


class RepositoryError(ValueError):
    """The repository path cannot be served at all (missing, or holds no model)."""


@dataclass
class ModelVersion:
    """One version of a model: its file, and the loaded model or why it failed.

    Attributes:
        name: the model's name.
        version: the version number.
        path: the model file (``None`` when the version folder holds none).
        model: the loaded ``gm.Model``, or ``None`` when loading failed.
        error: why the version is not ready, or ``None``.
        user_metadata: the metadata saved with a gometal model file (``gometal train``
            records ``classes`` and the image ``preprocessing`` there).
    """

    name: str
    version: int
    path: Path | None
    model: Any = None
    error: str | None = None
    user_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether the version loaded and can serve."""
        return self.model is not None and self.error is None


@dataclass
class ModelEntry:
    """A model of the repository: its versions and its settings from ``config.json``.

    Attributes:
        name: the model's name (its folder).
        versions: version number -> :class:`ModelVersion`.
        config: the settings its ``config.json`` gives (keys of :data:`CONFIG_KEYS`).
        error: why the whole model cannot serve (bad config, no version), or ``None``.
    """

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def latest(self) -> ModelVersion | None:
        """The highest version, which requests without a version go to."""
        return self.versions[max(self.versions)] if self.versions else None


def _inside(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def _load_model_file(path: Path) -> Any:
    # Imported here: the repository module stays importable without the engine's IO stack.
    if path.suffix == ".onnx":
        from ..io.onnx import load as load_onnx

        return load_onnx(path)
    from ..io.serialization import load_model

    return load_model(path)


def _user_metadata(path: Path) -> dict[str, Any]:
    if path.suffix != ".safetensors":
        return {}
    from ..io.serialization import read_metadata

    user = read_metadata(path).get("user")
    return user if isinstance(user, dict) else {}


def _read_config(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{CONFIG_FILE} must be at most {MAX_CONFIG_BYTES} bytes")
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(  # noqa: TRY004  (a bad file's content, reported as ValueError)
            f"{CONFIG_FILE} must hold a JSON object, got {type(config).__name__}"
        )
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{CONFIG_FILE} has unknown keys {unknown}; it takes {list(CONFIG_KEYS)}")
    for key, value in config.items():
        if key in FLAG_KEYS:
            if not isinstance(value, bool):
                raise ValueError(f"{CONFIG_FILE}: {key!r} must be true or false, got {value!r}")
            continue
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key != "max_queue_delay_ms":
            number_ok = number_ok and isinstance(value, int)
        if not number_ok or value < (0 if key == "max_queue_delay_ms" else 1):
            lowest = "a number >= 0" if key == "max_queue_delay_ms" else "an int >= 1"
            raise ValueError(f"{CONFIG_FILE}: {key!r} must be {lowest}, got {value!r}")
    return config


class ModelRepository:
    """The models found under a repository folder (or one model file), loaded.

    Args:
        path: a Triton-layout repository folder, a folder holding ``model.safetensors``
            or ``model.onnx``, or one such file.
        loader: loads one model file (default: ``gm.load_model``, or ``gm.onnx.load``
            for ``.onnx``); its exceptions mark the version not ready.

    Raises:
        RepositoryError: ``path`` does not exist, or holds no model folder.

    Example:
        >>> repo = ModelRepository("models")  # doctest: +SKIP
        >>> repo.find("mnist").latest.ready  # doctest: +SKIP
        True
    """

    def __init__(self, path: str | os.PathLike[str], loader: Any = None) -> None:
        self.path = Path(path)
        self.loader = loader if loader is not None else _load_model_file
        if not self.path.exists():
            raise RepositoryError(
                f"model repository {os.fspath(path)!r} does not exist; pass a repository "
                f"folder (REPO/<model>/<version>/model.safetensors) or one model file"
            )
        self.root = (self.path if self.path.is_dir() else self.path.parent).resolve()
        self.models: dict[str, ModelEntry] = {}
        self._scan()
        if not self.models:
            raise RepositoryError(
                f"model repository {os.fspath(path)!r} holds no model: expected "
                f"<model>/<version>/{MODEL_FILES[0]} (or {MODEL_FILES[1]}) folders, or one "
                "model file"
            )

    # -- scanning -------------------------------------------------------------------------
    def _scan(self) -> None:
        single = self._single_model_file()
        if single is not None:
            name = single.stem if single.stem != "model" else single.resolve().parent.name
            name = name if MODEL_NAME_PATTERN.match(name) else "model"
            entry = ModelEntry(name)
            entry.versions[1] = self._load_version(name, 1, single)
            self.models[name] = entry
            return
        for folder in sorted(self.path.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            if not MODEL_NAME_PATTERN.match(folder.name):
                _log.warning("skipping model folder %r: names match %s", folder.name,
                             MODEL_NAME_PATTERN.pattern)  # fmt: skip
                continue
            self.models[folder.name] = self._scan_model(folder)

    def _single_model_file(self) -> Path | None:
        if self.path.is_file():
            return self.path
        for file_name in MODEL_FILES:
            if (self.path / file_name).is_file():
                return self.path / file_name
        return None

    def _scan_model(self, folder: Path) -> ModelEntry:
        entry = ModelEntry(folder.name)
        if not _inside(folder, self.root):
            entry.error = "its folder points outside the model repository"
            return entry
        config_path = folder / CONFIG_FILE
        if config_path.is_file():
            try:
                if not _inside(config_path, self.root):
                    raise ValueError(f"{CONFIG_FILE} points outside the model repository")
                entry.config = _read_config(config_path)
            except (OSError, ValueError) as err:
                entry.error = f"bad {CONFIG_FILE}: {err}"
                return entry
        for version_folder in folder.iterdir():
            if not (version_folder.is_dir() and version_folder.name.isdigit()):
                continue
            version = int(version_folder.name)
            if version < 1:
                continue
            entry.versions[version] = self._scan_version(entry.name, version, version_folder)
        if not entry.versions:
            entry.error = (
                f"no version folder: expected {folder.name}/1/{MODEL_FILES[0]} "
                f"(or {MODEL_FILES[1]})"
            )
        return entry

    def _scan_version(self, name: str, version: int, folder: Path) -> ModelVersion:
        if not _inside(folder, self.root):
            return ModelVersion(name, version, None, error="points outside the model repository")
        files = [folder / file_name for file_name in MODEL_FILES if (folder / file_name).is_file()]
        if len(files) != 1:
            found = "none" if not files else " and ".join(f.name for f in files)
            return ModelVersion(
                name,
                version,
                None,
                error=f"needs exactly one of {list(MODEL_FILES)}, found {found}",
            )
        if not _inside(files[0], self.root):
            return ModelVersion(name, version, None, error="its file points outside the repository")
        return self._load_version(name, version, files[0])

    def _load_version(self, name: str, version: int, path: Path) -> ModelVersion:
        entry = ModelVersion(name, version, path)
        try:
            entry.model = self.loader(path)
            if self.loader is _load_model_file:
                entry.user_metadata = _user_metadata(path)
        except Exception as err:  # noqa: BLE001  (a failure marks this version alone not ready)
            entry.error = f"failed to load {path.name}: {type(err).__name__}: {err}"
            _log.warning("model %r version %d is not ready: %s", name, version, entry.error)
        return entry

    # -- lookups --------------------------------------------------------------------------
    def find(self, name: str) -> ModelEntry | None:
        """The model called ``name``, or ``None`` (names never reach the file system)."""
        return self.models.get(name)

    def settings(self, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The server's batching settings for model ``name``, its ``config.json`` applied.

        Args:
            name: a model of this repository.
            defaults: the server's settings (every key of :data:`CONFIG_KEYS`).

        Returns:
            The settings for this model.
        """
        return {**defaults, **self.models[name].config}

    def index(self) -> list[dict[str, Any]]:
        """Every model version with its state, as Triton's repository index lists them.

        Returns:
            ``[{"name", "version", "state": "READY" | "UNAVAILABLE", "reason"}, ...]``.
        """
        rows = []
        for name, entry in self.models.items():
            if not entry.versions:
                rows.append({"name": name, "version": "", "state": "UNAVAILABLE",
                             "reason": entry.error or ""})  # fmt: skip
            for version, item in sorted(entry.versions.items()):
                ready = item.ready and entry.error is None
                reason = "" if ready else (entry.error or item.error or "")
                rows.append({"name": name, "version": str(version),
                             "state": "READY" if ready else "UNAVAILABLE", "reason": reason})  # fmt: skip
        return rows
