"""GELU written as primitives (before opset 20) imports as one GELU layer.

References: onnxruntime running the same file, torch's module, and the gometal model a
round trip starts from (identical predictions). Chains that differ from GELU's stay
separate operators and still match onnxruntime.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import gometal as gm
from gometal import layers as L
from gometal.io.onnx import _layers as X
from gometal.io.onnx.export import export
from gometal.io.onnx.importer import load
from onnx_runtime import run_ort

TOLERANCE = 1e-5


def _gelu_layers(model: gm.Model) -> list[type]:
    return [type(layer) for layer in model.layers if isinstance(layer, (L.GELU, X.OnnxGeluTanh))]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_torch_gelu_chain_imports_as_one_layer(
    approximate: str, dynamo: bool, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate=approximate), nn.Linear(8, 3))
    module.eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.randn(2, 6),), os.fspath(path), dynamo=dynamo, opset_version=17,
            input_names=["x"], dynamic_axes=None if dynamo else {"x": {0: "batch"}},
            dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamo else None,
        )  # fmt: skip
    ops = [node.op_type for node in onnx.load(os.fspath(path)).graph.node]
    assert "Gelu" not in ops and ("Erf" in ops or "Tanh" in ops)
    model = load(path)
    expected_layer = L.GELU if approximate == "none" else X.OnnxGeluTanh
    assert _gelu_layers(model) == [expected_layer]
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32) * 3
    np.testing.assert_allclose(model.predict(x), run_ort(path, x), rtol=TOLERANCE, atol=TOLERANCE)
    with torch.no_grad():
        reference = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), reference, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("layer", [L.GELU, X.OnnxGeluTanh])
def test_gometal_gelu_round_trip_is_identical(layer: type, tmp_path: Path) -> None:
    v = gm.Input((10,))
    model = gm.Model(v, L.Dense(3)(layer()(L.Dense(8)(v))))
    rng = np.random.default_rng(2)
    weights = model.get_weights()
    model.set_weights(
        {k: rng.standard_normal(w.shape).astype(np.float32) for k, w in weights.items()}
    )
    export(model, tmp_path / "m.onnx", opset=17)
    ops = [node.op_type for node in onnx.load(os.fspath(tmp_path / "m.onnx")).graph.node]
    assert "Gelu" not in ops
    clone = load(tmp_path / "m.onnx")
    assert _gelu_layers(clone) == [layer]
    x = rng.standard_normal((7, 10)).astype(np.float32) * 3
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    np.testing.assert_allclose(
        clone.predict(x), run_ort(tmp_path / "m.onnx", x), rtol=TOLERANCE, atol=TOLERANCE
    )


def _erf_chain(half: float, divisor: float, erf_is_output: bool) -> onnx.GraphProto:
    """``half * x * (1 + Erf(x / divisor))``, optionally with the Erf result as an output."""
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])]
    if erf_is_output:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", 4]))
    constants = {"divisor": divisor, "one": 1.0, "half": half}
    return helper.make_graph(
        [
            helper.make_node("Div", ["x", "divisor"], ["s"], name="scale"),
            helper.make_node("Erf", ["s"], ["e"], name="erf"),
            helper.make_node("Add", ["e", "one"], ["g"], name="gate"),
            helper.make_node("Mul", ["x", "g"], ["m"], name="times_x"),
            helper.make_node("Mul", ["m", "half"], ["y"], name="halve"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        outputs,
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in constants.items()],
    )


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("half", "divisor", "erf_is_output", "fused"),
    [
        (0.5, math.sqrt(2.0), False, True),
        (0.6, math.sqrt(2.0), False, False),
        (0.5, math.sqrt(3.0), False, False),
        (0.5, math.sqrt(2.0), True, False),
    ],
    ids=["gelu", "other_half", "other_divisor", "used_intermediate"],
)
def test_only_exact_gelu_chains_are_fused(
    half: float, divisor: float, erf_is_output: bool, fused: bool, tmp_path: Path
) -> None:
    path = _save(_erf_chain(half, divisor, erf_is_output), tmp_path / "chain.onnx")
    model = load(path)
    assert _gelu_layers(model) == ([L.GELU] if fused else [])
    x = np.random.default_rng(4).standard_normal((6, 4)).astype(np.float32) * 3
    predicted = model.predict(x)
    predicted = predicted[0] if isinstance(predicted, (list, tuple)) else predicted
    np.testing.assert_allclose(predicted, run_ort(path, x), rtol=TOLERANCE, atol=TOLERANCE)
