"""Models imported from ONNX export to ONNX again: torch-exported RNN, GRU and LSTM (with
their final states) and TransformerEncoder models, as imported, after fine-tuning, and the
layers the importer makes one by one. onnxruntime on the re-exported file agrees with the
imported model and with torch within 1e-4. An LSTM node whose Y, Y_h and Y_c are all read
imports as one recurrence per direction."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import gometal as gm
from gometal import _core
from gometal.io.onnx import load
from onnx_recurrent_models import Recurrent, export, gometal_inputs, torch_outputs
from test_onnx_import_padding_mask import CausalMaskedEncoder, MaskedEncoder
from test_onnx_import_padding_mask import _inputs as masked_inputs
from test_onnx_import_padding_mask import _torch as masked_torch
from test_onnx_import_padding_mask import export as export_masked
from test_onnx_import_transformer import EncoderModel, TokenEncoder, _inputs, _torch_predict
from test_onnx_import_transformer import export as export_encoder

TOLERANCE = 1e-4


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, arrays: list[np.ndarray]) -> list[np.ndarray]:
    return session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})


def _close(actual, expected, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE, err_msg=what)


def _as_list(value) -> list[np.ndarray]:
    return value if isinstance(value, list) else [value]


RECURRENT = [
    ("lstm", False, 2, True, True),
    ("lstm", True, 1, False, True),
    ("gru", False, 2, True, False),
    ("gru", True, 2, False, True),
    ("rnn_tanh", False, 2, True, True),
    ("rnn_relu", False, 1, False, False),
]


@pytest.mark.parametrize(
    ("cell", "dynamo", "layers", "bidirectional", "states"),
    RECURRENT,
    ids=[f"{c}-{'dynamo' if d else 'torchscript'}-{n}{'-bi' * b}{'-states' * s}"
         for c, d, n, b, s in RECURRENT],
)  # fmt: skip
def test_imported_recurrent_models_export_again(
    cell, dynamo, layers, bidirectional, states, tmp_path
) -> None:
    module = Recurrent(cell, layers, bidirectional, states)
    model = load(export(module, module.example(2, 5), tmp_path / "m.onnx", dynamo, seq=not dynamo))
    path = tmp_path / "again.onnx"
    gm.onnx.export(model, path)
    session = _session(path)
    for batch, length in ((3, 5), (1, 5) if dynamo else (2, 9)):
        args = module.example(batch, length, seed=batch)
        arrays = _as_list(gometal_inputs(args))
        got = _run(session, arrays)
        ours = _as_list(model.predict(arrays if len(arrays) > 1 else arrays[0]))
        expected = torch_outputs(module, args)
        assert len(got) == len(ours) == len(expected)
        for index, (theirs, mine, reference) in enumerate(zip(got, ours, expected)):
            _close(theirs, mine, f"output {index}: onnxruntime vs the imported model")
            _close(theirs, reference, f"output {index}: onnxruntime vs torch")


def test_a_fine_tuned_import_exports_its_trained_weights(tmp_path) -> None:
    module = Recurrent("lstm", 1, False, False)
    model = load(export(module, module.example(2, 5), tmp_path / "m.onnx", dynamo=False))
    x = gometal_inputs(module.example(4, 5, seed=1))
    target = np.random.default_rng(0).standard_normal((4, 5, 8)).astype(np.float32)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.Adam(lr=1e-2))
    for _ in range(3):
        trainer.train_batch(x, target)
    trained = model.predict(x)
    assert not np.allclose(trained, torch_outputs(module, (torch.from_numpy(x),))[0], atol=1e-3)
    path = tmp_path / "tuned.onnx"
    gm.onnx.export(model, path)
    _close(_run(_session(path), [x])[0], trained, "the fine-tuned weights")


ENCODERS = [
    (EncoderModel, False, "batch", False, "relu", False),
    (EncoderModel, False, "batch", True, "gelu", True),
    (EncoderModel, True, "seq", False, "relu", False),
    (EncoderModel, True, "seq", True, "gelu", True),
    (TokenEncoder, True, "seq", False, "relu", True),
]


@pytest.mark.parametrize(
    ("cls", "dynamo", "axes", "norm_first", "activation", "causal"),
    ENCODERS,
    ids=[f"{c.__name__}-{'dynamo' if d else 'torchscript'}-{a}-{act}{'-causal' * causal}"
         for c, d, a, _, act, causal in ENCODERS],
)  # fmt: skip
def test_imported_transformer_encoders_export_again(
    cls, dynamo, axes, norm_first, activation, causal, tmp_path
) -> None:
    module = cls(norm_first, activation, causal)
    model = load(export_encoder(module, tmp_path / "m.onnx", dynamo, axes))
    path = tmp_path / "again.onnx"
    gm.onnx.export(model, path)
    session = _session(path)
    tokens = cls is TokenEncoder
    for batch, length in ((3, 5), (2, 8) if axes == "seq" else (1, 5)):
        x = _inputs(batch, length, seed=length, tokens=tokens)
        ours = model.predict(x)
        theirs = _run(session, [x.astype(np.int32) if tokens else x])[0]
        _close(theirs, ours, "onnxruntime vs the imported model")
        _close(theirs, _torch_predict(module, x), "onnxruntime vs torch")


@pytest.mark.parametrize(
    ("cls", "dynamo"),
    [(MaskedEncoder, True), (CausalMaskedEncoder, False)],
    ids=["padding-dynamo", "causal-padding-torchscript"],
)
def test_imported_encoders_with_a_padding_mask_export_again(cls, dynamo, tmp_path) -> None:
    module = cls(False).eval()
    model = load(export_masked(cls(False), tmp_path / "m.onnx", dynamo))
    path = tmp_path / "again.onnx"
    gm.onnx.export(model, path)
    session = _session(path)
    for batch, length in ((3, 5), (4, 8) if dynamo else (2, 5)):
        x, padding = masked_inputs(batch, length, seed=batch)
        arrays = [x, padding.astype(np.float32)]
        theirs = _run(session, arrays)[0]
        _close(theirs, model.predict(arrays), "onnxruntime vs the imported model")
        with torch.no_grad():
            _close(theirs, masked_torch(module, x, padding).numpy(), "onnxruntime vs torch")


def _recurrence_count(model: gm.Model) -> int:
    g = _core.Graph()
    inputs = model.declare_inputs(g)
    ctx = gm.EmitContext(g, training=False, variables=model.declare_variables(g))
    model.emit(ctx, inputs)
    return sum(g.op_name(node) == "recurrence" for node in range(len(g)))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_y_h_and_y_c_come_from_the_one_recurrence(bidirectional, tmp_path) -> None:
    module = Recurrent("lstm", 2, bidirectional, True)
    model = load(export(module, module.example(2, 5), tmp_path / "m.onnx", dynamo=False))
    directions = 2 if bidirectional else 1
    # Two ONNX LSTM nodes, each read for Y, Y_h and Y_c: one recurrence per direction.
    assert _recurrence_count(model) == 2 * directions
    recurrent = [layer for layer in model.layers if isinstance(layer, gm.layers.LSTM)]
    assert len(recurrent) == 2 and all(layer.return_state for layer in recurrent)
    args = module.example(3, 6, seed=2)
    for mine, reference in zip(model.predict(gometal_inputs(args)), torch_outputs(module, args)):
        _close(mine, reference, "imported LSTM vs torch")
