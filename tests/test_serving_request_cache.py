"""The inference request path remembers what repeats between requests: the layout of a
binary request's JSON header (parsed once per distinct header) and the JSON of an all-binary
answer (encoded once per model, id and output shapes). Each request must still get its
own data, its own id and every check a fresh parse makes; the memory stays bounded.

References: the arrays NumPy wrote into each body, and tritonclient's own decoding of the
answers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton

from gometal.serving.protocol import (
    LAYOUT_CACHE_ENTRIES,
    ProtocolError,
    encode_infer_response,
    parse_infer_request,
    remembered_layouts,
)


def _binary_request(arrays: dict[str, np.ndarray], **fields: object) -> tuple[bytes, str]:
    """A binary-extension body as tritonclient writes it, and its header length."""
    inputs = [
        triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
        for name, array in arrays.items()
    ]
    for tensor, array in zip(inputs, arrays.values()):
        tensor.set_data_from_numpy(array)
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, **fields)
    return body, str(json_size)


def _decoded_answer(body: bytes, headers: dict[str, str]) -> triton.InferResult:
    length = headers.get("Inference-Header-Content-Length")
    return triton.InferenceServerClient.parse_response_body(
        body, header_length=int(length) if length else None
    )


def test_requests_repeating_a_header_each_get_their_own_data() -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((5, 1, 3, 4, 4), dtype=np.float32)
    ids = rng.integers(-9, 9, size=(5, 1, 2)).astype(np.int64)
    headers = set()
    for image, row in zip(images, ids):
        body, length = _binary_request({"x": image, "ids": row})
        headers.add(body[: int(length)])
        request = parse_infer_request(body, length)
        np.testing.assert_array_equal(request.inputs[0].array, image)
        np.testing.assert_array_equal(request.inputs[1].array, row)
        assert request.inputs[1].array.dtype == np.int64
    assert len(headers) == 1  # the same header every time: the layout was reused


def test_a_remembered_header_still_refuses_binary_data_of_another_length() -> None:
    x = np.ones((2, 3), np.float32)
    body, length = _binary_request({"x": x})
    parse_infer_request(body, length)
    with pytest.raises(ProtocolError, match=r"input 'x': binary data ends at byte 24"):
        parse_infer_request(body[:-4], length)
    with pytest.raises(ProtocolError, match=r"add up to 24 bytes, but 28 bytes follow"):
        parse_infer_request(body + b"\0" * 4, length)


def test_a_remembered_header_keeps_the_requested_outputs_and_binary_default() -> None:
    x = np.ones((1, 3), np.float32)
    outputs = [triton.InferRequestedOutput("y", binary_data=False)]
    for _ in range(2):
        body, length = _binary_request({"x": x}, outputs=outputs, request_id="r7")
        request = parse_infer_request(body, length)
        assert request.id == "r7" and request.outputs == {"y": False}


def test_the_remembered_layouts_stay_bounded() -> None:
    x = np.arange(3, dtype=np.float32)[None]
    for index in range(LAYOUT_CACHE_ENTRIES + 20):
        body, length = _binary_request({"x": x + index}, request_id=f"id-{index}")
        request = parse_infer_request(body, length)
        assert request.id == f"id-{index}"
        np.testing.assert_array_equal(request.inputs[0].array, x + index)
        assert remembered_layouts() <= LAYOUT_CACHE_ENTRIES
    assert remembered_layouts() == LAYOUT_CACHE_ENTRIES


def test_a_header_length_that_is_not_ascii_digits_is_a_400() -> None:
    body, _ = _binary_request({"x": np.ones((1, 2), np.float32)})
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length must be a byte"):
        parse_infer_request(body, "\u00b2")  # a superscript two: str.isdigit() says yes


def _request_for(request_id: str | None, binary: bool | None = None) -> object:
    header: dict[str, object] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}],
        "parameters": {"binary_data_output": True},
    }
    if request_id is not None:
        header["id"] = request_id
    if binary is not None:
        header["outputs"] = [{"name": "y", "parameters": {"binary_data": binary}}]
    return parse_infer_request(json.dumps(header).encode(), None)


def test_repeated_answers_carry_each_requests_id_and_data() -> None:
    rng = np.random.default_rng(1)
    for request_id in ("a", "b", None, "a", "x" * 300):
        y = rng.standard_normal((2, 3)).astype(np.float32)
        body, headers = encode_infer_response("m", 4, _request_for(request_id), [("y", y)])
        answer = _decoded_answer(body, headers)
        np.testing.assert_array_equal(answer.as_numpy("y"), y)
        response = answer.get_response()
        assert response.get("id") == request_id
        assert response["model_name"] == "m" and response["model_version"] == "4"


def test_answers_of_the_same_shape_keep_their_datatype_and_form() -> None:
    y32 = np.full((1, 2), 1.5, np.float32)
    y64 = np.full((1, 2), -2, np.int64)
    for _ in range(2):
        for y, datatype in ((y32, "FP32"), (y64, "INT64")):
            body, headers = encode_infer_response("m", 1, _request_for("same"), [("y", y)])
            answer = _decoded_answer(body, headers)
            assert answer.get_output("y")["datatype"] == datatype
            np.testing.assert_array_equal(answer.as_numpy("y"), y)
    # The same model, id and shape asked for as JSON: data in the JSON, no binary part.
    body, headers = encode_infer_response("m", 1, _request_for("same", False), [("y", y32)])
    assert headers == {}
    assert json.loads(body)["outputs"][0]["data"] == [1.5, 1.5]
