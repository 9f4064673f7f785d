"""Shape arithmetic evaluated at import against onnx's reference implementation.

Each case runs one ONNX node on the concrete shape of a batch of 2 in
``onnx.reference.ReferenceEvaluator`` and compares it with gometal's import-time
evaluation, where the batch is symbolic and then set to 2.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from gometal.io.onnx._shape_values import (
    BATCH_SIZE,
    ShapeValue,
    arithmetic,
    gather,
    shape_of,
    slice_value,
)

BATCH = 2
ENGINE_SHAPE = (-1, 3, 5, 7)  # -1: the dynamic batch
CONCRETE_SHAPE = (BATCH, 3, 5, 7)
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _reference(op_type: str, inputs: dict[str, np.ndarray], opset: int, **attrs: object) -> list:
    infos = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for name, v in inputs.items()
    ]
    graph = helper.make_graph(
        [helper.make_node(op_type, list(inputs), ["y"], **attrs)],
        "g",
        infos,
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    (result,) = ReferenceEvaluator(model).run(None, inputs)
    return np.asarray(result).tolist()


def _concrete(value: ShapeValue) -> object:
    entries = [BATCH if e is BATCH_SIZE else e for e in value.entries]
    return entries[0] if value.scalar else entries


BOUNDS = [INT64_MIN, -9, -4, -3, -1, 0, 1, 2, 3, 4, 9, INT64_MAX]


@pytest.mark.parametrize("start", [-9, -4, -1, 0, 1, 3, 4, 9])
def test_shape_with_start_and_end(start: int) -> None:
    data = np.zeros(CONCRETE_SHAPE, np.float32)
    for end in [None, -9, -4, -1, 0, 2, 4, 9]:
        attrs = {"start": start} if end is None else {"start": start, "end": end}
        expected = _reference("Shape", {"x": data}, 15, **attrs)
        actual = shape_of(ENGINE_SHAPE, start, end)
        assert _concrete(actual) == expected, (start, end)


@pytest.mark.parametrize("step", [1, 2, -1, -2, 5])
def test_slice_of_a_shape(step: int) -> None:
    data = np.array(CONCRETE_SHAPE, np.int64)
    value = shape_of(ENGINE_SHAPE)
    for start, end in itertools.product(BOUNDS, BOUNDS):
        inputs = {
            "data": data,
            "starts": np.array([start], np.int64),
            "ends": np.array([end], np.int64),
            "axes": np.array([0], np.int64),
            "steps": np.array([step], np.int64),
        }
        expected = _reference("Slice", inputs, 13)
        actual = slice_value(value, [start], [end], [0], [step])
        assert _concrete(actual) == expected, (start, end, step)


@pytest.mark.parametrize("indices", [0, 3, -1, -4, [0], [3, 0, -1], [1, 1]])
def test_gather_from_a_shape(indices: object) -> None:
    data = np.array(CONCRETE_SHAPE, np.int64)
    index_array = np.array(indices, np.int64)
    expected = _reference("Gather", {"data": data, "indices": index_array}, 13, axis=0)
    index_value = ShapeValue(tuple(index_array.reshape(-1).tolist()), index_array.ndim == 0)
    assert _concrete(gather(shape_of(ENGINE_SHAPE), index_value)) == expected


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_integer_arithmetic(op_type: str) -> None:
    a = np.array([-7, 7, -7, 7, 0, 24], np.int64)
    b = np.array([2, 2, -2, -2, 5, 8], np.int64)
    expected = _reference(op_type, {"a": a, "b": b}, 13)
    actual = arithmetic(op_type, ShapeValue(tuple(a.tolist())), ShapeValue(tuple(b.tolist())))
    assert _concrete(actual) == expected
    scalar = np.array(3, np.int64)
    expected = _reference(op_type, {"a": a, "b": scalar}, 13)
    actual = arithmetic(op_type, ShapeValue(tuple(a.tolist())), ShapeValue((3,), scalar=True))
    assert _concrete(actual) == expected


def test_gather_out_of_range_and_batch_arithmetic_are_errors() -> None:
    with pytest.raises(ValueError, match="out of range"):
        gather(shape_of(ENGINE_SHAPE), ShapeValue((4,), scalar=True))
    with pytest.raises(ValueError, match="batch size"):
        arithmetic("Mul", shape_of(ENGINE_SHAPE, 0, 1), ShapeValue((2,), scalar=True))
    with pytest.raises(ValueError, match="divides by zero"):
        arithmetic("Div", ShapeValue((4,), True), ShapeValue((0,), True))
