"""ONNX backend node tests of RNN, GRU and LSTM (the cases the onnx wheel generates).

As in ``test_onnx_node_cases``, inputs past X (W, R, B) are bound as initializers. A
gometal model keeps the batch on axis 0, so a time-major case (``layout`` 0, X of shape
(T, N, I)) takes X batch-first through a ``Transpose`` put in front of the node, as
torch's exporters write it, and every output (Y, Y_h, Y_c) is compared with the case's
once its batch axis is moved back. Cases gometal's layers cannot compute are listed in
``EXPECTED_UNSUPPORTED`` with the reason the importer gives, and checked to be refused so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from gometal.io.onnx.importer import RECURRENT_OPS, OnnxImportError, load

_LBR = "linear_before_reset=0 is not supported"
_REVERSE = "direction='reverse' is not supported"

EXPECTED_UNSUPPORTED = {
    **{f"test_gru_{suffix}": _LBR for suffix in (
        "defaults", "with_initial_bias", "seq_length", "batchwise", "reverse", "bidirectional",
    )},
    "test_lstm_reverse": _REVERSE,
    "test_simple_rnn_reverse": _REVERSE,
    "test_lstm_with_peepholes": "peepholes P ('P') are not supported",
}  # fmt: skip


def _collect() -> dict[str, object]:
    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    return {
        case.name: case
        for case in cases
        if case.model is not None and any(n.op_type in RECURRENT_OPS for n in case.model.graph.node)
    }


CASES = _collect()


def _layout(model: onnx.ModelProto) -> int:
    node = model.graph.node[0]
    return next((int(a.i) for a in node.attribute if a.name == "layout"), 0)


def _prepare(case: object, folder: Path) -> tuple[Path, np.ndarray, list[np.ndarray], int]:
    """The case's model with W, R, B bound and X batch-first; (file, x, outputs, layout)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)  # type: ignore[attr-defined]
    inputs, outputs = case.data_sets[0]  # type: ignore[attr-defined]
    graph = model.graph
    for info, value in list(zip(graph.input, inputs))[1:]:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), info.name))
    x, layout = np.asarray(inputs[0]), _layout(model)
    if layout == 0:
        x = x.transpose(1, 0, 2)
        x_name = graph.input[0].name
        graph.node.insert(
            0, helper.make_node("Transpose", ["x_batch_first"], [x_name], perm=[1, 0, 2])
        )
        batch_first = helper.make_tensor_value_info(
            "x_batch_first", onnx.TensorProto.FLOAT, x.shape
        )
        graph.input[0].CopyFrom(batch_first)
    del graph.input[1:]
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    onnx.save(model, os.fspath(path))
    return path, x, [np.asarray(o) for o in outputs], layout


def _batch_first(expected: np.ndarray, layout: int) -> np.ndarray:
    """A case output with its batch axis first, as the imported model gives it."""
    if layout == 1:
        return expected
    # Y is (T, D, N, H), Y_h and Y_c (D, N, H).
    return expected.transpose(2, 0, 1, 3) if expected.ndim == 4 else expected.transpose(1, 0, 2)


def test_expected_unsupported_names_exist() -> None:
    stale = sorted(set(EXPECTED_UNSUPPORTED) - set(CASES))
    assert not stale, f"EXPECTED_UNSUPPORTED names cases onnx no longer has: {stale}"
    assert len(CASES) - len(EXPECTED_UNSUPPORTED) >= 9


@pytest.mark.parametrize("name", sorted(set(CASES) - set(EXPECTED_UNSUPPORTED)))
def test_node_case(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path, x, expected, layout = _prepare(case, tmp_path / name)
    got = load(path).predict(x)
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(
            ours, _batch_first(theirs, layout),
            rtol=case.rtol, atol=case.atol,  # type: ignore[attr-defined]
        )  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED_UNSUPPORTED))
def test_unsupported_node_case_is_refused_with_its_reason(name: str, tmp_path: Path) -> None:
    path, _, _, _ = _prepare(CASES[name], tmp_path / name)
    with pytest.raises(OnnxImportError) as info:
        load(path)
    assert EXPECTED_UNSUPPORTED[name] in str(info.value)
