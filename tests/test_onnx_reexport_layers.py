"""The ONNX export rule of each layer the ONNX importer makes, one small model at a time:
onnxruntime on the exported file gives ``model.predict``'s outputs within 1e-4."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

import gometal as gm
from gometal import _core
from gometal.io.onnx import _layer_ops as LO
from gometal.io.onnx import _layers as L
from gometal.io.onnx import _padding_layers as PL
from gometal.io.onnx import _view_layers as V
from gometal.io.onnx._reexport_rules import shape_operand
from gometal.nn.tensor import BATCH, SEQ


def _check(model: gm.Model, arrays: list[np.ndarray], tmp_path, opset: int = 17) -> None:
    path = tmp_path / "m.onnx"
    gm.onnx.export(model, path, opset=opset)
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})
    expected = model.predict(arrays if len(arrays) > 1 else arrays[0])
    for theirs, ours in zip(got, expected if isinstance(expected, list) else [expected]):
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


def _randomize(model: gm.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights({k: rng.uniform(-1, 1, v.shape) for k, v in model.get_weights().items()})


def _x(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)


UNARY = [
    lambda: L.OnnxUnary("erf"),
    lambda: L.OnnxUnary("identity"),
    lambda: L.OnnxUnary("exp"),
    lambda: L.OnnxUnary("neg"),
    lambda: L.OnnxUnary("abs"),
    lambda: L.OnnxClip(-0.5, 1.0),
    lambda: L.OnnxClip(None, 0.25),
    lambda: L.OnnxGeluTanh(),
    lambda: L.OnnxSoftmax([2]),
    lambda: L.OnnxSoftmax([1], log=True),
    lambda: L.OnnxTranspose([0, 2, 1]),
    lambda: L.OnnxReshape([-1, 12]),
    lambda: L.OnnxReduceMean([1], keepdims=False),
    lambda: L.OnnxReduceMean([1, 2], keepdims=True),
    lambda: L.OnnxMatMul((4, 5)),
    lambda: LO.OnnxPRelu((4,)),
    lambda: V.OnnxTake(1, 2),
    lambda: V.OnnxSliceAxis(2, 1, 3),
    lambda: V.OnnxRelayout([1, 0, 2], [3, -1, 4]),
    lambda: V.OnnxRelayout([0, 2, 1], [-1, 2, 2, 3]),
]


@pytest.mark.parametrize("make", UNARY, ids=lambda make: repr(make()))
def test_one_input_layers_export(make, tmp_path) -> None:
    x = gm.Input((3, 4))
    model = gm.Model(x, make()(x))
    _randomize(model)
    _check(model, [_x(2, 3, 4)], tmp_path)


IMAGE_LAYERS = [
    lambda: L.OnnxPad2D((1, 0, 2, 3), value=0.5),
    lambda: L.OnnxPool2D("max", (2, 2), (2, 2), (0, 0, 0, 0)),
    lambda: L.OnnxPool2D("max", (3, 3), (2, 2), (1, 1, 1, 1), extra=(1, 0)),
    lambda: L.OnnxPool2D("avg", (3, 3), (1, 1), (1, 1, 1, 1), count_include_pad=True),
    lambda: L.OnnxPool2D("avg", (3, 2), (2, 2), (1, 0, 1, 1), extra=(0, 1)),
    lambda: PL.OnnxMaskFill(-1e9, 0.0),
    lambda: PL.OnnxBroadcast([BATCH, 3, 5, 6]),
]


@pytest.mark.parametrize("make", IMAGE_LAYERS, ids=lambda make: repr(make()))
def test_padding_pooling_and_mask_layers_export(make, tmp_path) -> None:
    layer = make()
    x = gm.Input((1, 5, 6) if isinstance(layer, PL.OnnxBroadcast) else (2, 5, 6))
    model = gm.Model(x, layer(x))
    data = _x(2, *x.sample_shape)
    if isinstance(layer, PL.OnnxMaskFill):
        data = (data > 0).astype(np.float32)
    _check(model, [data], tmp_path)


def test_a_broadcast_reads_a_run_time_length(tmp_path) -> None:
    x = gm.Input((1, None))
    model = gm.Model(x, PL.OnnxBroadcast([BATCH, 3, SEQ])(x))
    _check(model, [_x(2, 1, 7)], tmp_path)


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_across_opsets(opset, tmp_path) -> None:
    x = gm.Input((3, 4))
    _check(gm.Model(x, L.OnnxReduceMean([2], keepdims=True)(x)), [_x(2, 3, 4)], tmp_path, opset)


@pytest.mark.parametrize("primitive", ["add", "sub", "mul", "div"])
def test_binary_with_a_constant_exports(primitive, tmp_path) -> None:
    x = gm.Input((3, 4))
    constant = L.OnnxConstant((3, 1))(x)
    model = gm.Model(x, L.OnnxBinary(primitive)([x, constant]))
    model.set_weights({f"{model.layers[0].name}.value": np.full((3, 1), 1.5)})
    _check(model, [_x(2, 3, 4)], tmp_path)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_attention_and_batch_matmul_export(causal, scale, tmp_path) -> None:
    q, k, v = (gm.Input((2, None, 4), name=n) for n in "qkv")
    attended = V.OnnxAttention(causal, scale)([q, k, v])
    model = gm.Model(
        [q, k, v], [attended, V.OnnxBatchMatMul()([attended, L.OnnxTranspose([0, 1, 3, 2])(v)])]
    )
    arrays = [_x(3, 2, 5, 4, seed=s) for s in range(3)]
    _check(model, arrays, tmp_path)


class _Recorder:
    """Just enough of the exporter's graph for ``shape_operand``: records the nodes."""

    def __init__(self) -> None:
        self.nodes: list[tuple[str, list[str]]] = []

    def unique(self, name: str) -> str:
        return f"{name}_{len(self.nodes)}"

    def node(self, op_type, inputs, output, name, **attrs) -> None:
        self.nodes.append((op_type, list(inputs)))

    def int_constant(self, name: str, values) -> str:
        self.nodes.append(("Constant", [str(list(values))]))
        return f"{name}_{len(self.nodes)}"


def test_reshape_targets_read_run_time_sizes_from_the_input() -> None:
    b = _Recorder()
    # (seq, batch, 8) -> (batch, seq, 2, 4): both sizes are read from Shape(x).
    shape_operand(b, "x", (SEQ, BATCH, 8), (BATCH, SEQ, 2, 4), "r")
    assert [kind for kind, _ in b.nodes].count("Shape") == 2
    assert b.nodes[-1][0] == "Concat"
    b = _Recorder()
    # A size in place is 0 (copied), one unknown is -1: one constant, no Shape.
    shape_operand(b, "x", (BATCH, SEQ, 8), (BATCH, _core.dim_symbol("other"), 2), "r")
    assert b.nodes == [("Constant", ["[0, -1, 2]"])]


def test_a_reshape_of_two_unknown_run_time_sizes_is_refused_by_name() -> None:
    other = _core.dim_symbol("other")
    with pytest.raises(NotImplementedError, match=r"'r'.*2 of its run-time sizes"):
        shape_operand(_Recorder(), "x", (BATCH, 8), (SEQ, other, 8), "r")
