"""The file gometal saves: a safetensors file whose metadata holds one JSON document.

Layout: every tensor (float32, or int8 for a quantized layer's integer weights) under its
engine variable name, and in the safetensors
string metadata two entries: ``gometal``, the JSON document (format name and version,
model definition, training state, user metadata), and ``gometal.sha256``, a digest of
that document and of every tensor's name, shape and bytes. The digest turns any
truncation, flipped byte or edited header into a clear error instead of silently wrong
weights. Reading never unpickles or executes anything: safetensors parses a bounded
JSON header and checks every tensor's offsets against the file size, and this module
checks the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...base.atomic import atomic_open
from .document import check_document_bounds, parse_document
from .errors import CheckpointError

DOCUMENT_KEY = "gometal"
DIGEST_KEY = "gometal.sha256"
FORMAT_VERSION = 1
# Values checked for NaN at a time; tensors named at most in one message.
_FINITE_CHECK_SLICE = 2**20
_LISTED_TENSORS = 8
# The tensor types a file holds, by safetensors name: int8 keeps quantized weights at a
# quarter of their float32 size; reading gives float32 (exact) either way.
STORED_DTYPES = {"F32": np.dtype(np.float32), "I8": np.dtype(np.int8)}

# Leading bytes of files people may hand us by mistake, to say what the file looks like.
_SIGNATURES = (
    (b"\x80", "a Python pickle (gometal never unpickles files)"),
    (b"PK\x03\x04", "a zip archive (e.g. a torch.save file)"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF", "an HDF5 file (e.g. a Keras .h5 model)"),
)


def _describe_bytes(head: bytes) -> str:
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return " It looks like a JSON document; trainer.export_json output cannot be loaded."
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return f" It looks like {what}."
    return ""


def tensor_digest(document: str, tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the JSON document and every tensor's name, dtype, shape and bytes.

    Args:
        document: the JSON document stored in the file.
        tensors: name -> C-contiguous array.

    Returns:
        The hex digest.

    Example:
        >>> tensor_digest("{}", {"w": np.zeros(2, np.float32)})[:8]  # doctest: +SKIP
        '3c9d1a0e'
    """
    digest = hashlib.sha256()
    digest.update(b"gometal-container-1\0")
    digest.update(document.encode("utf-8"))
    for name in sorted(tensors):
        array = tensors[name]
        shape = ",".join(str(d) for d in array.shape)
        digest.update(f"\0{name}\0{array.dtype.str}\0{shape}\0".encode())
        # A flat byte view: memoryview.cast refuses shapes with a zero in them.
        digest.update(np.asarray(array, order="C").reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def to_json(value: Any, what: str) -> str:
    """Serializes ``value`` as strict JSON (no NaN or infinity), naming ``what`` on error.

    Args:
        value: plain Python data.
        what: how an error names the value, e.g. ``"metadata"``.

    Returns:
        The JSON text.

    Example:
        >>> to_json({"epoch": 3}, "state")
        '{"epoch": 3}'
    """
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{what} must hold only JSON values (dicts with string keys, lists, strings, "
            f"finite numbers, booleans, None): {err}"
        ) from None


def safetensors_header(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length and JSON header of a safetensors file holding float32 (or int8)
    ``arrays``.

    The tensors' bytes follow the header in the order of ``arrays``, back to back, as the
    safetensors format lays them out; the header is padded with spaces to 8 bytes.

    Args:
        arrays: name -> float32 or int8 array, in file order.
        metadata: string -> string entries for ``__metadata__``.

    Returns:
        The bytes that precede the tensor data.

    Example:
        >>> len(safetensors_header({"w": np.zeros(2, np.float32)}, {})) % 8
        0
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, array in arrays.items():
        header[name] = {
            "dtype": "I8" if array.dtype == np.int8 else "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_container(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], document: Mapping[str, Any]
) -> None:
    """Atomically writes ``tensors`` and ``document`` as one safetensors file.

    The file is streamed through ``atomic_open``: no copy of the tensors is made and a
    killed save leaves only this module's own temporary file behind.

    Args:
        path: the file to create or replace.
        tensors: name -> float32 array (0-d arrays allowed), or int8 array, stored as such.
        document: the JSON-serializable description stored in the metadata.

    Example:
        >>> write_container("m.safetensors", {"w": w}, {"format": "gometal.model"})  # doctest: +SKIP
    """
    arrays = {
        # asarray, not ascontiguousarray, which turns 0-d scalars into shape (1,).
        name: np.asarray(tensors[name], dtype=_stored_dtype(tensors[name]), order="C")
        for name in sorted(tensors)
    }
    text = to_json(dict(document), "the checkpoint document")
    # What the loader would refuse is never written.
    check_document_bounds(text, "the document to save (definition, training state, metadata)")
    metadata = {DOCUMENT_KEY: text, DIGEST_KEY: tensor_digest(text, arrays)}
    header = safetensors_header(arrays, metadata)
    with atomic_open(path) as handle:
        handle.write(header)
        for array in arrays.values():
            # safetensors stores little-endian values, NumPy's native order on our targets.
            handle.write(
                memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False)).cast("B")
            )


