"""ONNX files whose batch dimension is fixed, and the shape arithmetic exporters write.

``torch.onnx.export`` without ``dynamic_axes`` fixes dimension 0 of the input at the
example's batch and writes that number into Reshape targets; with ``dynamic_axes`` it
computes ``x.view(x.size(0), -1)`` at run time (Shape, Gather, Unsqueeze, Concat). Both
must import as a dynamic batch and match torch at any batch size (and onnxruntime at the
batch the file allows). A graph that really depends on its fixed batch is refused at load
with what to do; ``ReduceMean`` is checked against onnxruntime in all its forms.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import gometal as gm
from gometal.onnx import OnnxImportError, load
from onnx_runtime import run_ort

TOLERANCE = 1e-4
EXPORT_BATCH = 2
OTHER_BATCHES = (1, 5)
INT64_MAX = np.iinfo(np.int64).max


# -- torch models --------------------------------------------------------------------------
class ViewMLP(nn.Module):
    """An MLP over images, flattened with ``x.view(x.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3 * 4 * 4, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


class FlattenCNN(nn.Module):
    """Conv, max-pool and ``nn.Flatten`` (ONNX ``Flatten``) before a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6 * 2 * 2, 5)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(torch.max_pool2d(torch.relu(self.conv(x)), 2)))


class MeanCNN(nn.Module):
    """Global average pooling written as ``x.mean(dim=(2, 3))`` (ONNX ``ReduceMean``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class ChannelPoolCNN(nn.Module):
    """``x.flatten(2).mean(-1)``: torch writes Shape and Slice even for a fixed batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(2).mean(-1))


class SpatialViewCNN(nn.Module):
    """``x.view(x.size(0), x.size(1), -1)``: the channel count is gathered from the shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), h.size(1), -1).mean(dim=2))


class UnsqueezeHead(nn.Module):
    """Unsqueeze and Squeeze of data around an activation, before a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(x.view(x.size(0), -1).unsqueeze(1)).squeeze(1))


TORCH_MODELS = {
    "view_mlp": ViewMLP,
    "flatten_cnn": FlattenCNN,
    "mean_cnn": MeanCNN,
    "channel_pool_cnn": ChannelPoolCNN,
    "spatial_view_cnn": SpatialViewCNN,
    "unsqueeze_head": UnsqueezeHead,
}
SAMPLE = (3, 4, 4)

# How the file is exported: a fixed batch with constants folded or not (torch's default
# folds), or the batch dynamic through dynamic_axes.
EXPORTS = {
    "fixed_folded": {"do_constant_folding": True},
    "fixed_unfolded": {"do_constant_folding": False},
    "dynamic_axes": {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}},
}


def export_torch(module: nn.Module, path: Path, opset: int, **options: object) -> Path:
    module.eval()
    example = torch.randn(EXPORT_BATCH, *SAMPLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), os.fspath(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["output"], **options,
        )  # fmt: skip
    return path


def _torch_predict(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


# Every model under every export, but nn.Flatten with dynamic_axes (Flatten of a dynamic
# batch, which test_onnx_import covers). opset 17 passes ReduceMean's axes as an
# attribute, opset 20 as an input.
TORCH_CASES = [
    (name, export, opset)
    for name in sorted(TORCH_MODELS)
    for export in sorted(EXPORTS)
    for opset in (17, 20)
    if (name, export) != ("flatten_cnn", "dynamic_axes")
]


@pytest.mark.parametrize(("name", "export", "opset"), TORCH_CASES)
def test_torch_export_predicts_at_any_batch(
    name: str, export: str, opset: int, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = TORCH_MODELS[name]()
    path = export_torch(module, tmp_path / "m.onnx", opset, **EXPORTS[export])
    model = load(path)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((EXPORT_BATCH, *SAMPLE)).astype(np.float32)
    actual = model.predict(x)
    np.testing.assert_allclose(actual, _torch_predict(module, x), rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(actual, run_ort(path, x), rtol=TOLERANCE, atol=TOLERANCE)
    for batch in OTHER_BATCHES:
        x = rng.standard_normal((batch, *SAMPLE)).astype(np.float32)
        expected = _torch_predict(module, x)
        np.testing.assert_allclose(model.predict(x), expected, rtol=TOLERANCE, atol=TOLERANCE)
        if export == "dynamic_axes":
            np.testing.assert_allclose(run_ort(path, x), expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_fixed_batch_export_trains_on_another_batch_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = export_torch(ViewMLP(), tmp_path / "m.onnx", 17)  # batch fixed at 2
    model = load(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *SAMPLE)).astype(np.float32)
    y = rng.integers(0, 4, size=8).astype(np.int32)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2), batch_size=8
    )
    losses = [trainer.train_batch(x, y).loss for _ in range(10)]
    assert losses[-1] < losses[0]


def _save(graph: object, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])  # type: ignore[arg-type]
    path.write_bytes(model.SerializeToString())
    return path


def _int64(name: str, values: object) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def test_dynamo_style_fixed_batch_graph(tmp_path: Path) -> None:
    # As torch 2.13's default (dynamo) exporter writes x.view(x.size(0), -1) after a
    # spatial mean for a fixed batch of 2: Reshape with allowzero=1 and ReduceMean's axes
    # as an initializer.
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((2, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "ReduceMean", ["input", "val_2"], ["mean"], name="node_mean", keepdims=1,
                noop_with_empty_axes=0,
            ),
            helper.make_node("Reshape", ["mean", "val_6"], ["view"], name="node_view", allowzero=1),
            helper.make_node("Gemm", ["view", "fc.weight"], ["linear"], name="node_linear", transB=1),
        ],
        "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [EXPORT_BATCH, *SAMPLE])],
        [helper.make_tensor_value_info("linear", TensorProto.FLOAT, [EXPORT_BATCH, 2])],
        [_int64("val_2", [-1, -2]), _int64("val_6", [EXPORT_BATCH, -1]),
         numpy_helper.from_array(weight, "fc.weight")],
    )  # fmt: skip
    path = _save(graph, tmp_path / "m.onnx", opset=18)
    model = load(path)
    x = rng.standard_normal((EXPORT_BATCH, *SAMPLE)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), rtol=TOLERANCE, atol=1e-6)
    x = rng.standard_normal((7, *SAMPLE)).astype(np.float32)
    expected = x.mean(axis=(2, 3)) @ weight.T
    np.testing.assert_allclose(model.predict(x), expected, rtol=TOLERANCE, atol=1e-6)


# -- a batch that cannot be made dynamic ---------------------------------------------------
class BatchCentering(nn.Module):
    """Subtracts the mean over the batch: each output depends on the whole batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) - x.flatten(1).mean(dim=0, keepdim=True)


