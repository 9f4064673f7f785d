"""Hostile and malformed ONNX files: memory bounded from the attributes, import time
linear in the node count, the batch axis kept first, ``OnnxImportError`` as the only
error, and NaN attributes and weights.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gometal as gm
from fuzz_onnx_worker import run_cases
from gometal import _core
from gometal.io.onnx import _safety
from gometal.io.onnx.importer import OnnxImportError, load
from gometal.nn.layers.base import EmitContext
from onnx_runtime import run_ort

TOLERANCE = 1e-4


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path.write_bytes(model.SerializeToString())
    return path


def _graph(
    nodes: list[Any], x_shape: list[Any], y_shape: list[Any] | None, weights: list[Any] = ()
) -> onnx.GraphProto:  # fmt: skip
    return helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        list(weights),
    )  # fmt: skip


def _array(name: str, value: Any) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


# -- memory: sizes from the attributes, refused before anything is allocated --------------
def _padded_bytes(channels: int, size: int, before: int, after: int) -> int:
    # ONNX pads each spatial axis by `before` and `after`; the result is float32.
    return 4 * channels * (size + before + after) ** 2


HUGE = 2**31
HOSTILE_PADDING = {
    # The three files of the issue (164, 137 and 144 bytes).
    "maxpool_2_pow_31": (
        helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[HUGE, HUGE],
                         pads=[HUGE] * 4, strides=[HUGE, HUGE]),
        [],
        _padded_bytes(1, 4, HUGE, HUGE),
    ),
    "conv_pads_8192": (
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[8192] * 4),
        [_array("w", np.ones((1, 1, 3, 3)))],
        _padded_bytes(1, 4, 8192, 8192),
    ),
    "averagepool_pads_16384": (
        helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3],
                         pads=[16384] * 4),
        [],
        # The padded input and a count map of the same plane.
        2 * _padded_bytes(1, 4, 16384, 16384),
    ),
}  # fmt: skip


def test_padding_that_needs_gigabytes_is_refused_under_a_memory_limit(tmp_path: Path) -> None:
    for name, (node, weights, _) in HOSTILE_PADDING.items():
        _save(_graph([node], ["n", 1, 4, 4], None, weights), tmp_path / f"{name}.onnx")
    # Each file is imported in a worker process limited in address space; before the
    # attributes were checked, these used 24, 2.1 and 4.1 GB.
    results = run_cases(tmp_path, gm.onnx.MAX_SAMPLE_BYTES)
    for name, (node, _, size) in HOSTILE_PADDING.items():
        record = results[f"{name}.onnx"]
        assert record["outcome"] == "refused", record
        for fragment in (f"{node.op_type} node {node.name!r}", str(size)):
            assert fragment in record["detail"]
        assert str(gm.onnx.MAX_SAMPLE_BYTES) in record["detail"]


def _engine_workspace_bytes(model: gm.Model, samples: int) -> int:
    """What the engine allocates to run ``model`` on ``samples`` samples (one thread)."""
    graph = _core.Graph()
    x = graph.input("x", (-1, *model.input_shape), "float32")
    ctx = EmitContext(graph, training=False, variables=model.declare_variables(graph))
    (output,) = model.emit(ctx, [x])
    engine = _core.Engine(graph)
    engine.define("predict", inputs=[x], outputs=[output])
    engine.run("predict", [np.ones((samples, *model.input_shape), np.float32)])
    return int(engine.stats()["arena_bytes"])


def _wide_cnn(path: Path) -> Path:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[2, 0, 5, 3]),
        helper.make_node("AveragePool", ["c"], ["a"], name="avg", kernel_shape=[3, 3],
                         pads=[1, 2, 1, 2], count_include_pad=1, ceil_mode=1, strides=[2, 2]),
        helper.make_node("MaxPool", ["a"], ["m"], name="max", kernel_shape=[2, 2],
                         pads=[0, 0, 1, 1]),
        helper.make_node("Transpose", ["m"], ["t"], name="swap", perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["t", "proj"], ["p"], name="proj"),
        helper.make_node("Softmax", ["p"], ["y"], name="softmax", axis=-1),
    ]  # fmt: skip
    weights = [
        _array("w", rng.standard_normal((16, 3, 3, 3))),
        _array("proj", rng.standard_normal((16, 5))),
    ]
    return _save(_graph(nodes, ["n", 3, 30, 30], ["n", None, None, 5], weights), path)


def test_the_sample_cap_covers_what_the_engine_allocates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _wide_cnn(tmp_path / "cnn.onnx")
    model = load(path)
    x = np.random.default_rng(1).standard_normal((3, 3, 30, 30)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), rtol=TOLERANCE, atol=1e-5)
    threads = gm.get_num_threads()
    gm.set_num_threads(1)  # convolution scratch is per thread
    try:
        needed = _engine_workspace_bytes(model, samples=1)
    finally:
        gm.set_num_threads(threads)
    # With a cap just under what one sample really takes, the import must refuse.
    monkeypatch.setattr(_safety, "MAX_SAMPLE_BYTES", needed - 1)
    with pytest.raises(OnnxImportError, match=f"more than the {needed - 1} bytes per sample"):
        load(path)


def test_padding_does_not_grow_the_engine_graph() -> None:
    from gometal.io.onnx._layers import pad_nchw

    sizes = []
    for pad in (1, 1000):
        graph = _core.Graph()
        x = graph.input("x", (-1, 2, 5, 5), "float32")
        out = pad_nchw(graph, x, (pad, pad, pad, pad), 0.0)
        assert graph.shape(out) == (-1, 2, 5 + 2 * pad, 5 + 2 * pad)
        # Nodes and their inputs: one concat input per padded row would grow with `pad`.
        sizes.append((len(graph), sum(len(graph.inputs_of(i)) for i in range(len(graph)))))
    assert sizes[0] == sizes[1]


def test_large_uneven_padding_matches_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[40, 3, 5, 60])]
    weights = [_array("w", rng.standard_normal((2, 3, 3, 3)))]
    path = _save(_graph(nodes, ["n", 3, 6, 6], None, weights), tmp_path / "conv.onnx")
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(load(path).predict(x), run_ort(path, x), rtol=TOLERANCE, atol=1e-5)


# -- time: linear in the number of nodes ---------------------------------------------------
def _relu_chain(count: int, path: Path, names: dict[int, str] | None = None) -> Path:
    nodes = [
        helper.make_node(
            "Relu", ["x" if i == 0 else f"t{i}"], ["y" if i == count - 1 else f"t{i + 1}"],
            name=(names or {}).get(i, ""),
        )
        for i in range(count)
    ]  # fmt: skip
    return _save(_graph(nodes, ["n", 4], ["n", 4]), path)


def _load_seconds(path: Path) -> float:
    best = float("inf")
    for _ in range(2):  # the faster of two runs: the machine may be busy
        start = time.perf_counter()
        load(path)
        best = min(best, time.perf_counter() - start)
    return best


def test_import_time_grows_linearly_with_unnamed_nodes(tmp_path: Path) -> None:
    small = _load_seconds(_relu_chain(4000, tmp_path / "small.onnx"))
    large_path = _relu_chain(16000, tmp_path / "large.onnx")
    large = _load_seconds(large_path)
    # Four times the nodes: about 4x when linear, 16x when quadratic (58 s before).
    assert large < 6 * small + 0.5, (small, large)
    assert large < 10.0, large
    x = np.array([[-1.0, 0.0, 2.0, -3.5]], np.float32)
    np.testing.assert_array_equal(load(large_path).predict(x), np.maximum(x, 0))


def test_unnamed_nodes_get_the_first_free_suffix(tmp_path: Path) -> None:
    model = load(_relu_chain(5, tmp_path / "m.onnx", names={1: "Relu_2", 3: "Relu"}))
    assert [layer.name for layer in model.layers] == [
        "Relu",
        "Relu_2",
        "Relu_1",
        "Relu_3",
        "Relu_4",
    ]


# -- the batch stays on dimension 0 --------------------------------------------------------
def test_matmul_with_a_3d_constant_is_refused_with_a_dynamic_batch(tmp_path: Path) -> None:
    weights = [_array("w", np.random.default_rng(3).standard_normal((3, 4, 5)))]
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    dynamic = _save(_graph([node], ["n", 4], None, weights), tmp_path / "dynamic.onnx")
    with pytest.raises(OnnxImportError, match=r"MatMul node 'mm'.*batch on dimension 1"):
        load(dynamic)
    # With the batch fixed by the file and kept, the product is what onnxruntime computes.
    fixed = _save(_graph([node], [2, 4], None, weights), tmp_path / "fixed.onnx")
    with pytest.raises(OnnxImportError, match="dynamic_batch=False"):
        load(fixed)
    x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    expected = run_ort(fixed, x)
    assert expected.shape == (3, 2, 5)
    got = load(fixed, dynamic_batch=False).predict(x)
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=1e-6)


def test_broadcasts_that_move_the_batch_and_outputs_without_it_are_refused(
    tmp_path: Path,
) -> None:
    add = helper.make_node("Add", ["x", "c"], ["y"], name="plus")
    path = _save(_graph([add], ["n", 4], None, [_array("c", np.ones((2, 1, 4)))]), tmp_path / "a")
    with pytest.raises(OnnxImportError, match=r"Add node 'plus'.*batch on dimension 1"):
        load(path)
    constant = helper.make_node("Identity", ["c"], ["y"], name="same")
    path = _save(_graph([constant], ["n", 4], [3], [_array("c", np.ones(3))]), tmp_path / "c")
    with pytest.raises(OnnxImportError, match=r"output 'y' has shape \(3,\), without the"):
        load(path)


def test_a_batched_matmul_predicts_across_chunks_as_onnxruntime(tmp_path: Path) -> None:
    weights = [_array("w", np.random.default_rng(5).standard_normal((4, 5)))]
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    path = _save(_graph([node], ["n", 3, 4], None, weights), tmp_path / "m.onnx")
    x = np.random.default_rng(6).standard_normal((1500, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(load(path).predict(x), run_ort(path, x), rtol=TOLERANCE, atol=1e-5)


# -- malformed graphs: OnnxImportError only -------------------------------------------------
W4 = [_array("w", np.ones((4, 4)))]
W_CONV = [_array("w", np.ones((1, 1, 2, 2)))]
MALFORMED = {
    "add_one_input": (helper.make_node("Add", ["x"], ["y"], name="a"), [], "Add node 'a'.*2 inputs"),
    "gemm_one_input": (helper.make_node("Gemm", ["x"], ["y"], name="g"), W4, "Gemm node 'g'.*2 in"),
    "conv_one_input": (
        helper.make_node("Conv", ["x"], ["y"], name="c"), W_CONV, "Conv node 'c'.*2 inputs"
    ),
    "relu_no_output": (helper.make_node("Relu", ["x"], [], name="r"), [], "Relu node 'r'.*output"),
    "maxpool_strides_0": (
        helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2], strides=[0, 0]),
        [], r"MaxPool node 'p': strides must be 2 positive ints, got \[0, 0\]",
    ),
    "averagepool_kernel_0": (
        helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[0, 2]),
        [], r"kernel_shape must be 2 positive ints, got \[0, 2\]",
    ),
    "conv_dilations_negative": (
        helper.make_node("Conv", ["x", "w"], ["y"], name="c", dilations=[1, -2]),
        W_CONV, r"Conv node 'c': dilations must be 2 positive ints, got \[1, -2\]",
    ),
    "conv_kernel_shape_differs": (
        helper.make_node("Conv", ["x", "w"], ["y"], name="c", kernel_shape=[HUGE, HUGE]),
        W_CONV, r"kernel_shape \[2147483648, 2147483648\] differs from the weight's",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_nodes_raise_onnx_import_error(case: str, tmp_path: Path) -> None:
    node, weights, message = MALFORMED[case]
    shape = ["n", 4] if node.op_type in ("Add", "Gemm", "Relu") else ["n", 1, 4, 4]
    path = _save(_graph([node], shape, None, weights), tmp_path / "m.onnx")
    with pytest.raises(OnnxImportError, match=message):
        load(path)


def _external_model(location: str) -> bytes:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    graph = _graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], ["n", 4], None)
    graph.initializer.append(tensor)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.mark.parametrize("field", ["external data location", "node name"])
def test_text_that_is_not_utf8_is_refused(field: str, tmp_path: Path) -> None:
    data = _external_model("QQQQ")
    if field == "node name":
        data = data.replace(b"\x1a\x02mm", b"\x1a\x02\xff\xfe")  # NodeProto.name (field 3)
        expected = r"graph\.node\[0\]\.name holds b'\\xff\\xfe'"
    else:
        data = data.replace(b"QQQQ", b"\xc3\x28ab")  # an invalid two-byte sequence
        expected = r"graph\.initializer\[0\]\.external_data\[0\]\.value holds b'\\xc3\(ab'"
    (tmp_path / "m.onnx").write_bytes(data)
    with pytest.raises(OnnxImportError, match=f"{expected}, which is not valid UTF-8"):
        load(tmp_path / "m.onnx")


# -- NaN and infinite values -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("op_type", "attribute", "value"),
    [("LeakyRelu", "alpha", float("nan")), ("Elu", "alpha", float("inf")),
     ("Gemm", "beta", float("nan"))],
)  # fmt: skip
def test_non_finite_attributes_are_refused_by_name(
    op_type: str, attribute: str, value: float, tmp_path: Path
) -> None:
    inputs = ["x", "w", "b"] if op_type == "Gemm" else ["x"]
    node = helper.make_node(op_type, inputs, ["y"], name="n1", **{attribute: value})
    weights = [*W4, _array("b", np.zeros(4))] if op_type == "Gemm" else []
    path = _save(_graph([node], ["n", 4], None, weights), tmp_path / "m.onnx")
    with pytest.raises(OnnxImportError, match=f"{op_type} node 'n1': attribute {attribute} is"):
        load(path)


def test_an_infinite_clip_bound_is_an_open_side(tmp_path: Path) -> None:
    node = helper.make_node("Clip", ["x"], ["y"], name="clip", min=-1.0, max=float("inf"))
    path = _save(_graph([node], ["n", 4], None), tmp_path / "m.onnx", opset=6)
    x = np.array([[-3.0, -0.5, 2.0, 1e30]], np.float32)
    np.testing.assert_array_equal(load(path).predict(x), run_ort(path, x))


def test_nan_weights_and_constants_warn_by_name(tmp_path: Path) -> None:
    weight = np.ones((4, 4), np.float32)
    weight[1, 2] = weight[3, 0] = np.nan
    shift = helper.make_tensor("shift_value", TensorProto.FLOAT, [4], [0.0, np.nan, 0.0, 0.0])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Constant", [], ["shift"], name="const", value=shift),
        helper.make_node("Add", ["h", "shift"], ["y"], name="add"),
    ]
    path = _save(_graph(nodes, ["n", 4], None, [_array("w", weight)]), tmp_path / "m.onnx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("initializer" in m and "'w' (2 of 16)" in m for m in messages), messages
    assert any("Constant" in m and "'shift' (1 of 4)" in m for m in messages), messages
    x = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(model.predict(x), run_ort(path, x))