def _stored_dtype(array: Any) -> np.dtype:
    return STORED_DTYPES["I8"] if getattr(array, "dtype", None) == np.int8 else STORED_DTYPES["F32"]


# What a path that is not a regular file is, for the message.
_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_unless_regular(mode: int, shown: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{shown} is a folder, not a gometal file")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    raise CheckpointError(
        f"{shown} is not a regular file ({kind}); gometal reads model files and checkpoints "
        "that model.save or trainer.save wrote to disk"
    )


def _open_regular_file(source: Path) -> tuple[int, int]:
    """Opens ``source`` for reading; returns the descriptor and the file's size.

    ``stat`` first, so a pipe, device or socket is never opened at all; then the opened
    descriptor is checked again (the path may have changed in between), and it is opened
    non-blocking so that even then a named pipe cannot make ``open`` wait for a writer.
    """
    shown = repr(str(source))
    _refuse_unless_regular(os.stat(source).st_mode, shown)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(source, flags | getattr(os, "O_BINARY", 0))
    try:
        status = os.fstat(fd)
        _refuse_unless_regular(status.st_mode, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd, status.st_size


def _descriptor_path(fd: int, source: Path) -> str:
    # Reopening through /dev/fd reads the very file that was checked, whatever the path
    # names by now; systems without /dev/fd read the path itself.
    descriptor = Path(f"/dev/fd/{fd}")
    return str(descriptor) if descriptor.exists() else str(source)


def read_container(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads and verifies a file ``write_container`` wrote.

    Args:
        path: the file.

    Returns:
        ``(document, tensors)``: the parsed JSON document and name -> float32 array
        (int8 tensors converted, exactly).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: for anything that is not an intact gometal file: a folder, pipe,
            device or anything else that is not a regular file; too short, truncated,
            not safetensors, no gometal document, a digest mismatch, a tensor that is not
            float32 or int8; a document too long, too deeply nested, not a JSON object, or
            holding numbers that are not finite (see ``document.parse_document``).

    Example:
        >>> document, tensors = read_container("model.safetensors")  # doctest: +SKIP
    """
    from safetensors import SafetensorError, safe_open

    source = Path(os.fspath(path))
    shown = repr(str(source))
    fd, size = _open_regular_file(source)
    try:
        head = os.read(fd, 16)
        if size < 8:
            raise CheckpointError(
                f"{shown} is not a gometal file: it holds only {size} byte(s)."
                + _describe_bytes(head)
            )
        try:
            with safe_open(_descriptor_path(fd, source), framework="np") as reader:
                metadata = reader.metadata() or {}
                names = list(reader.keys())
                dtypes = {name: reader.get_slice(name).get_dtype() for name in names}
                wrong = {
                    name: dtype for name, dtype in dtypes.items() if dtype not in STORED_DTYPES
                }
                if wrong:
                    raise CheckpointError(
                        f"{shown}: gometal stores float32 (F32) tensors only (and int8 (I8) "
                        "quantized weights), found "
                        + ", ".join(f"{name!r} ({dtype})" for name, dtype in sorted(wrong.items()))
                    )
                tensors = {name: reader.get_tensor(name) for name in names}
        except SafetensorError as err:
            raise CheckpointError(
                f"{shown} is not a valid gometal file (truncated, corrupted or another "
                f"format): {err}." + _describe_bytes(head)
            ) from None
    finally:
        os.close(fd)
    text = metadata.get(DOCUMENT_KEY)
    if text is None:
        raise CheckpointError(
            f"{shown} is a safetensors file, but not one gometal wrote: its metadata "
            f"has no {DOCUMENT_KEY!r} entry (found keys {sorted(metadata)})"
        )
    if metadata.get(DIGEST_KEY) != tensor_digest(text, tensors):
        raise CheckpointError(
            f"{shown} is corrupted: its content does not match the checksum stored "
            "when it was saved"
        )
    floats = {
        name: t.astype(np.float32) if t.dtype == np.int8 else t for name, t in tensors.items()
    }
    return parse_document(text, shown), floats


def non_finite_counts(tensors: Mapping[str, np.ndarray]) -> dict[str, int]:
    """How many NaN or infinite values each tensor holds, for the tensors holding any.

    Args:
        tensors: name -> float array.

    Returns:
        name -> count, in name order; empty when every value is finite.

    Example:
        >>> non_finite_counts({"w": np.array([1.0, np.nan], np.float32)})
        {'w': 1}
    """
    counts = {}
    for name in sorted(tensors):
        flat = np.asarray(tensors[name]).reshape(-1)
        # In slices, so the mask never costs more than a slice's worth of memory.
        count = sum(
            int(np.count_nonzero(~np.isfinite(flat[start : start + _FINITE_CHECK_SLICE])))
            for start in range(0, flat.size, _FINITE_CHECK_SLICE)
        )
        if count:
            counts[name] = count
    return counts


def check_finite_tensors(tensors: Mapping[str, np.ndarray], shown: str) -> None:
    """Raises ``CheckpointError`` naming every tensor that holds NaN or an infinity.

    Args:
        tensors: name -> float array (the weights, or every part of a trainer's state).
        shown: the file, as the message names it.

    Example:
        >>> check_finite_tensors({"w": np.ones(2, np.float32)}, "'m.safetensors'")
    """
    counts = non_finite_counts(tensors)
    if not counts:
        return
    listed = [
        f"{name!r} ({count} of {np.asarray(tensors[name]).size} values)"
        for name, count in counts.items()
    ]
    more = f" and {len(listed) - _LISTED_TENSORS} more" if len(listed) > _LISTED_TENSORS else ""
    raise CheckpointError(
        f"{shown} holds NaN or infinite values in {len(counts)} tensor(s): "
        f"{', '.join(listed[:_LISTED_TENSORS])}{more}. A model or trainer loaded from them "
        "computes NaN; pass allow_non_finite=True to load them anyway (e.g. to inspect a "
        "run that diverged)"
    )


def check_format(
    document: Mapping[str, Any], accepted: tuple[str, ...], path: str | os.PathLike[str]
) -> str:
    """Returns the document's format name after checking it and its version.

    Args:
        document: the parsed document.
        accepted: format names the caller can read.
        path: the file, for messages.

    Returns:
        The format name.

    Raises:
        CheckpointError: for another format or a version newer than this gometal reads.

    Example:
        >>> check_format({"format": "gometal.model", "format_version": 1},
        ...              ("gometal.model",), "m.safetensors")
        'gometal.model'
    """
    shown = repr(os.fspath(path))
    name = document.get("format")
    version = document.get("format_version")
    if name not in accepted:
        raise CheckpointError(
            f"{shown} holds format {name!r}; expected {' or '.join(map(repr, accepted))}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{shown}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{shown} was written by a newer gometal (format version {version}); this gometal "
            f"reads format versions up to {FORMAT_VERSION}: upgrade gometal to load it"
        )
    return str(name)


def check_tensor_shapes(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    what: str,
) -> None:
    """Raises one ``CheckpointError`` naming every missing, unexpected or misshapen tensor.

    Args:
        expected: name -> shape the receiving model or trainer needs.
        found: name -> shape in the file.
        what: names the receiver in the message, e.g. ``"this model"``.

    Example:
        >>> check_tensor_shapes({"w": (2,)}, {"w": (2,)}, "this model")
    """
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    mismatched = [
        name for name in expected if name in found and tuple(found[name]) != tuple(expected[name])
    ]
    if not (missing or extra or mismatched):
        return
    lines = [f"the file does not fit {what}:"]
    for name in mismatched:
        lines.append(
            f"  {name}: expected shape {tuple(expected[name])}, found {tuple(found[name])}"
        )
    for name in missing:
        lines.append(f"  {name}: missing from the file (expected shape {tuple(expected[name])})")
    for name in extra:
        lines.append(f"  {name}: not in {what} (found shape {tuple(found[name])})")
    raise CheckpointError("\n".join(lines))
