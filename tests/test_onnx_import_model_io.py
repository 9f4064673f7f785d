"""Graphs of several inputs and outputs import as models of several inputs and outputs;
further inputs hold the batch on the axis named as the first input's, and what cannot be
matched is refused naming the input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gometal.io.onnx import OnnxImportError, load


def _save(nodes: list, inputs: list, outputs: list, path: Path) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), os.fspath(path)
    )
    return path


def _info(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_two_inputs_and_two_outputs(tmp_path: Path) -> None:
    # y holds the batch on axis 1 (named as x's): the model takes it batch-first.
    nodes = [
        helper.make_node("Transpose", ["y"], ["y_batch_first"], perm=[1, 0]),
        helper.make_node("Add", ["x", "y_batch_first"], ["sum"]),
        helper.make_node("Mul", ["x", "y_batch_first"], ["product"]),
    ]
    path = _save(
        nodes, [_info("x", ["n", 3]), _info("y", [3, "n"])],
        [_info("sum", ["n", 3]), _info("product", ["n", 3])], tmp_path / "m.onnx",
    )  # fmt: skip
    model = load(path)
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((5, 3)).astype(np.float32) for _ in range(2))
    total, product = model.predict([x, y])
    np.testing.assert_allclose(total, x + y, rtol=1e-6)
    np.testing.assert_allclose(product, x * y, rtol=1e-6)


def test_an_input_without_the_batch_is_refused_by_name(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["x", "y"], ["z"])]
    path = _save(nodes, [_info("x", ["n", 3]), _info("y", [4, 3])], [_info("z", ["n", 3])],
                 tmp_path / "m.onnx")  # fmt: skip
    with pytest.raises(OnnxImportError, match=r"input 'y' of shape \[4, 3\]: no single axis holds"):
        load(path)


def test_too_many_inputs_are_refused(tmp_path: Path) -> None:
    names = [f"x{i}" for i in range(17)]
    nodes = [helper.make_node("Concat", names, ["z"], axis=1)]
    path = _save(nodes, [_info(n, ["n", 2]) for n in names], [_info("z", ["n", 34])],
                 tmp_path / "m.onnx")  # fmt: skip
    with pytest.raises(OnnxImportError, match=r"1 to 16 runtime inputs, got 17"):
        load(path)
