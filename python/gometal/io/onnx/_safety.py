"""Defensive reading of ONNX files: size caps, tensor checks and contained external data.

Nothing here trusts the file. The protobuf is parsed from bytes whose size was checked
first, every tensor's declared element count is compared with a cap and with the data
actually present before anything is allocated, and external data is read only from
regular files inside the model's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

# A protobuf message cannot exceed 2 GiB, and no tensor gometal can hold is larger.
MAX_FILE_BYTES = 2 * 1024**3
MAX_TENSOR_BYTES = 2 * 1024**3

MAX_SAMPLE_BYTES = 1024**3
"""The most memory one sample may need in an imported model's forward pass, in bytes.

Counted node by node at import, from shapes and attributes, before anything is
allocated: the input, the output of every engine primitive the graph's layers emit,
padded copies, pooling count maps and convolution scratch. Buffers the engine reuses
count each time, so the count overstates the engine's real arena: ResNet-50 at 224 x 224
counts 227 MiB per sample (its arena for one sample is 29 MiB) and VGG-16 473 MiB.
``predict`` on ``N`` samples needs at most about ``N`` times the count; training also
keeps intermediates for the backward pass, and needs more.
"""


class OnnxImportError(ValueError):
    """An ONNX file that cannot be imported: malformed, unsafe or unsupported.

    Example:
        >>> raise OnnxImportError("Gemm node 'fc': input B must be a constant")  # doctest: +SKIP
    """


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the environment
        raise OnnxImportError(
            "importing ONNX models needs the 'onnx' package: pip install onnx"
        ) from None
    return onnx


def read_model_proto(path: str | os.PathLike[str]) -> tuple[Any, Path]:
    """Parses an ONNX file without following external data; returns (model, folder).

    Args:
        path: the ``.onnx`` file.

    Returns:
        The ``onnx.ModelProto`` (external tensors not yet loaded) and the folder that
        external data must stay inside.

    Raises:
        OnnxImportError: a missing, oversized, empty or unparsable file.

    Example:
        >>> proto, folder = read_model_proto("model.onnx")  # doctest: +SKIP
    """
    onnx = _onnx()
    file = Path(path)
    if not file.is_file():
        raise OnnxImportError(f"path must be an existing ONNX file, got {str(path)!r}")
    size = file.stat().st_size
    if size == 0:
        raise OnnxImportError(f"ONNX file {str(path)!r} is empty")
    if size > MAX_FILE_BYTES:
        raise OnnxImportError(
            f"ONNX file {str(path)!r} has {size} bytes, more than the {MAX_FILE_BYTES} allowed"
        )
    data = file.read_bytes()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise OnnxImportError(
            f"ONNX file {str(path)!r} is not a valid ONNX protobuf (truncated or corrupt): {err}"
        ) from None
    check_text_fields(model, f"ONNX file {str(path)!r}")
    if not model.HasField("graph") or not model.graph.output:
        raise OnnxImportError(
            f"ONNX file {str(path)!r} holds no graph with outputs (truncated or not an ONNX model)"
        )
    return model, file.resolve().parent


def _is_repeated(field: Any) -> bool:
    # protobuf 7 dropped FieldDescriptor.label for is_repeated (added in protobuf 5).
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


def check_text_fields(message: Any, what: str) -> None:
    """Refuses a parsed protobuf whose text (``string``) fields are not valid UTF-8.

    Protobuf's Python runtime hands such fields back as ``bytes`` instead of ``str``, which
    every later name comparison and message would trip over.

    Args:
        message: the parsed message (``onnx.ModelProto``).
        what: how the error names the file.

    Raises:
        OnnxImportError: naming the first such field.

    Example:
        >>> check_text_fields(proto, "ONNX file 'model.onnx'")  # doctest: +SKIP
    """
    from google.protobuf.descriptor import FieldDescriptor

    # An explicit stack: nested graphs (If/Loop bodies) must not reach the recursion limit.
    stack: list[tuple[Any, str]] = [(message, "model")]
    while stack:
        current, path = stack.pop()
        for field, value in current.ListFields():
            if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
                continue  # numbers and raw bytes: nothing to decode
            name = f"{path}.{field.name}"
            repeated = _is_repeated(field)
            items = (
                [(f"{name}[{i}]", v) for i, v in enumerate(value)] if repeated else [(name, value)]
            )
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                stack.extend((item, where) for where, item in items)
                continue
            for where, text in items:
                if not isinstance(text, str):
                    raise OnnxImportError(
                        f"{what}: field {where} holds {bytes(text)[:40]!r}, which is not valid "
                        "UTF-8 text"
                    )


def _element_count(dims: Any, what: str) -> int:
    count = 1
    for d in dims:
        if d < 0:
            raise OnnxImportError(f"{what} has a negative dimension in its shape {list(dims)}")
        count *= int(d)
    return count


def _itemsize(tensor: Any, what: str) -> int:
    onnx = _onnx()
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except (KeyError, ValueError, TypeError):
        raise OnnxImportError(f"{what} has an unknown data type {tensor.data_type}") from None
    return int(np.dtype(dtype).itemsize)


_TYPED_FIELDS = (
    "float_data",
    "int32_data",
    "int64_data",
    "double_data",
    "uint64_data",
    "string_data",
)


def _external_entries(tensor: Any) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _read_external(tensor: Any, folder: Path, expected: int, what: str) -> bytes:
    entries = _external_entries(tensor)
    location = entries.get("location", "")
    if not location:
        raise OnnxImportError(f"{what} is stored externally but names no location")
    if "\x00" in location:
        raise OnnxImportError(f"{what}: external data location {location!r} holds a NUL byte")
    if os.path.isabs(location) or Path(location).drive:
        raise OnnxImportError(
            f"{what}: external data location {location!r} is absolute; only paths inside the "
            f"model's folder {str(folder)!r} are allowed"
        )
    target = (folder / location).resolve()
    if os.path.commonpath([str(target), str(folder)]) != str(folder):
        raise OnnxImportError(
            f"{what}: external data location {location!r} leads outside the model's folder "
            f"{str(folder)!r}"
        )
    if not target.is_file():
        raise OnnxImportError(f"{what}: external data file {location!r} does not exist")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(expected)))
    except ValueError:
        raise OnnxImportError(f"{what}: external data offset/length are not integers") from None
    if offset < 0 or length != expected:
        raise OnnxImportError(
            f"{what}: external data declares {length} bytes at offset {offset}, expected "
            f"{expected} bytes for its shape and type"
        )
    if offset + length > target.stat().st_size:
        raise OnnxImportError(
            f"{what}: external data file {location!r} has {target.stat().st_size} bytes, too "
            f"few for {length} bytes at offset {offset}"
        )
    with open(target, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def tensor_to_array(tensor: Any, folder: Path, what: str) -> np.ndarray:
    """Checks one ``TensorProto`` and converts it to a NumPy array.

    The declared size is checked against ``MAX_TENSOR_BYTES`` and against the bytes or
    values present before any array is built; external data must lie inside ``folder``.

    Args:
        tensor: the ``onnx.TensorProto``.
        folder: the model's folder (resolved).
        what: how errors name the tensor, e.g. ``"initializer 'fc.weight'"``.

    Returns:
        The array, with the tensor's shape and NumPy dtype.

    Raises:
        OnnxImportError: the checks fail.

    Example:
        >>> tensor_to_array(proto.graph.initializer[0], folder, "w")  # doctest: +SKIP
    """
    onnx = _onnx()
    count = _element_count(tensor.dims, what)
    itemsize = _itemsize(tensor, what)
    if tensor.data_type == onnx.TensorProto.STRING:
        raise OnnxImportError(f"{what} is a string tensor, which gometal cannot use")
    expected = count * itemsize
    if expected > MAX_TENSOR_BYTES:
        raise OnnxImportError(
            f"{what} declares shape {list(tensor.dims)} ({expected} bytes), more than the "
            f"{MAX_TENSOR_BYTES} bytes allowed"
        )
    clean = onnx.TensorProto()
    clean.CopyFrom(tensor)
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raw = _read_external(tensor, folder, expected, what)
        del clean.external_data[:]
        clean.data_location = onnx.TensorProto.DEFAULT
        clean.raw_data = raw
    elif tensor.HasField("raw_data"):
        if len(tensor.raw_data) != expected:
            raise OnnxImportError(
                f"{what} declares shape {list(tensor.dims)} ({expected} bytes) but holds "
                f"{len(tensor.raw_data)} bytes of data"
            )
    else:
        present = max(len(getattr(tensor, name)) for name in _TYPED_FIELDS)
        # float16/bfloat16/int8/bool values travel in int32_data, one value per entry.
        if present != count:
            raise OnnxImportError(
                f"{what} declares shape {list(tensor.dims)} ({count} values) but holds "
                f"{present} values"
            )
    try:
        return np.asarray(onnx.numpy_helper.to_array(clean))
    except (ValueError, TypeError) as err:
        raise OnnxImportError(f"{what} cannot be decoded: {err}") from None


def check_sample_bytes(shape: tuple[int, ...], what: str) -> None:
    """Refuses an input whose one sample would exceed ``MAX_TENSOR_BYTES`` as float32.

    Example:
        >>> check_sample_bytes((3, 224, 224), "input 'x'")
    """
    count = 1
    for d in shape:
        count *= max(d, 1)  # a run-time length (a negative symbol) counts once
    if count * 4 > MAX_TENSOR_BYTES:
        raise OnnxImportError(
            f"{what} declares a sample shape {shape} of {count * 4} bytes, more than the "
            f"{MAX_TENSOR_BYTES} bytes allowed"
        )
