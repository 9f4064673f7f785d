"""The operators the importer reads around attention (``gometal.io.onnx.importer.ATTENTION_OPS``:
Cast, Sqrt, Mod, Expand, Trilu, Equal, Where) and Slice of constants against ONNX's backend
node cases, and views (torch's sequence-first layouts) against onnxruntime.

Node cases run twice: as written (input 0 at run time, the others bound as initializers),
and with every input bound, so the operators are evaluated at import (the result then
reaches a float run-time input through Cast and Add). Each case either gives the case's
outputs at its tolerance or is refused with ``OnnxImportError``; never another exception.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gometal.io.onnx import OnnxImportError, load
from gometal.io.onnx.importer import ATTENTION_OPS, SUPPORTED_OPS
from onnx_runtime import run_ort


def _collect() -> dict[str, object]:
    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    known = SUPPORTED_OPS | ATTENTION_OPS
    return {
        case.name: case
        for case in cases
        if case.model is not None
        and any(n.op_type in ATTENTION_OPS | {"Slice"} for n in case.model.graph.node)
        and all(n.op_type in known and n.domain in ("", "ai.onnx") for n in case.model.graph.node)
    }


CASES = _collect()


def _array(value: object) -> np.ndarray | None:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, NotImplementedError):
        return None
    return array if array.dtype.kind in "biuf" else None


def _as_written(case: object, folder: Path) -> tuple[Path, np.ndarray, np.ndarray] | None:
    model = onnx.ModelProto()
    model.CopyFrom(case.model)  # type: ignore[attr-defined]
    inputs, outputs = case.data_sets[0]  # type: ignore[attr-defined]
    arrays = [_array(v) for v in inputs]
    expected = _array(outputs[0])
    if expected is None or any(a is None for a in arrays) or arrays[0].dtype != np.float32:
        return None  # gometal models take one float32 input
    for info, value in list(zip(model.graph.input, arrays))[1:]:
        model.graph.initializer.append(numpy_helper.from_array(value, info.name))
    del model.graph.output[1:]
    path = folder / "as_written.onnx"
    onnx.save(model, os.fspath(path))
    return path, arrays[0], expected


def _folded(case: object, folder: Path) -> tuple[Path, np.ndarray, np.ndarray] | None:
    model = onnx.ModelProto()
    model.CopyFrom(case.model)  # type: ignore[attr-defined]
    inputs, outputs = case.data_sets[0]  # type: ignore[attr-defined]
    arrays = [_array(v) for v in inputs]
    expected = _array(outputs[0])
    if expected is None or any(a is None for a in arrays) or 0 in expected.shape:
        return None
    graph = model.graph
    for info, value in zip(graph.input, arrays):
        graph.initializer.append(numpy_helper.from_array(value, info.name))
    result = graph.output[0].name
    del graph.input[:], graph.output[:]
    shape = [1, *(expected.shape or (1,))]
    graph.node.append(helper.make_node("Cast", [result], ["probe_cast"], to=TensorProto.FLOAT))
    graph.node.append(helper.make_node("Add", ["probe", "probe_cast"], ["probe_out"]))
    graph.input.append(helper.make_tensor_value_info("probe", TensorProto.FLOAT, shape))
    graph.output.append(helper.make_tensor_value_info("probe_out", TensorProto.FLOAT, shape))
    path = folder / "folded.onnx"
    onnx.save(model, os.fspath(path))
    return path, np.zeros(shape, np.float32), expected.astype(np.float32).reshape(shape)


def _outcome(prepared: tuple[Path, np.ndarray, np.ndarray] | None, case: object) -> str:
    if prepared is None:
        return "skipped"
    path, x, expected = prepared
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN inputs are warned about
            model = load(path, dynamic_batch=False)
    except OnnxImportError:
        return "refused"
    actual = model.predict(x, batch_size=len(x))
    np.testing.assert_allclose(actual, expected, rtol=case.rtol, atol=case.atol)  # type: ignore[attr-defined]
    return "supported"


def test_node_cases_match_or_are_refused(tmp_path: Path) -> None:
    supported: Counter[str] = Counter()
    for name, case in sorted(CASES.items()):
        for mode, prepare in (("as_written", _as_written), ("folded", _folded)):
            folder = tmp_path / name / mode
            folder.mkdir(parents=True)
            if _outcome(prepare(case, folder), case) == "supported":
                supported.update(n.op_type for n in case.model.graph.node)  # type: ignore[attr-defined]
    # Each operator is supported in some case (most in many: integer and float folds).
    assert all(supported[op] >= 1 for op in ATTENTION_OPS), supported
    assert supported["Mod"] >= 10 and supported["Trilu"] >= 10, supported
    assert supported["Slice"] >= 8, supported  # of constants, folded


@pytest.mark.parametrize(
    "name",
    ["test_sqrt", "test_flexattention_expanded_ver26", "test_flexattention_gqa_expanded_ver26"],
)
def test_attention_written_as_nodes_imports(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    assert _outcome(_as_written(case, tmp_path), case) == "supported"


def test_an_expand_to_a_huge_shape_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Expand", ["one", "shape"], ["big"], name="huge"),
            helper.make_node("Add", ["x", "big"], ["y"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array([2**20, 2**20], np.int64), "shape"),
        ],
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )
    with pytest.raises(OnnxImportError, match=r"Expand node 'huge'.*\(1048576, 1048576\).*bytes"):
        load(path)


# -- views ----------------------------------------------------------------------------------
def _int64(name: str, values: object) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _layout_graph(tmp_path: Path, nodes: list[object], inits: list[TensorProto]) -> Path:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def test_sequence_first_heads_round_trip(tmp_path: Path) -> None:
    # (n, 6, 4) -> (6, n, 4) -> (6, n*2, 2) -> (n*2, 6, 2) -> (n, 2, 6, 2) -> scores
    # (n, 2, 6, 6) against the heads themselves -> softmax -> (n, 2, 6, 2) -> (n, 6, 4).
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    path = _layout_graph(
        tmp_path,
        [
            helper.make_node("Transpose", ["x"], ["t"], name="seq_first", perm=[1, 0, 2]),
            helper.make_node("Shape", ["t"], ["s"], name="shape"),
            helper.make_node("Gather", ["s", "i1"], ["batch"], name="batch"),
            helper.make_node("Mul", ["batch", "two"], ["heads"], name="heads"),
            helper.make_node("Unsqueeze", ["heads", "axis0"], ["heads1"], name="heads1"),
            helper.make_node("Concat", ["six", "heads1", "two1"], ["split"], name="cat", axis=0),
            helper.make_node("Reshape", ["t", "split"], ["h"], name="split_heads"),
            helper.make_node("Transpose", ["h"], ["hf"], name="heads_first", perm=[1, 0, 2]),
            helper.make_node("Reshape", ["hf", "nh"], ["q"], name="four_d"),
            helper.make_node("Transpose", ["q"], ["kt"], name="keys", perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
            helper.make_node("Softmax", ["scores"], ["p"], name="p", axis=-1),
            helper.make_node("MatMul", ["p", "q"], ["o"], name="attend"),
            helper.make_node("Transpose", ["o"], ["o2"], name="back", perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", ["o2", "merge"], ["m"], name="merge"),
            helper.make_node("MatMul", ["m", "w"], ["y"], name="proj"),
        ],
        [_int64("i1", 1), _int64("two", 2), _int64("axis0", [0]), _int64("six", [6]),
         _int64("two1", [2]), _int64("nh", [-1, 2, 6, 2]), _int64("merge", [0, 6, 4]),
         numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = load(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 6, 4)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), run_ort(path, x), rtol=1e-5, atol=1e-6)


def test_a_graph_that_ends_sequence_first_names_its_transpose(tmp_path: Path) -> None:
    path = _layout_graph(
        tmp_path,
        [helper.make_node("Transpose", ["x"], ["y"], name="seq_first", perm=[1, 0, 2])],
        [],
    )
    with pytest.raises(OnnxImportError, match="Transpose node 'seq_first'.*batch"):
        load(path)


def test_a_reshape_that_mixes_the_batch_into_a_sequence_is_refused(tmp_path: Path) -> None:
    # (6, n, 4) -> (4, -1): 4 would take part of the axis of 6 and leave the rest with
    # the batch, which no engine axis can hold.
    path = _layout_graph(
        tmp_path,
        [
            helper.make_node("Transpose", ["x"], ["t"], name="seq_first", perm=[1, 0, 2]),
            helper.make_node("Reshape", ["t", "target"], ["y"], name="mix"),
        ],
        [_int64("target", [4, -1])],
    )
    with pytest.raises(
        OnnxImportError, match=r"Reshape node 'mix': cannot reshape \[6, batch, 4\]"
    ):
        load(path)


# -- the view algebra against NumPy -----------------------------------------------------------
def _in_onnx_order(physical: np.ndarray, groups: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """What a view stands for: its axes moved into ONNX order, each group merged."""
    order = [axis for group in groups for axis in group]
    dims = [int(np.prod([physical.shape[a] for a in group])) for group in groups]
    return physical.transpose(order).reshape(dims)


def _random_view(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    order = [int(a) for a in rng.permutation(len(shape))]
    cuts = sorted(int(c) for c in rng.choice(range(1, len(shape)), rng.integers(0, 3), False))
    return tuple(tuple(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(shape)]))


def _expressible_target(rng: np.random.Generator, sizes: list[int]) -> list[int]:
    """Each size split into factors, then adjacent pieces merged: a reshape a view can
    always take (it never needs part of one axis merged with part of another)."""
    pieces: list[int] = []
    for size in sizes:
        divisors = [d for d in range(2, size) if size % d == 0]
        if divisors and rng.random() < 0.5:
            first = int(rng.choice(divisors))
            pieces += [first, size // first]
        else:
            pieces.append(size)
    target, run = [], 1
    for piece in pieces:
        run *= piece
        if rng.random() < 0.5:
            target.append(run)
            run = 1
    return [*target, run] if run != 1 or not target else target


@pytest.mark.parametrize("seed", range(25))
def test_view_reshapes_match_numpy(seed: int) -> None:
    from gometal.io.onnx._views import plan_reshape

    rng = np.random.default_rng(seed)
    shape = (2, 3, 4, 6)
    physical = np.arange(np.prod(shape)).reshape(shape)
    groups = _random_view(rng, shape)
    sizes = [shape[axis] for group in groups for axis in group]
    target = _expressible_target(rng, sizes)
    new_shape, new_groups = plan_reshape(shape, groups, target)
    expected = _in_onnx_order(physical, groups).reshape(target)
    # The plan only splits physical axes in place: a reshape of the engine tensor.
    np.testing.assert_array_equal(_in_onnx_order(physical.reshape(new_shape), new_groups), expected)


def test_run_time_sizes_in_reshape_targets() -> None:
    from gometal.io.onnx._shape_values import BATCH_SIZE, size_entry
    from gometal.io.onnx._views import plan_reshape, resolve_target
    from gometal.nn.tensor import BATCH, SEQ

    seq = size_entry(1, [SEQ])
    # (seq, batch, 32) viewed from a batch-first (batch, seq, 32) tensor.
    shape, groups = (BATCH, SEQ, 32), ((1,), (0,), (2,))
    target = resolve_target([seq, BATCH_SIZE, 32], [0, size_entry(4, [BATCH]), -1], False)
    assert target == [seq, size_entry(4, [BATCH]), 8]
    assert plan_reshape(shape, groups, target) == ([BATCH, SEQ, 4, 8], ((1,), (0, 2), (3,)))
    merged = resolve_target([seq, BATCH_SIZE, 32], [-1, 32], False)
    assert merged == [size_entry(1, [SEQ, BATCH]), 32]
    with pytest.raises(ValueError, match="needs part of an axis"):
        plan_reshape(shape, groups, [4, size_entry(1, [SEQ, BATCH]), 8])


def test_views_keep_a_bounded_rank(tmp_path: Path) -> None:
    axes = list(range(1, 41))
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["x", "axes"], ["u"], name="first"),
            helper.make_node("Unsqueeze", ["u", "axes"], ["y"], name="second"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_int64("axes", axes)],
    )
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxImportError, match="Unsqueeze node 'second'.*rank 82, more than 64"):
        load(path)
