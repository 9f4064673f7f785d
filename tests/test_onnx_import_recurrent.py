"""Import of the ONNX files torch.onnx.export writes for nn.RNN, nn.GRU and nn.LSTM (both
exporters): the nodes become gometal's own recurrent layers, give torch's outputs and final
states within 1e-5, and fine-tune as torch does from the same weights."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal.io.onnx import OnnxImportError, load
from onnx_recurrent_models import (
    EXPORT_BATCH,
    EXPORT_LENGTH,
    VOCAB,
    CharModel,
    Recurrent,
    export,
    gometal_inputs,
    torch_outputs,
)

TOLERANCE = 1e-5
LAYERS = {"lstm": gm.layers.LSTM, "gru": gm.layers.GRU, "rnn": gm.layers.SimpleRNN}


def _check_outputs(model: gm.Model, module: nn.Module, args: tuple) -> None:
    got = model.predict(gometal_inputs(args))
    got = got if isinstance(got, list) else [got]
    expected = torch_outputs(module, args)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs, rtol=TOLERANCE, atol=TOLERANCE)


def _recurrent_layers(model: gm.Model) -> list[gm.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, tuple(LAYERS.values()))]


# torchscript: both shapes at a run-time length; dynamo: the nodes it writes for LSTM and
# GRU (it writes nn.RNN as unrolled steps, refused below), at the export's length.
CASES = [
    (cell, dynamo, layers, bidirectional, states)
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu")
    for dynamo in (False, True)
    for layers, bidirectional, states in ((1, False, False), (2, True, True))
    if not (dynamo and cell.startswith("rnn"))
]


@pytest.mark.parametrize(
    ("cell", "dynamo", "layers", "bidirectional", "states"),
    CASES,
    ids=[
        f"{c}-{'dynamo' if d else 'torchscript'}-{n}{'-bi' if b else ''}{'-states' if s else ''}"
        for c, d, n, b, s in CASES
    ],
)
def test_import_matches_torch(
    cell: str, dynamo: bool, layers: int, bidirectional: bool, states: bool, tmp_path: Path
) -> None:
    module = Recurrent(cell, layers, bidirectional, states)
    example = module.example(EXPORT_BATCH, EXPORT_LENGTH)
    model = load(export(module, example, tmp_path / "m.onnx", dynamo, seq=not dynamo))
    # One gometal recurrent layer per ONNX node (one per torch layer), of the right kind.
    found = _recurrent_layers(model)
    assert len(found) == layers
    assert all(isinstance(layer, LAYERS[cell[:4].rstrip("_")]) for layer in found)
    assert all(layer.bidirectional == bidirectional for layer in found)
    if cell.startswith("rnn"):
        assert {layer.cell for layer in found} == {cell}
    for batch, length in ((3, EXPORT_LENGTH), (1, 9) if not dynamo else (4, EXPORT_LENGTH)):
        _check_outputs(model, module, module.example(batch, length, seed=batch))


def test_dynamo_export_at_a_run_time_length(tmp_path: Path) -> None:
    # torch's dynamo exporter fixes a recurrent layer's length after its first export in a
    # process: this export runs in a fresh one.
    script = (
        "import sys, torch; from pathlib import Path; "
        "from onnx_recurrent_models import Recurrent, export; "
        "m = Recurrent('lstm', 2, True, True); "
        "torch.save(m.state_dict(), sys.argv[1] + '/w.pt'); "
        "export(m, m.example(2, 5), Path(sys.argv[1]) / 'm.onnx', dynamo=True)"
    )
    tests = Path(__file__).resolve().parent
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=tests)
    module = Recurrent("lstm", 2, True, True)
    module.load_state_dict(torch.load(tmp_path / "w.pt"))
    model = load(tmp_path / "m.onnx")
    for batch, length in ((3, 4), (2, 9)):
        _check_outputs(model, module, module.example(batch, length, seed=length))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_char_language_model_imports_and_fine_tunes(dynamo: bool, tmp_path: Path) -> None:
    module = CharModel()
    ids = torch.randint(0, VOCAB, (EXPORT_BATCH, EXPORT_LENGTH))
    model = load(export(CharModel(), (ids,), tmp_path / "m.onnx", dynamo, seq=not dynamo))
    assert len(_recurrent_layers(model)) == 2
    tokens = np.random.default_rng(1).integers(0, VOCAB, (3, EXPORT_LENGTH))
    with torch.no_grad():
        expected = module(torch.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(model.predict(tokens), expected, rtol=TOLERANCE, atol=TOLERANCE)
    # Every torch parameter is a trainable weight of the import.
    trainable = sum(int(np.prod(model.weight_shapes[n])) for n in model.trainable_weight_names)
    assert trainable == sum(p.numel() for p in module.parameters())
    _train(model, module, tokens, "adam" if dynamo else "sgd")


def test_final_states_fine_tune_through_the_layers_weights(tmp_path: Path) -> None:
    # Y, Y_h and Y_c all come from the one layer's weights: the loss on all three trains it.
    module = Recurrent("lstm", 1, True, True)
    example = module.example(EXPORT_BATCH, EXPORT_LENGTH)
    model = load(export(module, example, tmp_path / "m.onnx", dynamo=False))
    trainable = sum(int(np.prod(model.weight_shapes[n])) for n in model.trainable_weight_names)
    assert trainable == sum(p.numel() for p in module.parameters())
    args = module.example(4, EXPORT_LENGTH, seed=3)
    targets = [np.random.default_rng(i).standard_normal(t.shape).astype(np.float32)
               for i, t in enumerate(torch_outputs(module, args))]  # fmt: skip
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.Adam(lr=1e-2))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    for _ in range(3):
        got = trainer.train_batch(gometal_inputs(args), targets).loss
        optimizer.zero_grad()
        outputs = module(*args)
        outputs = [outputs[0]] + [s.transpose(0, 1) for s in outputs[1:]]
        loss = sum(nn.functional.mse_loss(o, torch.from_numpy(t)) for o, t in zip(outputs, targets))
        loss.backward()
        optimizer.step()
        np.testing.assert_allclose(got, loss.item(), rtol=1e-4)


def _train(model: gm.Model, module: nn.Module, tokens: np.ndarray, optimizer: str) -> None:
    """A few steps in gometal and in torch on the same batch: the same losses."""
    y = np.random.default_rng(6).standard_normal((*tokens.shape, VOCAB)).astype(np.float32)
    if optimizer == "adam":
        ours: object = gm.optim.Adam(lr=1e-2)
        theirs: torch.optim.Optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    else:
        ours, theirs = gm.optim.SGD(lr=0.1), torch.optim.SGD(module.parameters(), lr=0.1)
    trainer = gm.Trainer(model, loss="mse", optimizer=ours)
    module.train()
    for _ in range(4):
        got = trainer.train_batch(tokens, y).loss
        theirs.zero_grad()
        loss = nn.functional.mse_loss(module(torch.from_numpy(tokens)), torch.from_numpy(y))
        loss.backward()
        theirs.step()
        np.testing.assert_allclose(got, loss.item(), rtol=1e-4)


def test_dynamo_rnn_is_refused_by_name(tmp_path: Path) -> None:
    # The dynamo exporter writes nn.RNN as one MatMul per step, not an ONNX RNN node.
    module = Recurrent("rnn_tanh", 1, False, False)
    path = export(module, module.example(EXPORT_BATCH, EXPORT_LENGTH), tmp_path / "m.onnx", True)
    with pytest.raises(OnnxImportError, match=r"MatMul node .*zeros of a run-time shape.*RNN"):
        load(path)


def test_a_time_major_model_is_refused_with_what_to_do(tmp_path: Path) -> None:
    # torch's batch_first=False: the model input is (T, N, I), its batch on axis 1.
    module = nn.LSTM(6, 8).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.randn(5, 2, 6),), os.fspath(path), dynamo=False, input_names=["x"],
            dynamic_axes={"x": {0: "seq", 1: "batch"}},
        )  # fmt: skip
    with pytest.raises(OnnxImportError, match=r"LSTM node .*X \('x'\).*batch_first=True"):
        load(path)
