"""Atomic file replacement: a reader sees the old file or the new one, never a mix.

The new content goes to a temporary file in the target's folder (same file system, so
the rename cannot degrade to a copy), which is flushed to disk before it is renamed over
the target; the folder is then synced so the rename itself survives a power cut. A
process killed at any moment leaves the previous file intact; at worst a stray temporary
file named ``.<name>.<random>.tmp`` remains beside it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def _open_temp_file(target: Path) -> tuple[Path, int]:
    """Creates a new, empty temporary file beside ``target``; returns its path and fd."""
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            # O_EXCL: never reuse a file someone else created; 0o666 lets the umask decide
            # the final permissions, as for a file opened normally.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return candidate, fd
    raise FileExistsError(f"could not create a temporary file beside {target}")


def _sync_folder(folder: Path) -> None:
    # Persists the rename. Windows cannot open folders; there the rename is what it is.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(temp: Path, target: Path) -> Iterator[None]:
    """Renames ``temp`` over ``target`` when the block (which fills and syncs ``temp``)
    succeeds, then syncs the folder; removes ``temp`` when it raises."""
    try:
        yield
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _sync_folder(target.parent)


def _check_target(path: str | os.PathLike[str]) -> Path:
    target = Path(os.fspath(path))
    if target.is_dir():
        raise IsADirectoryError(f"cannot write a file at {str(target)!r}: it is a folder")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: the folder {str(target.parent)!r} does not exist"
        )
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path to write; on success it atomically replaces ``path``.

    For writers that take a file name rather than a file object. If the block raises,
    the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the file to create or replace; its folder must exist.

    Yields:
        The temporary file's path (an empty file already exists there).

    Example:
        >>> with atomic_path("weights.safetensors") as tmp:  # doctest: +SKIP
        ...     safetensors.numpy.save_file(tensors, tmp)
    """
    target = _check_target(path)
    temp, fd = _open_temp_file(target)
    os.close(fd)
    with _replacing(temp, target):
        yield temp
        # Reopen to flush what the writer wrote through its own handle.
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yields a binary file object; closing the block atomically replaces ``path``.

    Args:
        path: the file to create or replace; its folder must exist.

    Yields:
        A writable binary file; if the block raises, nothing is replaced.

    Example:
        >>> with atomic_open("report.json") as handle:  # doctest: +SKIP
        ...     handle.write(b"{}")
    """
    target = _check_target(path)
    temp, fd = _open_temp_file(target)
    with _replacing(temp, target), os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Replaces ``path`` with ``data`` so a crash leaves either the old or the new file.

    Args:
        path: the file to create or replace; its folder must exist.
        data: the complete new content.

    Example:
        >>> write_atomically("model.json", b'{"epochs": 3}')  # doctest: +SKIP
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with atomic_open(path) as handle:
        handle.write(data)


def writable_folder_problem(folder: str | os.PathLike[str], option: str) -> str | None:
    """Creates ``folder`` if missing and says why files cannot be written there, if so.

    Creating a file is the only reliable test (permissions, read-only mounts, ACLs), so a
    command can refuse a bad output folder before its work starts instead of after.

    Args:
        folder: the folder a command will write into.
        option: the command-line option that named it, e.g. ``"--out"``, for the message.

    Returns:
        ``None`` when files can be written there, else a one-line reason naming ``option``.

    Example:
        >>> writable_folder_problem("gometal-run", "--out") is None  # doctest: +SKIP
        True
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        return f"{option} {os.fspath(path)!r} is a file; pass a folder (it is created if missing)"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return (
            f"{option} {os.fspath(path)!r} cannot be written ({err.strerror or err}); "
            "pass a folder you can write to"
        )
    return None
