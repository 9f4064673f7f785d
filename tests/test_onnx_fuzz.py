"""A bounded fuzz of the ONNX importer: a few hundred mutated files, each imported (and,
when it loads, run on two samples) in a worker process under a memory limit.

Starting from small valid models (an MLP, a CNN with uneven padding and pooling, a graph
of shape arithmetic, a torch export), each case applies one to three seeded mutations:
flipped, replaced or truncated bytes; integer and float attributes set to huge, zero,
negative, NaN or infinite values; dropped inputs and outputs; other data types, shapes,
operators and opsets; NaN weights; nodes out of order. Every case must end in
``OnnxImportError`` or in a model that predicts the shape it declares: no crash, no
other exception type, no timeout, and peak memory within the bound
``fuzz_onnx_worker.case_bound`` derives from the per-sample cap.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from fuzz_onnx_worker import run_cases
from gometal.io.onnx.importer import SUPPORTED_OPS

SEED = 20260513
CASES_PER_SEED = 100
# The workers run with a small cap, so the memory bound of every case is small too.
FUZZ_CAP_BYTES = 64 * 1024**2

# Sizes in the middle allocate for real (within the cap); the extremes must be refused.
INTERESTING_INTS = [
    0, -1, 1, 2, 3, 7, 100, 1000, 4000, 16384, 2**31 - 1, 2**31, 2**32, 2**62, -(2**63),
    2**63 - 1,
]  # fmt: skip
INTERESTING_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e30, 1e-30, 0.5]
WINDOW_ATTRIBUTES = ["pads", "strides", "kernel_shape", "dilations", "perm", "axes"]
SCALAR_ATTRIBUTES = ["axis", "group", "transA", "transB", "ceil_mode", "count_include_pad"]
FLOAT_ATTRIBUTES = ["alpha", "beta", "epsilon", "momentum", "ratio", "min", "max"]


def _weight(rng: np.random.Generator, name: str, *shape: int) -> TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _model(
    nodes: list[onnx.NodeProto],
    name: str,
    x_shape: list[Any],
    y_shape: list[Any],
    initializers: list[TensorProto],
    opset: int = 17,
) -> onnx.ModelProto:
    """A model of one float input ``x`` and one float output ``y``."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _mlp(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["z"], name="fc2", alpha=0.5),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1),
    ]
    weights = [_weight(rng, "w1", 8, 6), _weight(rng, "b1", 8), _weight(rng, "w2", 8, 3)]
    return _model(nodes, "mlp", ["n", 6], ["n", 3], weights)


def _cnn(rng: np.random.Generator) -> onnx.ModelProto:
    channels = 3
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[0, 1, 1, 0]),
        helper.make_node(
            "BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn"], name="bn"
        ),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["m"], name="max", kernel_shape=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["m"], ["a"], name="avg", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
        helper.make_node("Flatten", ["a"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "head"], ["z"], name="head"),
        helper.make_node("LogSoftmax", ["z"], ["y"], name="log_softmax", axis=1),
    ]  # fmt: skip
    weights = [
        _weight(rng, "w", channels, 2, 3, 3),
        _weight(rng, "b", channels),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, channels).astype(np.float32), "scale"),
        _weight(rng, "shift", channels),
        _weight(rng, "mean", channels),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, channels).astype(np.float32), "var"),
        _weight(rng, "head", channels * 4 * 4, 4),
    ]
    return _model(nodes, "cnn", ["n", 2, 7, 7], ["n", 4], weights)


def _fully_convolutional(rng: np.random.Generator) -> onnx.ModelProto:
    """Takes any image size, so mutated sizes and padding reach real allocations."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["a"], name="avg", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["a"], ["m"], name="max", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["m"], ["g"], name="global"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "head"], ["y"], name="head"),
    ]  # fmt: skip
    weights = [_weight(rng, "w", 4, 2, 3, 3), _weight(rng, "head", 4, 3)]
    return _model(nodes, "fcn", ["n", 2, 16, 16], ["n", 3], weights)


def _shape_graph(rng: np.random.Generator) -> onnx.ModelProto:
    """Shape arithmetic feeding a Reshape, and the elementwise and layout operators."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="batch", axis=0),
        helper.make_node("Unsqueeze", ["n", "zeros"], ["n1"], name="batch_1d"),
        helper.make_node("Concat", ["n1", "target"], ["t"], name="target", axis=0),
        helper.make_node("Reshape", ["x", "t"], ["r"], name="split"),
        helper.make_node("Transpose", ["r"], ["p"], name="swap", perm=[0, 2, 1]),
        helper.make_node("Add", ["p", "bias"], ["a"], name="shift"),
        helper.make_node("Clip", ["a", "low", "high"], ["c"], name="clip"),
        helper.make_node("LeakyRelu", ["c"], ["l"], name="leaky", alpha=0.1),
        helper.make_node("Elu", ["l"], ["e"], name="elu", alpha=1.0),
        helper.make_node("Dropout", ["e"], ["d"], name="dropout"),
        helper.make_node("ReduceMean", ["d"], ["m"], name="mean", axes=[2], keepdims=1),
        helper.make_node("Squeeze", ["m", "two"], ["q"], name="squeeze"),
        helper.make_node("Mul", ["q", "gain"], ["g"], name="gain"),
        helper.make_node("Tanh", ["g"], ["y"], name="tanh"),
    ]
    constants = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "zeros"),
        numpy_helper.from_array(np.array([4, 3], np.int64), "target"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "low"),
        numpy_helper.from_array(np.array(1.0, np.float32), "high"),
        _weight(rng, "bias", 1, 4),
        _weight(rng, "gain", 3),
    ]
    return _model(nodes, "shapes", ["n", 12], ["n", 3], constants, opset=13)


