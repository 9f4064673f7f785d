"""The Open Inference Protocol's (KServe v2) inference messages over HTTP, as
``tritonclient.http`` sends and reads them.

A request body is a JSON object, optionally followed by the binary tensor data extension:
when the ``Inference-Header-Content-Length`` header is present, the JSON takes that many
bytes and each input with ``"parameters": {"binary_data_size": n}`` takes its next ``n``
bytes (little-endian, row-major). An answer carries outputs as JSON ``data`` lists or, when
the request asks for them in binary (``binary_data_output``, or an output's
``binary_data``), as bytes after the JSON with the same header.

Everything a client sends is checked before it reaches a model: malformed JSON, a missing
or mistyped field, a datatype without a NumPy type, data whose element count or byte
length disagrees with its shape; each is a :class:`ProtocolError` naming the input and
the expected against the received value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BYTES_DTYPE",
    "DATATYPES",
    "ENGINE_DATATYPES",
    "HEADER_LENGTH",
    "LAYOUT_CACHE_ENTRIES",
    "RETRY_AFTER_S",
    "InferRequest",
    "ProtocolError",
    "RequestTensor",
    "datatype_of",
    "encode_infer_response",
    "parse_infer_request",
    "remembered_layouts",
    "split_bytes_elements",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
RETRY_AFTER_S = 1  # the Retry-After of a 503: the server is overloaded or draining
# Open Inference Protocol datatypes -> NumPy (little-endian, as the binary extension is).
DATATYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_DATATYPE_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
# Request headers whose layout is remembered, and the longest one remembered.
LAYOUT_CACHE_ENTRIES = 256
LAYOUT_CACHE_HEADER_BYTES = 4096
# Answers whose JSON header is remembered; a longer request id is encoded every time.
ANSWER_CACHE_ENTRIES = 256
ANSWER_CACHE_ID_CHARS = 128
# BYTES tensors (image files) decode to object arrays of ``bytes``.
BYTES_DTYPE = np.dtype(object)
# The engine's dtypes (gm model signatures) -> protocol datatypes.
ENGINE_DATATYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "int8": "INT8",
    "uint8": "UINT8",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}
# NumPy kinds JSON numbers may arrive as, per target kind (JSON ints are fine for floats).
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}


class ProtocolError(Exception):
    """A request the server refuses: an HTTP status and a message for the client.

    Args:
        status: the HTTP status (4xx for the client's mistakes).
        message: what was wrong, naming the field and the expected vs received value.
        headers: extra response headers (``Retry-After``).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class RequestTensor:
    """One input of a request, decoded.

    Attributes:
        name: the input's name.
        datatype: its protocol datatype (``FP32``).
        array: its values, shaped as the request says.
    """

    name: str
    datatype: str
    array: np.ndarray


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request.

    Attributes:
        id: the client's request id (echoed back), or ``None``.
        inputs: the inputs, in the order sent.
        outputs: requested output name -> whether it goes back in binary (``None``: the
            request's default); ``None`` when the request lists no outputs (all of them).
        binary_output: the request's default for outputs (``binary_data_output``).
    """

    id: str | None
    inputs: list[RequestTensor]
    outputs: dict[str, bool | None] | None
    binary_output: bool


def datatype_of(dtype: np.dtype) -> str:
    """The protocol datatype of a NumPy dtype (either byte order).

    Raises:
        KeyError: the dtype has no protocol datatype.

    Example:
        >>> datatype_of(np.dtype(np.float32))
        'FP32'
    """
    return _DATATYPE_NAMES[dtype.newbyteorder("<")]


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return bytes(body), memoryview(b"")
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise _bad(
            f"{HEADER_LENGTH} must be a byte count within the body ({len(body)} bytes), "
            f"got {header_length!r}"
        )
    size = int(header_length)
    return bytes(body[:size]), memoryview(body)[size:]


def _load_json(text: bytes) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise _bad(f"malformed JSON in the request body: {err}") from None
    if not isinstance(document, dict):
        raise _bad(f"the request must be a JSON object, got {type(document).__name__}")
    return document


def _shape(tensor: dict[str, Any], label: str) -> list[int]:
    shape = tensor.get("shape")
    valid = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )
    if not valid:
        raise _bad(f"{label}: 'shape' must be a list of ints >= 0, got {shape!r}")
    return shape


def _datatype(tensor: dict[str, Any], label: str) -> np.dtype:
    datatype = tensor.get("datatype")
    if datatype == "BYTES":
        return BYTES_DTYPE
    if datatype not in DATATYPES:
        raise _bad(f"{label}: 'datatype' must be one of {sorted(DATATYPES)}, got {datatype!r}")
    return DATATYPES[datatype]


def _from_json(data: Any, dtype: np.dtype, shape: list[int], label: str) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        raise _bad(f"{label}: 'data' must be a JSON list, got {type(data).__name__}")
    try:
        values = np.array(data)
    except ValueError as err:  # ragged nesting
        raise _bad(f"{label}: 'data' is not a rectangular list ({err})") from None
    if values.size != count or (values.ndim != 1 and list(values.shape) != shape):
        raise _bad(
            f"{label}: shape {shape} needs {count} elements, got 'data' of "
            f"{values.size} elements (shape {list(values.shape)})"
        )
    if values.size and values.dtype.kind not in _ACCEPTED_KINDS.get(dtype.kind, ""):
        raise _bad(f"{label}: 'data' must hold numbers of datatype's kind, got {values.dtype}")
    if dtype.kind in "iu" and values.size:
        limits = np.iinfo(dtype)
        if values.min() < limits.min or values.max() > limits.max:
            raise _bad(f"{label}: values must lie in [{limits.min}, {limits.max}]")
    return values.astype(dtype).reshape(shape)


def split_bytes_elements(data: bytes | memoryview, count: int, label: str) -> np.ndarray:
    """The elements of a serialized BYTES tensor: each a 4-byte little-endian length, then
    that many bytes.

    Args:
        data: the tensor's bytes.
        count: how many elements its shape holds.
        label: how messages name the tensor.

    Returns:
        A 1-D object array of ``bytes``.

    Raises:
        ProtocolError: 400 when the lengths run past the data, leave bytes over, or the
            element count differs from ``count``.
    """
    elements, offset, data = [], 0, memoryview(data)
    while offset < len(data):
        if offset + 4 > len(data):
            raise _bad(f"{label}: a BYTES element's 4-byte length is cut at byte {offset}")
        length = int.from_bytes(data[offset : offset + 4], "little")
        if offset + 4 + length > len(data):
            raise _bad(f"{label}: a BYTES element of {length} bytes runs past the data")
        elements.append(bytes(data[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    if len(elements) != count:
        raise _bad(f"{label}: the shape needs {count} BYTES elements, got {len(elements)}")
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array


@dataclass(frozen=True)
class _InputLayout:
    """One input as its request's JSON header describes it: binary (``size`` bytes of the
    data after the header) or already decoded from JSON (``array``)."""

    name: str
    datatype: str
    dtype: np.dtype
    shape: tuple[int, ...]
    size: int = 0
    array: np.ndarray | None = None


@dataclass(frozen=True)
class _RequestLayout:
    """What a request's JSON header says: everything but the binary data itself."""

    id: str | None
    inputs: tuple[_InputLayout, ...]
    outputs: dict[str, bool | None] | None
    binary_output: bool
    binary_bytes: int


class _LayoutCache:
    """The layouts of recent all-binary request headers, by the header's bytes.

    A client sends the same header for every request of one shape, so parsing its JSON
    again and checking every field again is most of a small request's decoding. Bounded
    in entries and in header length; the oldest entry goes first.
    """

    def __init__(self, entries: int, header_bytes: int) -> None:
        self.entries = entries
        self.header_bytes = header_bytes
        self._layouts: dict[bytes, _RequestLayout] = {}

    def __len__(self) -> int:
        return len(self._layouts)

    def get(self, header: bytes) -> _RequestLayout | None:
        return self._layouts.get(header)

    def put(self, header: bytes, layout: _RequestLayout) -> None:
        if len(header) > self.header_bytes or any(i.array is not None for i in layout.inputs):
            return
        if len(self._layouts) >= self.entries:
            # Another thread (a large body is parsed off the loop) may evict the same key.
            self._layouts.pop(next(iter(self._layouts), b""), None)
        self._layouts[header] = layout


_layouts = _LayoutCache(LAYOUT_CACHE_ENTRIES, LAYOUT_CACHE_HEADER_BYTES)


def remembered_layouts() -> int:
    """How many request headers' layouts :func:`parse_infer_request` remembers now (at
    most :data:`LAYOUT_CACHE_ENTRIES`).

    Example:
        >>> 0 <= remembered_layouts() <= LAYOUT_CACHE_ENTRIES
        True
    """
    return len(_layouts)


def _binary_size(size: Any, dtype: np.dtype, shape: list[int], label: str) -> int:
    if dtype is BYTES_DTYPE:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _bad(f"{label}: binary_data_size must be a byte count, got {size!r}")
        return size
    expected = math.prod(shape) * dtype.itemsize
    if isinstance(size, bool) or not isinstance(size, int) or size != expected:
        raise _bad(
            f"{label}: binary_data_size must be {expected} bytes for shape {shape}, got {size!r}"
        )
    return size


def _from_binary(layout: _InputLayout, binary: memoryview, offset: int) -> np.ndarray:
    label, end = f"input {layout.name!r}", offset + layout.size
    if end > len(binary):
        raise _bad(f"{label}: binary data ends at byte {end}, but the body holds "
                   f"{len(binary)} bytes after the JSON header")  # fmt: skip
    if layout.dtype is BYTES_DTYPE:
        elements = split_bytes_elements(binary[offset:end], math.prod(layout.shape), label)
        return elements.reshape(layout.shape)
    return np.frombuffer(binary[offset:end], dtype=layout.dtype).reshape(layout.shape)


def _requested_outputs(document: dict[str, Any]) -> dict[str, bool | None] | None:
    outputs = document.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise _bad(f"'outputs' must be a list, got {type(outputs).__name__}")
    requested: dict[str, bool | None] = {}
    for index, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise _bad(f"outputs[{index}] must be an object with a string 'name', got {output!r}")
        parameters = output.get("parameters") or {}
        binary = parameters.get("binary_data") if isinstance(parameters, dict) else None
        requested[name] = bool(binary) if binary is not None else None
    return requested


def _input_layout(index: int, tensor: Any, seen: set[str]) -> _InputLayout:
    name = tensor.get("name") if isinstance(tensor, dict) else None
    if not isinstance(name, str):
        raise _bad(f"inputs[{index}] must be an object with a string 'name'")
    if name in seen:
        raise _bad(f"input {name!r} is given twice")
    seen.add(name)
    label = f"input {name!r}"
    dtype, shape = _datatype(tensor, label), _shape(tensor, label)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _bad(f"{label}: 'parameters' must be an object")
    if "binary_data_size" in parameters:
        if "data" in tensor:
            raise _bad(f"{label}: give either 'data' or binary_data_size, not both")
        size = _binary_size(parameters["binary_data_size"], dtype, shape, label)
        return _InputLayout(name, tensor["datatype"], dtype, tuple(shape), size)
    if "data" in tensor:
        if dtype is BYTES_DTYPE:
            raise _bad(f"{label}: send BYTES (image files) as binary data, not JSON")
        array = _from_json(tensor["data"], dtype, shape, label)
        return _InputLayout(name, tensor["datatype"], dtype, tuple(shape), array=array)
    raise _bad(f"{label}: has neither 'data' nor parameters.binary_data_size")


def _request_layout(header: bytes) -> _RequestLayout:
    document = _load_json(header)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad(f"'inputs' must be a non-empty list, got {inputs!r:.80}")
    seen: set[str] = set()
    layouts = tuple(_input_layout(index, tensor, seen) for index, tensor in enumerate(inputs))
    parameters = document.get("parameters") or {}
    request_id = document.get("id")
    return _RequestLayout(
        id=str(request_id) if request_id is not None else None,
        inputs=layouts,
        outputs=_requested_outputs(document),
        binary_output=bool(parameters.get("binary_data_output", False))
        if isinstance(parameters, dict)
        else False,
        binary_bytes=sum(i.size for i in layouts),
    )


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decodes an inference request body (JSON, and binary data when ``header_length``).

    The layout of a header whose inputs are all binary is remembered (bounded), so a
    client repeating its header costs one lookup, not a JSON parse and its checks.

    Args:
        body: the whole request body.
        header_length: the ``Inference-Header-Content-Length`` header, or ``None``.

    Returns:
        The request, each input an array of its datatype and shape.

    Raises:
        ProtocolError: 400 with a message naming what is wrong.

    Example:
        >>> request = parse_infer_request(
        ...     b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], '
        ...     b'"data": [1, 2]}]}', None)
        >>> request.inputs[0].array
        array([[1., 2.]], dtype=float32)
    """
    header, binary = _split_body(body, header_length)
    layout = _layouts.get(header) if header_length is not None else None
    if layout is None:
        layout = _request_layout(header)
        if header_length is not None:
            _layouts.put(header, layout)
    decoded, offset = [], 0
    for tensor in layout.inputs:
        array = tensor.array
        if array is None:
            array = _from_binary(tensor, binary, offset)
            offset += tensor.size
        decoded.append(RequestTensor(tensor.name, tensor.datatype, array))
    if layout.binary_bytes != len(binary):
        raise _bad(
            f"the inputs' binary_data_size add up to {layout.binary_bytes} bytes, but "
            f"{len(binary)} bytes follow the JSON header"
        )
    return InferRequest(layout.id, decoded, layout.outputs, layout.binary_output)


def _little_endian_bytes(array: np.ndarray) -> bytes:
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


# The JSON of recent all-binary answers, by model, version, id and output shapes.
_answer_headers: dict[tuple[Any, ...], bytes] = {}


def encode_infer_response(
    model_name: str,
    model_version: int,
    request: InferRequest,
    outputs: list[tuple[str, np.ndarray]],
) -> tuple[bytes, dict[str, str]]:
    """Encodes an inference answer, in binary where the request asked for it.

    Args:
        model_name: the model's name.
        model_version: the version that answered.
        request: the request (its id and how it wants outputs).
        outputs: ``(name, array)`` per output to send, in order.

    Returns:
        ``(body, headers)``: the body, and ``Inference-Header-Content-Length`` when binary
        data follows the JSON.

    Example:
        >>> body, headers = encode_infer_response("mlp", 1, request, [("y", y)])  # doctest: +SKIP
    """
    arrays = [(name, np.ascontiguousarray(array)) for name, array in outputs]
    wanted = request.outputs or {}
    in_binary = [
        request.binary_output if wanted.get(name) is None else bool(wanted[name])
        for name, _ in arrays
    ]
    key = None
    if all(in_binary) and (request.id is None or len(request.id) <= ANSWER_CACHE_ID_CHARS):
        key = (model_name, model_version, request.id,
               tuple((name, array.dtype.str, array.shape) for name, array in arrays))  # fmt: skip
        header = _answer_headers.get(key)
        if header is not None:  # the same answer's JSON as last time: only the data differs
            chunks = [_little_endian_bytes(array) for _, array in arrays]
            return b"".join([header, *chunks]), {HEADER_LENGTH: str(len(header))}
    answer: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.id is not None:
        answer["id"] = request.id
    tensors, chunks = [], []
    for (name, array), binary in zip(arrays, in_binary):
        datatype = datatype_of(array.dtype)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            data = _little_endian_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    answer["outputs"] = tensors
    header = json.dumps(answer).encode()
    if not chunks:
        return header, {}
    if key is not None:
        if len(_answer_headers) >= ANSWER_CACHE_ENTRIES:
            _answer_headers.pop(next(iter(_answer_headers), None), None)
        _answer_headers[key] = header
    return b"".join([header, *chunks]), {HEADER_LENGTH: str(len(header))}
