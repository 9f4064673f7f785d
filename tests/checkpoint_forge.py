"""Forged gometal files for the hostile-input tests and the loader fuzz.

A forger who can edit a file can also recompute its checksum, so these helpers write
any document text and tensors with a valid ``gometal.sha256``: the loader must then
refuse the content itself. Files are read and written with ``safetensors``' own
functions and the digest follows the documented layout (SHA-256 over a tag, the
document and every tensor's name, dtype, shape and bytes), computed here without
gometal's code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

DOCUMENT_KEY = "gometal"
DIGEST_KEY = "gometal.sha256"

# safetensors dtype names of the NumPy dtypes a forged file may hold.
SAFETENSORS_DTYPES = {
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
    np.dtype("float16"): "F16",
    np.dtype("int32"): "I32",
    np.dtype("int64"): "I64",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def digest(document_text: str, tensors: dict[str, np.ndarray]) -> str:
    """The ``gometal.sha256`` a file holding ``document_text`` and ``tensors`` carries."""
    sha = hashlib.sha256(b"gometal-container-1\0")
    sha.update(document_text.encode("utf-8"))
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")
        shape = ",".join(str(d) for d in array.shape)
        sha.update(f"\0{name}\0{array.dtype.str}\0{shape}\0".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def read_parts(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The parsed document and the tensors of a gometal file, read with safetensors."""
    with safe_open(str(path), framework="np") as reader:
        text = reader.metadata()[DOCUMENT_KEY]
        names = list(reader.keys())
        tensors = {name: reader.get_tensor(name) for name in names}
    return json.loads(text), tensors


def write_forged(
    path: str | Path, document: dict[str, Any] | str, tensors: dict[str, np.ndarray]
) -> Path:
    """Writes ``document`` (a dict, dumped allowing NaN, or raw text) and ``tensors``
    with a checksum that matches them."""
    text = document if isinstance(document, str) else json.dumps(document)
    arrays = {name: np.asarray(value, order="C") for name, value in tensors.items()}
    save_file(arrays, str(path), metadata={DOCUMENT_KEY: text, DIGEST_KEY: digest(text, arrays)})
    return Path(path)


def write_raw(path: str | Path, header: dict[str, Any], payload: bytes) -> Path:
    """A safetensors file laid out by hand: the 8-byte length, the JSON header, the data."""
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + payload)
    return Path(path)


def forged_header(
    document_text: str, tensors: dict[str, np.ndarray], declared: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], bytes]:
    """A header and payload whose entries say ``declared[name]`` (dtype, shape) while the
    bytes and the checksum are those of ``tensors``: a tensor that lies about itself."""
    header: dict[str, Any] = {
        "__metadata__": {DOCUMENT_KEY: document_text, DIGEST_KEY: digest(document_text, tensors)}
    }
    offset, payload = 0, b""
    for name in sorted(tensors):
        data = np.asarray(tensors[name], order="C").tobytes()
        entry = {
            "dtype": SAFETENSORS_DTYPES[tensors[name].dtype],
            "shape": list(tensors[name].shape),
            **declared.get(name, {}),
        }
        header[name] = {**entry, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        payload += data
    return header, payload


def edited(document: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    """A deep copy of ``document`` with the entry at ``path`` (keys and indices) set."""
    copied = copy.deepcopy(document)
    target = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copied


def layer_config(document: dict[str, Any], class_name: str) -> list[Any]:
    """The path to the config of the first layer of ``class_name`` in ``document``."""
    for index, entry in enumerate(document["model"]["layers"]):
        if entry["class_name"] == class_name:
            return ["model", "layers", index, "config"]
    raise KeyError(class_name)
