"""PositionalEmbedding with a run-time sequence length (``gm.Input((None,))``): one model
runs at any T <= max_length and gives torch's outputs and gradients (same weights; the
reference indexes its position table by ``arange(T)``, as nanoGPT does), trains only the
rows below T, refuses a longer T by name without changing anything, saves and loads with
the symbolic length, and exports to ONNX (onnxruntime within 1e-4 at two lengths)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import gometal as gm
from gometal import layers as L

VOCAB, WIDTH, HEADS, FEEDFORWARD, MAX_LENGTH = 19, 16, 4, 24, 16
LENGTHS = (5, 13)


def build(kind: str) -> gm.Model:
    ids = gm.Input((None,), dtype="int32")
    h = L.Embedding(VOCAB, WIDTH, name="tok")(ids)
    h = L.PositionalEmbedding(MAX_LENGTH, WIDTH, kind=kind, name="pos")(h)
    h = L.TransformerEncoder(
        2,
        WIDTH,
        HEADS,
        dim_feedforward=FEEDFORWARD,
        dropout=0.0,
        norm_first=True,
        causal=True,
        name="enc",
    )(h)
    return gm.Model(ids, L.Dense(VOCAB, name="head")(h))


class TorchReference(nn.Module):
    """nn.Embedding + a position table read at arange(T) + a causal pre-norm encoder + Linear."""

    def __init__(self, table: np.ndarray, learned: bool):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, WIDTH)
        if learned:
            self.pos = nn.Parameter(torch.from_numpy(table.copy()))
        else:
            self.register_buffer("pos", torch.from_numpy(table.copy()))
        block = nn.TransformerEncoderLayer(
            WIDTH, HEADS, FEEDFORWARD, dropout=0.0, batch_first=True, norm_first=True
        )
        self.enc = nn.TransformerEncoder(block, 2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        h = self.tok(ids) + self.pos[torch.arange(length)]
        mask = nn.Transformer.generate_square_subsequent_mask(length)
        return self.head(self.enc(h, mask=mask, is_causal=True))


def sinusoids(rows: int, dim: int) -> np.ndarray:
    """The "Attention is all you need" table, written out independently of the layer."""
    table = np.zeros((rows, dim))
    for pos in range(rows):
        for i in range(0, dim, 2):
            angle = pos / 10000 ** (i / dim)
            table[pos, i] = np.sin(angle)
            if i + 1 < dim:
                table[pos, i + 1] = np.cos(angle)
    return table.astype(np.float32)


def matched_pair(kind: str) -> tuple[gm.Model, TorchReference]:
    torch.manual_seed(0)
    learned = kind == "learned"
    table = (
        np.random.default_rng(1).normal(0, 0.5, (MAX_LENGTH, WIDTH)).astype(np.float32)
        if learned
        else sinusoids(MAX_LENGTH, WIDTH)
    )
    reference = TorchReference(table, learned)
    model = build(kind)
    state = {}
    for key, value in reference.state_dict().items():
        name = "pos.weight" if key == "pos" else key
        state[name] = value.detach().numpy().copy()
    if not learned:
        del state["pos.weight"]
    assert set(state) == set(model.weight_shapes), (sorted(state), sorted(model.weight_shapes))
    model.set_weights(state)
    return model, reference


def token_ids(batch: int, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_one_model_matches_torch_at_two_lengths(kind):
    model, reference = matched_pair(kind)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1))
    for length in LENGTHS:
        ids = token_ids(3, length, seed=length)
        torch_ids = torch.from_numpy(ids.astype(np.int64))
        expected = reference(torch_ids)
        got = model.predict(ids)
        np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
        target = np.random.default_rng(7).standard_normal(got.shape).astype(np.float32)
        grads = trainer.compute_gradients(ids, target)
        reference.zero_grad()
        nn.functional.mse_loss(expected, torch.from_numpy(target)).backward()
        for key, param in reference.named_parameters():
            name = "pos.weight" if key == "pos" else key
            np.testing.assert_allclose(
                grads[name], param.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{key} T={length}"
            )
        if kind == "learned":
            assert not grads["pos.weight"][length:].any()


def test_training_steps_at_two_lengths_update_only_the_rows_below_t():
    model, _ = matched_pair("learned")
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.5))
    before = model.get_weights()["pos.weight"].copy()
    for length in (4, 9):
        target = np.random.default_rng(length).standard_normal((2, length, VOCAB))
        trainer.train_batch(token_ids(2, length, seed=length), target.astype(np.float32))
        after = model.get_weights()["pos.weight"]
        np.testing.assert_array_equal(after[length:], before[length:])
        assert (np.abs(after[:length] - before[:length]).max(axis=1) > 0).all()
        before = after.copy()


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_a_sequence_longer_than_max_length_is_refused_by_name_and_changes_nothing(kind):
    model, _ = matched_pair(kind)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.5))
    message = r"PositionalEmbedding 'pos'\] sequence length must be at most max_length 16, got 17"
    too_long = token_ids(2, MAX_LENGTH + 1, seed=3)
    with pytest.raises(ValueError, match=message):
        model.predict(too_long)
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        trainer.train_batch(too_long, np.zeros((2, MAX_LENGTH + 1, VOCAB), np.float32))
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert trainer.step == 0
    # max_length itself runs.
    assert model.predict(token_ids(1, MAX_LENGTH, seed=4)).shape == (1, MAX_LENGTH, VOCAB)


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_save_and_load_keep_the_run_time_length(kind, tmp_path):
    model, _ = matched_pair(kind)
    model.save(tmp_path / "model.safetensors")
    loaded = gm.load_model(tmp_path / "model.safetensors")
    for length in LENGTHS:
        ids = token_ids(2, length, seed=length)
        np.testing.assert_array_equal(loaded.predict(ids), model.predict(ids))
    with pytest.raises(ValueError, match="max_length 16, got 17"):
        loaded.predict(token_ids(1, MAX_LENGTH + 1, seed=5))


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_onnx_export_runs_at_two_lengths_in_onnxruntime(kind, tmp_path):
    model, _ = matched_pair(kind)
    path = tmp_path / "model.onnx"
    model.export_onnx(path, opset=17)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    length_dim = proto.graph.input[0].type.tensor_type.shape.dim[1]
    assert length_dim.dim_param and not length_dim.dim_value  # a symbolic length
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    for length in LENGTHS:
        ids = token_ids(2, length, seed=length)
        (got,) = session.run(None, {feed.name: ids})
        np.testing.assert_allclose(got, model.predict(ids), rtol=0, atol=1e-4)
