"""Mutated gometal files for the checkpoint-loader fuzz, drawn from one seeded generator.

Each case starts from a pristine file gometal wrote and applies one kind of damage:

- ``header_bytes``: bytes flipped in the length prefix or the JSON header;
- ``truncated``: the file cut short anywhere;
- ``document``: the JSON document edited (values replaced by hostile ones, keys deleted
  or added, layers swapped, lists shortened or padded) with the checksum recomputed;
- ``document_text``: the document's text itself broken (cut, deepened, given NaN or
  ``1e999`` literals, replaced by a non-object) with the checksum recomputed;
- ``tensor_values``: NaN, infinities or huge values in tensors, the step counter included;
- ``tensor_layout``: tensors of another dtype or shape, missing, extra or renamed;
- ``header_lies``: a header whose dtype, shape or offsets disagree with the bytes.

Plus fixed cases: the pristine files (which must load), files that are not safetensors
at all, a named pipe and a device, and documents at and beyond the size and depth bounds.
"""

from __future__ import annotations

import copy
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from checkpoint_forge import forged_header, read_parts, write_forged, write_raw
from gometal.io.serialization.document import MAX_DOCUMENT_CHARS

KINDS = (
    "header_bytes",
    "truncated",
    "document",
    "document_text",
    "tensor_values",
    "tensor_layout",
    "header_lies",
)

