"""An encoder-decoder (seq2seq) model: the encoder LSTM's final states (``return_state=True``)
are the decoder LSTM's initial states. Outputs and every gradient against the same torch
model in float64; the ONNX export, with the states as outputs, against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import gometal as gm
from layer_outputs_support import as_float32, assert_close, model_gradients

SOURCE, TARGET, HIDDEN, VOCAB, LAYERS = 5, 4, 8, 7, 2


class TorchSeq2Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.LSTM(SOURCE, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.decoder = nn.LSTM(TARGET, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, source: torch.Tensor, target: torch.Tensor):
        _, (h, c) = self.encoder(source)
        decoded, _ = self.decoder(target, (h, c))
        return self.head(decoded), h, c


def _models() -> tuple[TorchSeq2Seq, gm.Model]:
    torch.manual_seed(0)
    module = TorchSeq2Seq().double()
    # Each sequence has its own run-time length.
    source = gm.Input(("source_steps", SOURCE), name="source")
    target = gm.Input(("target_steps", TARGET), name="target")
    encoder = gm.layers.LSTM(SOURCE, HIDDEN, num_layers=LAYERS, return_state=True)
    decoder = gm.layers.LSTM(TARGET, HIDDEN, num_layers=LAYERS)
    head = gm.layers.Dense(VOCAB)
    _, h, c = encoder(source)
    logits = head(decoder(target, initial_state=[h, c]))
    model = gm.Model([source, target], [logits, h, c])
    encoder.set_weights(as_float32(module.encoder))
    decoder.set_weights(as_float32(module.decoder))
    head.set_weights(as_float32(module.head))
    return module, model


def _arrays(batch: int, source_steps: int, target_steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.uniform(-1, 1, (batch, source_steps, SOURCE)).astype(np.float32),
        rng.uniform(-1, 1, (batch, target_steps, TARGET)).astype(np.float32),
    ]


@pytest.mark.parametrize("source_steps,target_steps", [(6, 4), (3, 7)])
def test_seq2seq_gives_torchs_outputs_and_gradients(source_steps, target_steps) -> None:
    module, model = _models()
    batch = 3
    arrays = _arrays(batch, source_steps, target_steps, 1)
    rng = np.random.default_rng(2)
    shapes = [(batch, target_steps, VOCAB), (batch, LAYERS, HIDDEN), (batch, LAYERS, HIDDEN)]
    upstreams = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    outs, input_grads, weight_grads = model_gradients(model, arrays, upstreams)

    source, target = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays)
    logits, h, c = module(source, target)
    expected = [logits, h.transpose(0, 1), c.transpose(0, 1)]
    loss = sum(
        (e * torch.tensor(u, dtype=torch.float64)).sum() for e, u in zip(expected, upstreams)
    )
    loss.backward()
    for name, got, want in zip(("logits", "h_n", "c_n"), outs, expected):
        assert_close(got, want.detach().numpy(), name)
    assert_close(input_grads[0], source.grad.numpy(), "gradient of the source")
    assert_close(input_grads[1], target.grad.numpy(), "gradient of the target")
    layer_of = {"encoder": "lstm_0", "decoder": "lstm_1", "head": "dense_0"}
    assert len(weight_grads) == len(list(module.parameters()))
    for name, parameter in module.named_parameters():
        part, local = name.split(".", 1)
        assert_close(weight_grads[f"{layer_of[part]}.{local}"], parameter.grad.numpy(), name)


def test_seq2seq_exports_to_onnx_with_its_states(tmp_path) -> None:
    _, model = _models()
    path = tmp_path / "seq2seq.onnx"
    gm.onnx.export(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(model.output_names)
    assert [o.name for o in session.get_outputs()] == ["dense_0", "lstm_0_h_n", "lstm_0_c_n"]
    # The encoder's LSTM nodes give its final states as their Y_h and Y_c outputs.
    nodes = onnx.load(str(path)).graph.node
    assert sum(n.op_type == "LSTM" and len(n.output) == 3 and all(n.output) for n in nodes) == 2
    for seed, (source_steps, target_steps) in enumerate([(6, 4), (2, 9)]):
        arrays = _arrays(5, source_steps, target_steps, seed)
        got = session.run(None, {"source": arrays[0], "target": arrays[1]})
        for name, ours, theirs in zip(model.output_names, model.predict(arrays), got):
            assert_close(theirs, ours, f"onnxruntime's {name}", rtol=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_states_with_lengths_export(tmp_path, cell) -> None:
    """Y_h and Y_c at each row's last valid step (step 0 in reverse), as torch's."""
    layer_class = {"lstm": gm.layers.LSTM, "gru": gm.layers.GRU}.get(cell, gm.layers.SimpleRNN)
    x = gm.Input((None, SOURCE), name="x")
    lengths = gm.Input((1,), dtype="int32", name="lengths")
    last, *states = layer_class(
        SOURCE,
        HIDDEN,
        num_layers=2,
        bidirectional=True,
        output="last",
        lengths=True,
        return_state=True,
    )([x, lengths])
    model = gm.Model([x, lengths], [last, *states], seed=4)
    path = tmp_path / f"{cell}.onnx"
    gm.onnx.export(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = _arrays(4, 6, 1, 5)[0]
    sizes = np.array([[6], [1], [3], [5]], np.int32)
    got = session.run(None, {"x": xs, "lengths": sizes})
    for ours, theirs in zip(model.predict([xs, sizes]), got):
        assert_close(theirs, ours, "onnxruntime", rtol=1e-4)


def test_seq2seq_trains_as_torch() -> None:
    """20 Adam steps on the decoder's MSE: the encoder learns only through its states."""
    module, model = _models()
    trainer_model = gm.Model(model.inputs, model.outputs[0])
    trainer = gm.Trainer(trainer_model, loss="mse", optimizer=gm.optim.Adam(lr=1e-2))
    reference = torch.optim.Adam(module.parameters(), lr=1e-2)
    rng = np.random.default_rng(5)
    ours, theirs = [], []
    for step in range(20):
        arrays = _arrays(4, 5, 3, step)
        target = rng.standard_normal((4, 3, VOCAB)).astype(np.float32)
        ours.append(trainer.train_batch(arrays, target).loss)
        reference.zero_grad()
        logits, _, _ = module(*(torch.tensor(a, dtype=torch.float64) for a in arrays))
        loss = nn.functional.mse_loss(logits, torch.tensor(target, dtype=torch.float64))
        loss.backward()
        reference.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert theirs[-1] < theirs[0]