class _TorchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv(x)))
        return torch.sigmoid(self.fc(h.view(h.size(0), -1)))


def _torch_export(folder: Path) -> onnx.ModelProto:
    torch.manual_seed(0)
    path = folder / "torch_net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TorchNet().eval(), (torch.randn(2, 1, 6, 6),), os.fspath(path), dynamo=False,
            opset_version=17, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )  # fmt: skip
    return onnx.load(path)


# -- mutations ------------------------------------------------------------------------------
Mutation = Callable[[onnx.ModelProto, np.random.Generator], None]


def _pick(rng: np.random.Generator, items: Any) -> Any:
    return items[int(rng.integers(len(items)))]


def _set_attribute(node: Any, name: str, value: Any) -> None:
    """Gives ``node`` the attribute ``name`` with ``value``, in place of any it had."""
    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    node.attribute.append(helper.make_attribute(name, value))


def _mutate_window(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    node = _pick(rng, model.graph.node)
    length = int(rng.integers(1, 5))
    values = [int(_pick(rng, INTERESTING_INTS)) for _ in range(length)]
    _set_attribute(node, _pick(rng, WINDOW_ATTRIBUTES), values)


def _mutate_existing_ints(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    # The attributes a node already has are the ones its handler reads.
    found = [
        attribute
        for node in model.graph.node
        for attribute in node.attribute
        if attribute.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)
    ]
    if not found:
        return
    attribute = _pick(rng, found)
    value = int(_pick(rng, INTERESTING_INTS))
    if attribute.type == onnx.AttributeProto.INT:
        attribute.i = value
    elif attribute.ints:
        attribute.ints[int(rng.integers(len(attribute.ints)))] = value


def _mutate_scalar(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    node = _pick(rng, model.graph.node)
    _set_attribute(node, _pick(rng, SCALAR_ATTRIBUTES), int(_pick(rng, INTERESTING_INTS)))


def _mutate_float(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    node = _pick(rng, model.graph.node)
    _set_attribute(node, _pick(rng, FLOAT_ATTRIBUTES), float(_pick(rng, INTERESTING_FLOATS)))


def _drop_io(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    graph = model.graph
    choice = int(rng.integers(5))
    node = _pick(rng, graph.node)
    if choice == 0 and node.input:
        del node.input[int(rng.integers(len(node.input)))]
    elif choice == 1 and node.output:
        del node.output[int(rng.integers(len(node.output)))]
    elif choice == 2 and graph.initializer:
        del graph.initializer[int(rng.integers(len(graph.initializer)))]
    elif choice == 3 and graph.input:
        del graph.input[0]
    elif graph.output:
        node.input.append(graph.output[0].name)  # a cycle through the output


def _change_dtype(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    dtype = int(rng.integers(0, 24))
    if model.graph.initializer and (rng.random() < 0.5 or not model.graph.input):
        _pick(rng, model.graph.initializer).data_type = dtype
    elif model.graph.input:
        model.graph.input[0].type.tensor_type.elem_type = dtype


def _change_dims(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    value = int(_pick(rng, [0, 1, 2, 5, 300, 3000, 2**20, 2**31]))
    if model.graph.initializer and (rng.random() < 0.5 or not model.graph.input):
        tensor = _pick(rng, model.graph.initializer)
        if tensor.dims:
            tensor.dims[int(rng.integers(len(tensor.dims)))] = value
        else:
            tensor.dims.append(value)
    elif model.graph.input and model.graph.input[0].type.tensor_type.shape.dim:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dim = dims[int(rng.integers(len(dims)))]
        if rng.random() < 0.2:
            dim.dim_param = "free"
        else:
            dim.dim_value = value


def _swap_operator(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    _pick(rng, model.graph.node).op_type = _pick(rng, sorted(SUPPORTED_OPS))


def _nan_weights(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    floats = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and t.raw_data]
    if floats:
        tensor = _pick(rng, floats)
        raw = bytearray(tensor.raw_data)
        at = 4 * int(rng.integers(max(len(raw) // 4, 1)))
        raw[at : at + 4] = np.array([_pick(rng, [np.nan, np.inf])], np.float32).tobytes()
        tensor.raw_data = bytes(raw)


def _reorder(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    nodes = list(model.graph.node)
    order = rng.permutation(len(nodes))
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)


def _change_opset(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    model.opset_import[0].version = int(_pick(rng, [1, 5, 7, 10, 11, 13, 18, 21, 10**6]))


STRUCTURED: list[Mutation] = [
    _mutate_window, _mutate_existing_ints, _mutate_existing_ints, _mutate_scalar, _mutate_float, _drop_io, _change_dtype, _change_dims,
    _swap_operator, _nan_weights, _reorder, _change_opset,
]  # fmt: skip


def _mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    buffer = bytearray(data)
    kind = int(rng.integers(3))
    if kind == 0:  # flip bits
        for _ in range(int(rng.integers(1, 9))):
            buffer[int(rng.integers(len(buffer)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # interesting bytes
        for _ in range(int(rng.integers(1, 5))):
            buffer[int(rng.integers(len(buffer)))] = int(_pick(rng, [0x00, 0xFF, 0x7F, 0x80]))
    else:  # truncate
        # Most cuts fail to parse, which the tests of truncated files cover already.
        del buffer[int(rng.integers(1, len(buffer))) :]
    return bytes(buffer)


def write_cases(folder: Path) -> int:
    """Writes the seeds and their mutations to ``folder``; returns how many files."""
    rng = np.random.default_rng(SEED)
    seeds = {
        "mlp": _mlp(rng),
        "cnn": _cnn(rng),
        "fcn": _fully_convolutional(rng),
        "shapes": _shape_graph(rng),
        "torch": _torch_export(folder.parent),
    }
    count = 0
    for name, seed in seeds.items():
        (folder / f"{name}_seed.onnx").write_bytes(seed.SerializeToString())
        count += 1
        for index in range(CASES_PER_SEED):
            model = onnx.ModelProto()
            model.CopyFrom(seed)
            for _ in range(int(rng.integers(1, 4))):
                _pick(rng, STRUCTURED)(model, rng)
            data = model.SerializeToString()
            if rng.random() < 0.2:
                data = _mutate_bytes(data, rng)
            (folder / f"{name}_{index:03d}.onnx").write_bytes(data)
            count += 1
    return count


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("onnx_fuzz") / "cases"
    folder.mkdir()
    assert write_cases(folder) == 5 * (CASES_PER_SEED + 1)
    return run_cases(folder, FUZZ_CAP_BYTES)


def test_no_case_crashes_raises_another_type_or_exceeds_its_memory_bound(
    fuzz_results: dict[str, dict[str, Any]],
) -> None:
    bad = {
        name: f"{record['outcome']}: {record['detail']}"
        for name, record in fuzz_results.items()
        if record["outcome"] not in ("refused", "loaded")
    }
    assert not bad, "\n".join(f"{name}: {problem}" for name, problem in sorted(bad.items()))


def test_the_seeds_load_and_the_mutations_reach_both_outcomes(
    fuzz_results: dict[str, dict[str, Any]],
) -> None:
    # A fuzz that only ever saw refusals (or only valid files) would test little.
    for seed in ("mlp", "cnn", "fcn", "shapes", "torch"):
        assert fuzz_results[f"{seed}_seed.onnx"]["outcome"] == "loaded"
    outcomes = [r["outcome"] for n, r in fuzz_results.items() if not n.endswith("_seed.onnx")]
    assert outcomes.count("loaded") >= len(outcomes) // 10
    assert outcomes.count("refused") >= len(outcomes) // 2


FAKE_WORKER = """
import json, os, sys, time
from pathlib import Path
print(json.dumps({"ready": True, "per_case_peak": True}), flush=True)
for request in sys.stdin:
    name = Path(json.loads(request)["path"]).name
    if "abort" in name:
        os.abort()
    if "hang" in name:
        time.sleep(60)
    print(json.dumps({"outcome": "loaded", "detail": "", "peak_bytes": 0}), flush=True)
"""


def test_the_runner_records_a_crash_and_a_hang_and_goes_on(tmp_path: Path) -> None:
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    folder = tmp_path / "cases"
    folder.mkdir()
    for name in ("a", "b_abort", "c_hang", "d"):
        (folder / f"{name}.onnx").write_bytes(b"")
    results = run_cases(folder, FUZZ_CAP_BYTES, case_timeout=2.0, worker=worker)
    outcomes = {name: record["outcome"] for name, record in results.items()}
    assert outcomes == {
        "a.onnx": "loaded", "b_abort.onnx": "crash", "c_hang.onnx": "timeout", "d.onnx": "loaded"
    }  # fmt: skip