INTS = [-1, 0, 1, 2, 3, 7, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
INTS += [2**64, -(2**63) - 1, 10**30, 2**1030]
FLOATS = [0.0, -0.0, 1e-45, 0.5, -1.5, 1e38, 3.5e38, 1e308, float("nan"), float("inf")]
FLOATS += [float("-inf")]
STRINGS = ["", "x", "relu", "Dense", "Conv2D", "SGD", "\ud800", "a" * 5000, "../../etc/passwd"]
CONTAINERS: list[Any] = [None, True, False, [], {}, [[]], {"a": {}}, [0] * 1000, {"": None}]


@dataclass(frozen=True)
class Case:
    """One fuzzed file and how to load it."""

    index: int
    kind: str
    loader: str
    path: Path
    note: str


@dataclass(frozen=True)
class Base:
    """A pristine file the cases start from.

    ``loaders`` are drawn for its random cases (a loader that refuses the file anyway
    included); ``intact_loaders`` must load the pristine file.
    """

    name: str
    path: Path
    loaders: tuple[str, ...]
    intact_loaders: tuple[str, ...]


def _hostile_value(gen: np.random.Generator) -> Any:
    pool = [INTS, FLOATS, STRINGS, CONTAINERS][gen.integers(4)]
    value = copy.deepcopy(pool[gen.integers(len(pool))])
    if gen.random() < 0.1:
        value = [value, value]  # a pair, as sizes and strides are written
    return value


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every entry's path (containers included), short lists in full."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:12]):
            found += _paths(item, (*path, index))
    return found


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


def _layer_list(document: dict[str, Any]) -> list[Any]:
    model = document.get("model")
    layers = model.get("layers") if isinstance(model, dict) else None
    return layers if isinstance(layers, list) else []


def _edit_document(document: dict[str, Any], gen: np.random.Generator) -> tuple[dict, str]:
    document = copy.deepcopy(document)
    notes = []
    for _ in range(int(gen.integers(1, 4))):
        paths = [p for p in _paths(document) if p and p[0] in ("model", "training", "weights")]
        paths += [p for p in _paths(document) if len(p) == 1]
        path = paths[gen.integers(len(paths))]
        parent, key = _parent(document, path), path[-1]
        action = ["replace", "replace", "replace", "delete", "insert", "swap_class", "resize"][
            gen.integers(7)
        ]
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "insert" and isinstance(parent[key], dict):
            parent[key][["zz", "name", "config", "class_name"][gen.integers(4)]] = _hostile_value(
                gen
            )
        elif action == "swap_class" and _layer_list(document):
            layers = _layer_list(document)
            entry = layers[gen.integers(len(layers))]
            if isinstance(entry, dict):
                choices = [
                    "Dense",
                    "Conv2D",
                    "MaxPool2D",
                    "BatchNorm",
                    "Softmax",
                    "Flatten",
                    "Nope",
                ]
                entry["class_name"] = choices[gen.integers(len(choices))]
        elif action == "resize" and isinstance(parent[key], list) and parent[key]:
            items = parent[key]
            if gen.random() < 0.5:
                items.pop(int(gen.integers(len(items))))
            else:
                items.append(copy.deepcopy(items[gen.integers(len(items))]))
        else:
            action = "replace"
            parent[key] = _hostile_value(gen)
        notes.append(f"{action} {'.'.join(map(str, path))}")
    return document, "; ".join(notes)


def _break_text(text: str, gen: np.random.Generator) -> tuple[str, str]:
    choice = int(gen.integers(7))
    if choice == 0:
        cut = int(gen.integers(len(text)))
        return text[:cut], f"text cut at {cut}"
    if choice == 1:
        depth = int(gen.choice([65, 1000, 100_000]))
        return text.replace(
            '"metadata": {', '"metadata": {"deep": ' + "[" * depth + "]" * depth + ", ", 1
        ), f"depth {depth}"
    if choice == 2:
        literal = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"][gen.integers(5)]
        return text.replace('"output": ', f'"output": {literal}, "was": ', 1), literal
    if choice == 3:
        return ["[]", '"gometal"', "5", "null", "{}"][gen.integers(5)], "not an object"
    if choice == 4:
        digits = "9" * int(gen.choice([400, 5000]))
        return text.replace('"seed": ', f'"seed": {digits}, "was": ', 1), "long integer"
    if choice == 5:
        return text.replace(
            '"format": "gometal', '"format": "gometal", "format": "gometal', 1
        ), "duplicate keys"
    position = int(gen.integers(len(text)))
    return text[:position] + '\\ud800"' + text[position:], "stray escape"


def _damage_values(tensors: dict[str, np.ndarray], gen: np.random.Generator) -> str:
    names = sorted(tensors)
    name = names[gen.integers(len(names))]
    if gen.random() < 0.25 and "optimizer.step" in tensors:
        name = "optimizer.step"
    array = np.array(tensors[name], np.float32, copy=True)
    value = np.float32([np.nan, np.inf, -np.inf, 3.0e38, -1.0, 0.5, 2.0**40][gen.integers(7)])
    flat = array.reshape(-1)
    if flat.size:
        if gen.random() < 0.3:
            flat[:] = value
        else:
            flat[gen.integers(flat.size)] = value
    tensors[name] = array
    return f"{name} <- {value}"


def _damage_layout(tensors: dict[str, np.ndarray], gen: np.random.Generator) -> str:
    names = sorted(tensors)
    name = names[gen.integers(len(names))]
    array = tensors[name]
    choice = int(gen.integers(6))
    if choice == 0:
        dtype = [np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_][gen.integers(6)]
        with np.errstate(all="ignore"):  # large values overflow float16: that is the point
            tensors[name] = array.astype(dtype)
        return f"{name} as {np.dtype(dtype).name}"
    if choice == 1:
        tensors[name] = array.reshape(-1) if array.ndim != 1 else array.reshape(1, -1)
        return f"{name} reshaped to {tensors[name].shape}"
    if choice == 2:
        tensors[name] = np.zeros((0, *array.shape[1:]), np.float32)
        return f"{name} emptied"
    if choice == 3:
        del tensors[name]
        return f"{name} dropped"
    if choice == 4:
        tensors[name + ".extra"] = np.ones((3,), np.float32)
        return "extra tensor"
    tensors["renamed." + name] = tensors.pop(name)
    return f"{name} renamed"


def _lying_header(
    text: str, tensors: dict[str, np.ndarray], gen: np.random.Generator
) -> tuple[dict, bytes, str]:
    names = sorted(tensors)
    name = names[gen.integers(len(names))]
    lie = [
        {"dtype": "F64"},
        {"dtype": "I8"},
        {"shape": [2**40]},
        {"shape": [2**62, 2**62]},
        {"shape": [-1]},
        {"shape": [*tensors[name].shape, 2]},
        {"data_offsets": [0, 2**62]},
    ][gen.integers(7)]
    declared = {key: value for key, value in lie.items() if key != "data_offsets"}
    header, payload = forged_header(text, tensors, {name: declared})
    if "data_offsets" in lie:
        header[name]["data_offsets"] = lie["data_offsets"]
    return header, payload, f"{name} declares {lie}"


def _flip_header_bytes(data: bytes, gen: np.random.Generator) -> tuple[bytes, str]:
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    damaged = bytearray(data)
    positions = gen.integers(0, header_end, int(gen.integers(1, 5)))
    if gen.random() < 0.2:
        positions[0] = gen.integers(0, 8)  # the length prefix itself
    for position in positions:
        damaged[position] ^= int(gen.integers(1, 256))
    return bytes(damaged), f"flipped {sorted(int(p) for p in positions)}"


def _write_case(folder: Path, index: int, base: Base, kind: str, gen: np.random.Generator) -> str:
    path = folder / f"case{index:04d}.safetensors"
    data = base.path.read_bytes()
    document, tensors = read_parts(base.path)
    if kind == "header_bytes":
        damaged, note = _flip_header_bytes(data, gen)
        path.write_bytes(damaged)
    elif kind == "truncated":
        cut = int(gen.integers(0, len(data)))
        path.write_bytes(data[:cut])
        note = f"cut at {cut} of {len(data)}"
    elif kind == "document":
        forged, note = _edit_document(document, gen)
        write_forged(path, forged, tensors)
    elif kind == "document_text":
        text, note = _break_text(json.dumps(document), gen)
        write_forged(path, text, tensors)
    elif kind == "tensor_values":
        note = _damage_values(tensors, gen)
        write_forged(path, document, tensors)
    elif kind == "tensor_layout":
        note = _damage_layout(tensors, gen)
        write_forged(path, document, tensors)
    else:
        header, payload, note = _lying_header(json.dumps(document), tensors, gen)
        write_raw(path, header, payload)
    return note


def _fixed_cases(folder: Path, bases: list[Base]) -> list[tuple[str, Path, str, str]]:
    """(kind, path, loader, note) of the cases every run includes."""
    fixed = [
        ("pristine", base.path, loader, base.name)
        for base in bases
        for loader in base.intact_loaders
    ]
    checkpoint = bases[0]
    document, tensors = read_parts(checkpoint.path)
    text = json.dumps(document)
    raw = {
        "empty": b"",
        "seven_bytes": b"\x00" * 7,
        "pickle": b"\x80\x04\x95" + bytes(64),
        "zip": b"PK\x03\x04" + bytes(64),
        "json": text.encode(),
        "huge_header_length": struct.pack("<Q", 2**63) + bytes(64),
    }
    for name, content in raw.items():
        path = folder / f"fixed_{name}.safetensors"
        path.write_bytes(content)
        fixed.append(("not_safetensors", path, "trainer", name))
    # A named pipe nobody writes to: a reader that opened it would wait forever.
    fifo = folder / "fixed_pipe.safetensors"
    os.mkfifo(fifo)
    fixed.append(("not_regular", fifo, "trainer", "named pipe"))
    fixed.append(("not_regular", Path(os.devnull), "model", "character device"))
    # Documents at the bounds: the densest legal one (the most parsing memory per
    # character), one character too long, and one nested far too deep.
    filler = ",".join(["[]"] * ((MAX_DOCUMENT_CHARS - len(text) - 64) // 3))
    dense = text.replace('"metadata": {', '"metadata": {"filler": [' + filler + "], ", 1)
    long = text.replace(
        '"metadata": {', '"metadata": {"pad": "' + "x" * MAX_DOCUMENT_CHARS + '", ', 1
    )
    deep = text.replace(
        '"metadata": {', '"metadata": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1
    )
    for name, content in (("densest_legal", dense), ("too_long", long), ("too_deep", deep)):
        path = folder / f"fixed_{name}.safetensors"
        write_forged(path, content, tensors)
        fixed.append(("bounds", path, "trainer", name))
    # A document whose keys and values hold lone surrogates (valid JSON escapes that no
    # UTF-8 encoder accepts), with the checksum recomputed.
    path = folder / "fixed_surrogate.safetensors"
    surrogates = text.replace("gometal_version", "\\udcff").replace('"dense_0"', '"\\ud800"')
    header, payload = forged_header(surrogates, tensors, {})
    write_raw(path, header, payload)
    fixed.append(("bounds", path, "trainer", "escaped lone surrogate"))
    return fixed


def write_cases(folder: Path, bases: list[Base], count: int, seed: int) -> list[Case]:
    """Writes the fixed cases and ``count`` random ones into ``folder``; returns them all."""
    gen = np.random.default_rng(seed)
    cases = [
        Case(index, kind, loader, path, note)
        for index, (kind, path, loader, note) in enumerate(_fixed_cases(folder, bases))
    ]
    for index in range(len(cases), len(cases) + count):
        base = bases[gen.integers(len(bases))]
        kind = KINDS[gen.integers(len(KINDS))]
        loader = base.loaders[gen.integers(len(base.loaders))]
        note = _write_case(folder, index, base, kind, gen)
        cases.append(Case(index, kind, loader, folder / f"case{index:04d}.safetensors", note))
    return cases