class BatchMerge(nn.Module):
    """Folds the batch into one long vector."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(EXPORT_BATCH * 48, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(1, -1))


@pytest.mark.parametrize("factory", [BatchCentering, BatchMerge], ids=["centering", "merge"])
def test_a_batch_that_cannot_be_dynamic_is_refused_at_load(
    factory: type[nn.Module], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = factory()
    path = export_torch(module, tmp_path / "m.onnx", 17)
    with pytest.raises(OnnxImportError) as info:
        load(path)
    message = str(info.value)
    for fragment in (
        "input 'input'", f"fixed batch size of {EXPORT_BATCH}", "dynamic_axes",
        "dynamic_shapes", "dynamic_batch=False",
    ):  # fmt: skip
        assert fragment in message, message
    with pytest.raises(OnnxImportError, match=f"fixed batch size of {EXPORT_BATCH}"):
        load(path, dynamic_batch=True)
    # What the message offers: the file as it is, at its batch only.
    fixed = load(path, dynamic_batch=False)
    x = np.random.default_rng(0).standard_normal((EXPORT_BATCH, *SAMPLE)).astype(np.float32)
    np.testing.assert_allclose(
        fixed.predict(x), _torch_predict(module, x), rtol=TOLERANCE, atol=TOLERANCE
    )
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\)"):
        fixed.predict(np.zeros((3, *SAMPLE), np.float32))


def test_a_file_broken_for_another_reason_names_that_reason(tmp_path: Path) -> None:
    # Gather on data fails with the batch fixed too, so the batch is not blamed.
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "idx"], ["y"], name="pick", axis=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [EXPORT_BATCH, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [EXPORT_BATCH, 2])],
        [_int64("idx", [0, 2])],
    )
    with pytest.raises(OnnxImportError) as info:
        load(_save(graph, tmp_path / "m.onnx"))
    assert "Gather node 'pick'" in str(info.value)
    assert "fixed batch" not in str(info.value)


# -- shape arithmetic written by hand --------------------------------------------------------
def _shape_graph(nodes: list[object], inits: list[TensorProto], out: list[object]) -> object:
    return helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        inits,
    )


def test_shape_slice_and_negative_gather_feed_reshape(tmp_path: Path) -> None:
    # x.view(*x.shape[:-2], -1) with shape[:-2] written as Slice(0, -2) and, separately,
    # the last size as Gather(-1) of a Shape with start=1 (opset 15).
    graph = _shape_graph(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Slice", ["s", "zero", "minus2", "axis0"], ["head"], name="head"),
            helper.make_node("Shape", ["x"], ["tail"], name="tail_shape", start=1),
            helper.make_node("Gather", ["tail", "minus1"], ["last"], name="last", axis=0),
            helper.make_node("Unsqueeze", ["last", "axis0"], ["last1"], name="last1"),
            helper.make_node("Concat", ["head", "minus1_1d", "last1"], ["t"], name="cat", axis=0),
            helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape"),
        ],
        [_int64("zero", [0]), _int64("minus2", [-2]), _int64("axis0", [0]),
         _int64("minus1", -1), _int64("minus1_1d", [-1])],
        ["n", 2, 3, 4],
    )  # fmt: skip
    path = _save(graph, tmp_path / "m.onnx", opset=15)
    model = load(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 3, 4)).astype(np.float32)
        np.testing.assert_array_equal(model.predict(x), run_ort(path, x))


def test_slice_to_the_end_of_a_shape(tmp_path: Path) -> None:
    # x.shape[1:] as torch writes it: ends = INT64_MAX, then (batch, C*H*W) via Mul.
    graph = _shape_graph(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Slice", ["s", "one", "end", "axis0", "step"], ["rest"], name="rest"),
            helper.make_node("Gather", ["rest", "i0"], ["c"], name="c", axis=0),
            helper.make_node("Gather", ["rest", "i1"], ["h"], name="h", axis=0),
            helper.make_node("Gather", ["rest", "i2"], ["w"], name="w", axis=0),
            helper.make_node("Mul", ["c", "h"], ["ch"], name="ch"),
            helper.make_node("Mul", ["ch", "w"], ["chw"], name="chw"),
            helper.make_node("Gather", ["s", "i0"], ["b"], name="b", axis=0),
            helper.make_node("Unsqueeze", ["b", "axis0"], ["b1"], name="b1"),
            helper.make_node("Unsqueeze", ["chw", "axis0"], ["chw1"], name="chw1"),
            helper.make_node("Concat", ["b1", "chw1"], ["t"], name="cat", axis=0),
            helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape"),
        ],
        [_int64("one", [1]), _int64("end", [INT64_MAX]), _int64("axis0", [0]),
         _int64("step", [1]), _int64("i0", 0), _int64("i1", 1), _int64("i2", 2)],
        ["n", 24],
    )  # fmt: skip
    path = _save(graph, tmp_path / "m.onnx", opset=13)
    model = load(path)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), run_ort(path, x))


def _batch_times_two(tmp_path: Path) -> Path:
    graph = _shape_graph(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Gather", ["s", "i0"], ["b"], name="batch"),
            helper.make_node("Mul", ["b", "two"], ["b2"], name="double_batch"),
            helper.make_node("Unsqueeze", ["b2", "axis0"], ["b21"], name="b21"),
            helper.make_node("Concat", ["b21", "minus1"], ["t"], name="cat", axis=0),
            helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape"),
        ],
        [_int64("i0", 0), _int64("two", 2), _int64("axis0", [0]), _int64("minus1", [-1])],
        [None, 12],
    )
    return _save(graph, tmp_path / "m.onnx", opset=13)


def test_unresolvable_shape_arithmetic_names_its_node(tmp_path: Path) -> None:
    with pytest.raises(OnnxImportError, match="Mul node 'double_batch'.*batch"):
        load(_batch_times_two(tmp_path))


def test_batch_size_placed_after_dimension_0_is_refused(tmp_path: Path) -> None:
    graph = _shape_graph(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Gather", ["s", "i03"], ["t"], name="swap"),
            helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape"),
        ],
        [_int64("i03", [3, 0, 1, 2])],
        [4, "n", 2, 3],
    )
    with pytest.raises(OnnxImportError, match="Reshape node 'reshape'.*batch"):
        load(_save(graph, tmp_path / "m.onnx", opset=13))


def test_data_operations_on_gather_and_slice_are_clear_errors(tmp_path: Path) -> None:
    graph = _shape_graph(
        [helper.make_node("Slice", ["x", "zero", "one", "axis1"], ["y"], name="cut")],
        [_int64("zero", [0]), _int64("one", [1]), _int64("axis1", [1])],
        ["n", 1, 3, 4],
    )
    with pytest.raises(OnnxImportError, match="Slice node 'cut'.*shape"):
        load(_save(graph, tmp_path / "m.onnx", opset=13))


def test_shape_arithmetic_is_bounded(tmp_path: Path) -> None:
    big = _shape_graph(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Concat", ["s", "many"], ["t"], name="long_shape", axis=0),
            helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape"),
        ],
        [_int64("many", np.ones(10_000))],
        ["n", 24],
    )
    with pytest.raises(OnnxImportError, match="Concat node 'long_shape'.*64"):
        load(_save(big, tmp_path / "big.onnx", opset=13))
    pieces = _shape_graph(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Concat", ["s", "p", "p", "p"], ["t"], name="joined", axis=0),
            helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape"),
        ],
        [_int64("p", np.ones(30))],
        ["n", 24],
    )
    with pytest.raises(OnnxImportError, match="Concat node 'joined'.*94 elements.*64"):
        load(_save(pieces, tmp_path / "pieces.onnx", opset=13))
    # Repeated squaring would grow Python integers without bound.
    nodes: list[object] = [helper.make_node("Shape", ["x"], ["s0"], name="shape")]
    nodes.append(helper.make_node("Gather", ["s0", "i1"], ["v0"], name="g"))
    for i in range(80):
        nodes.append(helper.make_node("Mul", [f"v{i}", f"v{i}"], [f"v{i + 1}"], name=f"sq{i}"))
    nodes.append(helper.make_node("Unsqueeze", ["v80", "axis0"], ["t"], name="u"))
    nodes.append(helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape"))
    huge = _shape_graph(nodes, [_int64("i1", 1), _int64("axis0", [0])], [None])
    with pytest.raises(OnnxImportError, match="Mul node 'sq.*int64"):
        load(_save(huge, tmp_path / "huge.onnx", opset=13))
    # Each Unsqueeze axis adds a dimension: thousands of them would make a huge rank.
    wide = _shape_graph(
        [helper.make_node("Unsqueeze", ["x"], ["y"], name="wide", axes=list(range(1, 5001)))],
        [],
        ["n", *([1] * 5000), 2, 3, 4],
    )
    with pytest.raises(OnnxImportError, match="Unsqueeze node 'wide'.*5000 entries"):
        load(_save(wide, tmp_path / "wide.onnx", opset=11))


def test_shape_output_is_not_a_model_output(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["y"], name="shape")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2])],
    )
    with pytest.raises(OnnxImportError, match="graph output 'y'.*shape"):
        load(_save(graph, tmp_path / "m.onnx", opset=13))


@pytest.mark.parametrize("opset", [11, 13])
def test_unsqueeze_and_squeeze_of_data_and_constants(opset: int, tmp_path: Path) -> None:
    # Axes are an attribute before opset 13 and an input since.
    def axes(name: str, values: list[int]) -> tuple[list[str], dict[str, object]]:
        return ([name], {}) if opset >= 13 else ([], {"axes": values})

    (in1, at1), (in0, at0), (in_s, at_s) = axes("a1", [1]), axes("a0", [0]), axes("a1", [1])
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["x", *in1], ["u"], name="data_up", **at1),
            helper.make_node("Unsqueeze", ["c", *in0], ["cu"], name="const_up", **at0),
            helper.make_node("Add", ["u", "cu"], ["s"], name="shift"),
            helper.make_node("Squeeze", ["s", *in_s], ["y"], name="down", **at_s),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")]
        + ([_int64("a1", [1]), _int64("a0", [0])] if opset >= 13 else []),
    )
    path = _save(graph, tmp_path / "m.onnx", opset=opset)
    model = load(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        np.testing.assert_array_equal(model.predict(x), run_ort(path, x))


# -- ReduceMean ---------------------------------------------------------------------------
REDUCE_MEAN_CASES = {
    # name: (opset, attributes, axes input or None, output shape with "n" for the batch)
    "attribute_axes": (13, {"axes": [1], "keepdims": 0}, None, ["n", 3, 4]),
    "attribute_negative_axes_keepdims": (17, {"axes": [-1, 2]}, None, ["n", 2, 1, 1]),
    "input_axes": (18, {"keepdims": 0}, [2, 3], ["n", 2]),
    "input_axes_keepdims": (18, {}, [-2], ["n", 2, 1, 4]),
    "no_axes_is_noop": (18, {"noop_with_empty_axes": 1}, None, ["n", 2, 3, 4]),
    "empty_axes_is_noop": (18, {"noop_with_empty_axes": 1}, [], ["n", 2, 3, 4]),
}


@pytest.mark.parametrize("case", sorted(REDUCE_MEAN_CASES))
def test_reduce_mean_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    opset, attrs, axes, out = REDUCE_MEAN_CASES[case]
    inputs, inits = ["x"], []
    if axes is not None:
        inputs.append("axes")
        inits.append(_int64("axes", axes))
    graph = _shape_graph(
        [helper.make_node("ReduceMean", inputs, ["y"], name="mean", **attrs)], inits, out
    )
    path = _save(graph, tmp_path / "m.onnx", opset=opset)
    model = load(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 3, 4)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), run_ort(path, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes", [None, [0, 1]], ids=["all_axes", "batch_axis"])
def test_reduce_mean_over_the_dynamic_batch_is_refused(
    axes: list[int] | None, tmp_path: Path
) -> None:
    graph = _shape_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], name="mean", **({"axes": axes} if axes else {}))],
        [],
        [1, 1, 3, 4] if axes else [1, 1, 1, 1],
    )  # fmt: skip
    with pytest.raises(OnnxImportError, match="ReduceMean node 'mean'.*batch"):
        load(_save(graph, tmp_path / "m.onnx", opset=13))
