"""ONNX export of SimpleRNN, LSTM and GRU as the ONNX RNN, LSTM and GRU operators:
onnxruntime gives gometal's outputs (sequence, last step, final states) within 1e-4, with
initial states, lengths and key-padding masks, 1 and 2 layers, uni- and bidirectional."""

from __future__ import annotations

import itertools
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import gometal as gm
from gometal.layers import GRU, LSTM, SimpleRNN

INPUT, HIDDEN, BATCH, STEPS = 5, 6, 4, 7


def _layer(cell: str, **options):
    if cell == "lstm":
        return LSTM(INPUT, HIDDEN, **options)
    if cell == "gru":
        return GRU(INPUT, HIDDEN, **options)
    return SimpleRNN(INPUT, HIDDEN, nonlinearity=cell[4:], **options)


def _feeds(cell: str, layers: int, directions: int, state: bool, extra: str | None):
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-1, 1, (BATCH, STEPS, INPUT)).astype(np.float32)]
    if state:
        arrays.append(rng.uniform(-1, 1, (BATCH, layers * directions, HIDDEN)).astype(np.float32))
        if cell == "lstm":
            arrays.append(
                rng.uniform(-1, 1, (BATCH, layers * directions, HIDDEN)).astype(np.float32)
            )
    lengths = np.array([STEPS, 3, 1, 5], dtype=np.int32)
    if extra == "lengths":
        arrays.append(lengths.reshape(BATCH, 1))
    if extra == "mask":
        arrays.append((np.arange(STEPS)[None, :] >= lengths[:, None]).astype(np.float32))
    return arrays


def _inputs(arrays, extra: str | None):
    inputs = [gm.Input((None, INPUT))]
    inputs += [gm.Input(a.shape[1:]) for a in arrays[1 : len(arrays) - (extra is not None)]]
    if extra == "lengths":
        inputs.append(gm.Input((1,), dtype="int32"))
    if extra == "mask":
        inputs.append(gm.Input((None,)))
    return inputs


def _run_ort(path, arrays):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, arrays)))[0]


CASES = [
    (cell, layers, bi, state, extra, output)
    for cell, (layers, bi), (state, extra), output in itertools.product(
        ["rnn_tanh", "rnn_relu", "lstm", "gru"],
        [(1, False), (2, True)],
        [(False, None), (True, "lengths"), (False, "mask")],
        ["sequence", "last", "h_n"],
    )
] + [
    # An LSTM's final cell state: each node's Y_c output.
    ("lstm", layers, bi, state, extra, "c_n")
    for (layers, bi), (state, extra) in itertools.product(
        [(1, False), (2, True)], [(False, None), (True, "lengths"), (False, "mask")]
    )
]


@pytest.mark.parametrize(
    "cell, layers, bi, state, extra, output",
    CASES,
    ids=lambda v: str(v),
)
def test_onnxruntime_gives_gometals_outputs(
    cell, layers, bi, state, extra, output, tmp_path
) -> None:
    arrays = _feeds(cell, layers, 2 if bi else 1, state, extra)
    inputs = _inputs(arrays, extra)
    layer = _layer(
        cell,
        num_layers=layers,
        bidirectional=bi,
        initial_state=state,
        lengths=extra == "lengths",
        key_padding_mask=extra == "mask",
        output=output,
    )
    model = gm.Model(inputs, layer(inputs), seed=1)
    expected = model.predict(arrays if len(arrays) > 1 else arrays[0])
    path = tmp_path / "recurrent.onnx"
    model.export_onnx(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    np.testing.assert_allclose(_run_ort(path, arrays), expected, rtol=1e-4, atol=1e-5)


def test_each_layer_is_one_onnx_operator(tmp_path) -> None:
    x = gm.Input((None, INPUT))
    h = GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True)(x)
    model = gm.Model(
        x, LSTM(2 * HIDDEN, 3, output="last")(SimpleRNN(2 * HIDDEN, 2 * HIDDEN)(h)), seed=0
    )
    model.export_onnx(tmp_path / "m.onnx")
    ops = [node.op_type for node in onnx.load(tmp_path / "m.onnx").graph.node]
    assert (ops.count("GRU"), ops.count("RNN"), ops.count("LSTM")) == (2, 1, 1)


@pytest.mark.parametrize(
    "layer, pattern",
    [
        (
            LSTM(INPUT, HIDDEN, proj_size=2),
            r"proj_size=2: the ONNX LSTM operator has no projection",
        ),
    ],
)
def test_what_onnx_cannot_hold_is_refused_by_name(layer, pattern, tmp_path) -> None:
    x = gm.Input((None, INPUT))
    model = gm.Model(x, layer(x), seed=0)
    with pytest.raises(ValueError, match=pattern):
        model.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("cell", ["rnn_relu", "lstm", "gru"])
def test_layers_without_biases_export(cell: str, tmp_path) -> None:
    arrays = _feeds(cell, 2, 2, False, "lengths")
    inputs = _inputs(arrays, "lengths")
    layer = _layer(cell, num_layers=2, bidirectional=True, bias=False, lengths=True)
    model = gm.Model(inputs, layer(inputs), seed=2)
    model.export_onnx(tmp_path / "m.onnx")
    np.testing.assert_allclose(
        _run_ort(tmp_path / "m.onnx", arrays), model.predict(arrays), rtol=1e-4, atol=1e-5
    )
