"""A recurrent layer fed by an Embedding: when the table has no more rows than two sequences
have steps, the first layer projects the table and its recurrence reads each step's row of
it by the token ids instead of a projection of every step (``input_projection``).
``predict`` equals torch's nn.Embedding followed by nn.LSTM, nn.GRU or nn.RNN within 1e-5
relative (float64 reference), on both sides of that rule, with a padding row, and for a
second layer and direction; training's gradients match torch's on both sides of the rule,
the padding row's included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from gometal import _core
from gometal.nn.layers.recurrent_graph import input_projection
from recurrent_parity import Config, assert_close, gometal_layer, torch_module

BATCH, STEPS, EMBED = 3, 9, 5


def _torch_logits(embedding, module, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out, _ = module(embedding(torch.tensor(ids, dtype=torch.int64)))
    return out.numpy()


def _embedded_model(config: Config, rows: int, padding_idx, embedding, module, steps):
    ids = gm.Input((steps,), dtype="int32")
    table = gm.layers.Embedding(rows, EMBED, padding_idx=padding_idx)
    layer = gometal_layer(config, "sequence")
    model = gm.Model(ids, layer(table(ids)))
    table.set_weights({"weight": embedding.weight.detach().numpy().astype(np.float32)})
    layer.set_weights(
        {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    )
    return model


def _torch_pair(config: Config, rows: int, padding_idx):
    module = torch_module(config).double()
    torch.manual_seed(1)
    embedding = torch.nn.Embedding(rows, EMBED, padding_idx=padding_idx).double()
    return embedding, module


CASES = [
    # (config, table rows, padding_idx): 6, 12 and 18 rows project the table (9 steps), 19 do not.
    (Config("lstm", num_layers=2, input_size=EMBED, hidden_size=16), 6, None),
    (Config("lstm", input_size=EMBED, hidden_size=20, proj_size=7), 18, 2),
    (Config("gru", bidirectional=True, input_size=EMBED, hidden_size=8), 6, None),
    (Config("rnn_tanh", num_layers=2, input_size=EMBED, hidden_size=8), 12, None),
    (Config("lstm", bidirectional=True, num_layers=2, input_size=EMBED, hidden_size=8), 19, 0),
]


@pytest.mark.parametrize(
    "config,rows,padding_idx", CASES, ids=[f"{c.id()}-V{r}-pad{p}" for c, r, p in CASES]
)
def test_predict_of_an_embedded_sequence_matches_torch(config, rows, padding_idx) -> None:
    embedding, module = _torch_pair(config, rows, padding_idx)
    ids = np.random.default_rng(3).integers(0, rows, size=(BATCH, STEPS)).astype(np.int32)
    ids[0, :3] = rows - 1  # the last row of the table too
    model = _embedded_model(config, rows, padding_idx, embedding, module, STEPS)
    assert_close(model.predict(ids), _torch_logits(embedding, module, ids), "sequence")


def test_an_unknown_sequence_length_gives_the_same_outputs() -> None:
    # (None,) steps: the rule cannot tell the table from the sequence and keeps the product.
    config = Config("lstm", input_size=EMBED, hidden_size=8)
    embedding, module = _torch_pair(config, 4, None)
    ids = np.random.default_rng(5).integers(0, 4, size=(BATCH, STEPS)).astype(np.int32)
    model = _embedded_model(config, 4, None, embedding, module, None)
    assert_close(model.predict(ids), _torch_logits(embedding, module, ids), "sequence")


def _graph_with_lookup(rows: int, steps) -> tuple[_core.Graph, int, int]:
    g = _core.Graph()
    ids = g.input("ids", [-1, steps], "int32")
    table = g.variable("table", [rows, EMBED])
    weight = g.variable("weight_ih", [16, EMBED])
    return g, g.op("gather", [table, ids]), weight


@pytest.mark.parametrize(
    "rows,steps,table",
    [
        (18, 9, True),  # as many rows as two sequences have steps: the table's product, the ids
        (19, 9, False),  # more rows
        (4, "seq", False),  # a symbolic length
    ],
)
def test_the_table_is_projected_only_when_it_is_no_longer_than_two_sequences(
    rows, steps, table
) -> None:
    g, x, weight = _graph_with_lookup(rows, steps)
    operands, attrs = input_projection(g, x, weight, in_loop=False)
    assert attrs == {}
    if table:
        assert [g.shape(n) for n in operands] == [(rows, 16), (-1, steps)]
        assert g.dtype(operands[1]) == "int32"
    else:
        assert len(operands) == 1 and g.shape(operands[0])[-1] == 16


def test_a_plain_input_keeps_the_product() -> None:
    g = _core.Graph()
    x = g.input("x", [-1, 9, EMBED])
    (projected,), attrs = input_projection(g, x, g.variable("weight_ih", [16, EMBED]), False)
    assert g.op_name(projected) == "matmul" and attrs == {}


def test_an_id_outside_the_table_raises_naming_it() -> None:
    config = Config("lstm", input_size=EMBED, hidden_size=8)
    embedding, module = _torch_pair(config, 6, None)
    model = _embedded_model(config, 6, None, embedding, module, STEPS)
    ids = np.zeros((BATCH, STEPS), np.int32)
    ids[1, 4] = 6
    with pytest.raises(
        ValueError, match=r"ids must lie in \[0, V\) with V = 6 .*got 6 at \(1, 4\)"
    ):
        model.predict(ids)


TRAINING_CASES = [
    # (config, table rows, padding_idx): 6 and 18 rows project the table (9 steps), 19 do not.
    (Config("lstm", input_size=EMBED, hidden_size=8), 6, None),
    (Config("lstm", num_layers=2, input_size=EMBED, hidden_size=8), 18, 3),
    (Config("gru", bidirectional=True, input_size=EMBED, hidden_size=8), 6, 0),
    (Config("lstm", input_size=EMBED, hidden_size=8), 19, None),
]


@pytest.mark.parametrize(
    "config,rows,padding_idx",
    TRAINING_CASES,
    ids=[f"{c.id()}-V{r}-pad{p}" for c, r, p in TRAINING_CASES],
)
def test_training_an_embedded_layer_gives_torchs_gradients(config, rows, padding_idx) -> None:
    # One SGD step on the mean squared output: the weights after it carry every gradient.
    embedding, module = _torch_pair(config, rows, padding_idx)
    ids = np.random.default_rng(7).integers(0, rows, size=(BATCH, STEPS)).astype(np.int32)
    ids[1, :4] = padding_idx if padding_idx is not None else rows - 1
    model = _embedded_model(config, rows, padding_idx, embedding, module, STEPS)
    lr = 0.5
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=lr))
    width = config.directions * config.out_size
    trainer.train_batch(ids, np.zeros((BATCH, STEPS, width), np.float32))
    out, _ = module(embedding(torch.tensor(ids, dtype=torch.int64)))
    (out**2).mean().backward()
    weights = model.get_weights()
    named = [(f".{k}", p) for k, p in module.named_parameters()] + [
        ("embedding_0.weight", embedding.weight)
    ]
    for suffix, param in named:
        (key,) = [k for k in weights if k.endswith(suffix)]
        assert_close(weights[key], (param - lr * param.grad).detach().numpy(), key)
