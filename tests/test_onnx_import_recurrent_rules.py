"""The ONNX RNN/GRU/LSTM operator rules at import, on nodes written by hand: ONNX's gate
order and ``layout`` against onnxruntime, ``sequence_lens`` from a model input, and what
gometal's layers do not compute refused with the node and the value."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from gometal.io.onnx import OnnxImportError, load

N, T, INPUT, HIDDEN = 3, 4, 5, 6
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _graph(
    kind: str,
    tmp_path: Path,
    directions: int = 1,
    layout: int = 0,
    lengths: bool = False,
    outputs: int = 1,
    extra_inputs: tuple[str, ...] = (),
    **attrs: object,
) -> Path:
    """One recurrent node reading X (and sequence_lens) from model inputs; outputs Y (and
    Y_h, Y_c), weights as initializers."""
    rng = np.random.default_rng(0)
    g = GATES[kind] * HIDDEN
    weights = {
        "W": rng.uniform(-0.5, 0.5, (directions, g, INPUT)),
        "R": rng.uniform(-0.5, 0.5, (directions, g, HIDDEN)),
        "B": rng.uniform(-0.5, 0.5, (directions, 2 * g)),
    }
    if kind == "LSTM" and "P" in extra_inputs:
        weights["P"] = rng.uniform(-0.5, 0.5, (directions, 3 * HIDDEN))
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", "t", INPUT])]
    operands = ["X" if layout else "X_tnc", "W", "R", "B", "lens" if lengths else ""]
    if lengths:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["n"]))
    if "P" in extra_inputs:
        operands += ["", "", "P"]
    names = ["Y", "Y_h", "Y_c"][:outputs]
    nodes = []
    if layout == 0:  # the model input is batch-first; the node reads it time-major
        nodes.append(helper.make_node("Transpose", ["X"], ["X_tnc"], perm=[1, 0, 2]))
    nodes.append(
        helper.make_node(kind, operands, names, name="rec", hidden_size=HIDDEN, layout=layout,
                         **attrs)
    )  # fmt: skip
    declared = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names]
    graph = helper.make_graph(nodes, "g", inputs, declared, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    path = tmp_path / "m.onnx"
    onnx.save(model, os.fspath(path))
    return path


def _reference(path: Path, feeds: dict[str, np.ndarray], layout: int) -> list[np.ndarray]:
    """onnxruntime's outputs; ONNX's reference evaluator for ``layout`` 1, which
    onnxruntime does not run."""
    if layout == 1:
        return list(ReferenceEvaluator(os.fspath(path)).run(None, feeds))
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _batch_first(y: np.ndarray, layout: int, state: bool) -> np.ndarray:
    """onnxruntime's output as the imported model gives it (the batch first)."""
    if layout == 1:
        return y
    return y.transpose(1, 0, 2) if state else y


# ONNX's reference evaluator (layout 1) does not read sequence_lens: only onnxruntime's
# layout 0 checks them.
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize(
    ("layout", "lengths"), [(0, False), (0, True), (1, False)],
    ids=["layout0", "layout0-sequence_lens", "layout1"],
)  # fmt: skip
def test_bidirectional_node_matches_onnxruntime(
    kind: str, layout: int, lengths: bool, tmp_path: Path
) -> None:
    attrs = {"linear_before_reset": 1} if kind == "GRU" else {}
    outputs = 3 if kind == "LSTM" else 2
    path = _graph(kind, tmp_path, 2, layout, lengths, outputs, direction="bidirectional", **attrs)
    x = np.random.default_rng(1).standard_normal((N, T, INPUT)).astype(np.float32)
    feeds = {"X": x}
    if lengths:
        feeds["lens"] = np.array([T, 2, 1], np.int32)
    expected = _reference(path, feeds, layout)
    model = load(path)
    got = model.predict(list(feeds.values()) if lengths else x)
    got = got if isinstance(got, list) else [got]
    y = expected[0]  # (T, D, N, H) or (N, T, D, H)
    y = y if layout else y.transpose(2, 0, 1, 3)  # the imported Y keeps ONNX's axes, batch first
    np.testing.assert_allclose(got[0], y, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(got[1:], expected[1:]):
        np.testing.assert_allclose(ours, _batch_first(theirs, layout, True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "attrs", "extra", "pattern"),
    [
        ("LSTM", {"clip": 3.0}, (), r"clip=3\.0 is not supported"),
        ("LSTM", {"input_forget": 1}, (), r"input_forget=1 is not supported"),
        ("LSTM", {}, ("P",), r"peepholes P \('P'\) are not supported"),
        (
            "LSTM",
            {"activations": ["Sigmoid", "Relu", "Tanh"]},
            (),
            r"activations \['Sigmoid', 'Relu', 'Tanh'\] are not supported",
        ),
        ("GRU", {}, (), r"linear_before_reset=0 is not supported"),
        ("RNN", {"activations": ["Sigmoid"]}, (), r"activations \['Sigmoid'\] are not supported"),
        ("RNN", {"direction": "reverse"}, (), r"direction='reverse' is not supported"),
        ("GRU", {"linear_before_reset": 1, "activation_alpha": [0.5]}, (), r"activation_alpha="),
    ],
    ids=[
        "clip",
        "input_forget",
        "peepholes",
        "lstm-activations",
        "gru-lbr0",
        "rnn-activations",
        "reverse",
        "activation_alpha",
    ],
)
def test_unsupported_attributes_are_refused_by_name(
    kind: str, attrs: dict, extra: tuple, pattern: str, tmp_path: Path
) -> None:
    path = _graph(kind, tmp_path, extra_inputs=extra, **attrs)
    with pytest.raises(OnnxImportError, match=rf"{kind} node 'rec': {pattern}"):
        load(path)
