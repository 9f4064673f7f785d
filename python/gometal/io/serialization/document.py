"""Checks on the JSON document of a gometal file, made before any of it is used.

The checksum proves a file is intact, not that whoever wrote it meant well: a forger
recomputes it. So the document is bounded in size and nesting depth before it is parsed
(a deep one would exhaust Python's recursion), parsed with every non-finite number
refused by path, and validated against ``checkpoint_schema.json`` (shipped with the
package) plus the integer ranges a schema cannot state for free-form arguments. Every
failure is a ``CheckpointError`` naming the offending entries.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import numpy as np

from .errors import CheckpointError

SCHEMA_FILE = "checkpoint_schema.json"

# A document this long holds years of history; the bound caps what parsing allocates
# (about 400 MB for the worst mix of tiny JSON containers).
MAX_DOCUMENT_CHARS = 16 * 2**20
# gometal's own entries nest 8 levels deep; the rest is room for user metadata.
MAX_NESTING_DEPTH = 64
# Integers a constructor may hand to the engine, which takes int64 (the schema bounds
# the seeds, which are uint64, and keeps them out of this rule).
INTEGER_RANGE = (-(2**63), 2**63)
_UINT64_ENTRIES = {("model", "seed"), ("training", "seed"), ("training", "rng_step")}
# How many offending entries one message lists.
MAX_LISTED = 8

_DEPTH_SLICE = 2**20
# A JSON string, escapes included: brackets inside strings are not nesting.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of the JSON ``text`` nest, without parsing it.

    Args:
        text: JSON text (need not be valid; an unterminated string only overcounts).

    Returns:
        The largest number of brackets and braces open at once (0 for a scalar).

    Example:
        >>> nesting_depth('{"a": [1, {"b": "[["}]}')
        3
    """
    skeleton = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8"), np.uint8)
    depth = deepest = 0
    # In slices, so the running depth never costs more than a slice's worth of memory.
    for start in range(0, skeleton.size, _DEPTH_SLICE):
        chunk = skeleton[start : start + _DEPTH_SLICE]
        steps = ((chunk == ord("[")) | (chunk == ord("{"))).astype(np.int32)
        steps -= (chunk == ord("]")) | (chunk == ord("}"))
        levels = np.cumsum(steps, dtype=np.int64) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def check_document_bounds(text: str, what: str) -> None:
    """Raises ``ValueError`` when ``text`` is too long or nests too deeply to be read back.

    Saving calls this, so gometal never writes a file its own loader refuses.

    Args:
        text: the JSON document.
        what: names the document in the message.

    Example:
        >>> check_document_bounds('{"format": "gometal.model"}', "the document")
    """
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValueError(
            f"{what} is {len(text)} characters long; a gometal file holds at most "
            f"{MAX_DOCUMENT_CHARS} (store large data in tensors or separate files)"
        )
    depth = nesting_depth(text)
    if depth > MAX_NESTING_DEPTH:
        raise ValueError(
            f"{what} is nested {depth} levels deep; at most {MAX_NESTING_DEPTH} are allowed"
        )


def _entry_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(the document)"


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    # Recursion is safe: the depth was bounded before parsing.
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _listed(entries: list[str]) -> str:
    shown = entries[:MAX_LISTED]
    more = len(entries) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def parse_document(text: str, shown: str) -> dict[str, Any]:
    """Parses a gometal file's JSON document within the size, depth and finiteness bounds.

    Args:
        text: the document as stored in the file.
        shown: the file, as messages name it.

    Returns:
        The document (a dict).

    Raises:
        CheckpointError: the text is too long, nests too deeply, is not a JSON object,
            or holds NaN or an infinity (``NaN``, ``Infinity``, or a number like ``1e999``
            that only a double's infinity holds): each such entry is named by its path.

    Example:
        >>> parse_document('{"format": "gometal.model"}', "m.safetensors")
        {'format': 'gometal.model'}
    """
    try:
        check_document_bounds(text, "the gometal document")
    except ValueError as err:
        raise CheckpointError(f"{shown}: {err}") from None
    non_finite: list[float] = []

    def parse_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            non_finite.append(value)
        return value

    def parse_constant(literal: str) -> float:
        non_finite.append(float(literal))
        return float(literal)

    try:
        document = json.loads(text, parse_float=parse_float, parse_constant=parse_constant)
    except ValueError as err:
        raise CheckpointError(f"{shown}: the gometal document is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{shown}: the gometal document is not a JSON object")
    if non_finite:
        found = [
            f"{_entry_path(path)} ({value})"
            for path, value in _leaves(document)
            if isinstance(value, float) and not math.isfinite(value)
        ]
        raise CheckpointError(
            f"{shown}: the gometal document holds numbers that are not finite, which gometal "
            f"never writes: {_listed(found)}"
        )
    return document


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of gometal documents, shipped with the package.

    Returns:
        The parsed ``checkpoint_schema.json`` (shared: do not modify it).

    Example:
        >>> load_schema()["$defs"]["size"]["maximum"]
        2147483647
    """
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema())


def _schema_problems(document: Mapping[str, Any]) -> dict[str, str]:
    """Entry path -> what the schema says is wrong there."""
    from jsonschema.exceptions import best_match

    problems = {}
    for error in _validator().iter_errors(document):
        # best_match descends into alternatives to the entry that actually failed.
        detail = best_match([error]) or error
        message = detail.message if len(detail.message) <= 200 else detail.message[:200] + "…"
        problems.setdefault(_entry_path(detail.absolute_path), message)
    return problems


def validate_document(document: Mapping[str, Any], shown: str) -> None:
    """Checks a parsed document against the shipped schema and the integer ranges.

    Call it after the format and version are known (a newer version may have another
    layout). User metadata is free-form JSON and only bounded by ``parse_document``.

    Args:
        document: ``parse_document`` output.
        shown: the file, as messages name it.

    Raises:
        CheckpointError: naming every entry that does not fit (up to a few).

    Example:
        >>> validate_document(document, "ckpt.safetensors")  # doctest: +SKIP
    """
    problems = _schema_problems(document)
    low, high = INTEGER_RANGE
    for section in ("model", "training"):
        for path, value in _leaves(document.get(section), (section,)):
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and not low <= value < high
                and path not in _UINT64_ENTRIES
            ):
                problems.setdefault(
                    _entry_path(path), f"{value} does not fit a 64-bit signed integer"
                )
    if problems:
        listed = [f"{path}: {message}" for path, message in sorted(problems.items())]
        raise CheckpointError(
            f"{shown}: the gometal document does not fit its schema: {_listed(listed)}"
        )
