"""Training a recurrent layer fed by a short embedding table (the recurrence reads the
table's projected rows by token id) with variable lengths: the bias's gradient is the sum
of the table's scattered rows, so padded steps, whose rows take no gradient, must add
nothing to it. Every gradient after one SGD step, the embedding's and both biases'
included, matches torch's nn.Embedding then a packed nn.LSTM / nn.GRU / nn.RNN (float64)
within 1e-5 relative, at batch 1 and 5, a hidden size that is not a multiple of 16, and
1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gometal as gm
from recurrent_parity import Config, assert_close, gometal_layer, thread_counts, torch_module

STEPS, EMBED, ROWS = 7, 5, 6  # 6 rows <= 2 x 7 steps: the layer reads the table's rows


threads = thread_counts(1, 2)


def _lengths(batch: int) -> np.ndarray:
    lengths = np.random.default_rng(batch).integers(1, STEPS + 1, batch)
    lengths[0] = 3 if batch == 1 else STEPS  # a single sequence padded, or the longest first
    if batch > 1:
        lengths[-1] = 1
    return lengths.astype(np.int32)


CASES = [
    Config("lstm", input_size=EMBED, hidden_size=21, lengths=True),
    Config("lstm", num_layers=2, input_size=EMBED, hidden_size=18, lengths=True),
    Config("gru", input_size=EMBED, hidden_size=19, lengths=True),
    Config("rnn_tanh", bidirectional=True, input_size=EMBED, hidden_size=17, lengths=True),
]


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("config", CASES, ids=[c.id() for c in CASES])
def test_table_rows_and_biases_take_torchs_gradients_with_lengths(config, batch, threads) -> None:
    module = torch_module(config, seed=2)
    torch.manual_seed(3)
    embedding = torch.nn.Embedding(ROWS, EMBED).double()
    ids = np.random.default_rng(11).integers(0, ROWS, size=(batch, STEPS)).astype(np.int32)
    lengths = _lengths(batch)

    token_ids = gm.Input((STEPS,), dtype="int32")
    length_input = gm.Input((1,), dtype="int32")
    table = gm.layers.Embedding(ROWS, EMBED)
    layer = gometal_layer(config, "sequence")
    model = gm.Model([token_ids, length_input], layer([table(token_ids), length_input]))
    table.set_weights({"weight": embedding.weight.detach().numpy().astype(np.float32)})
    layer.set_weights(
        {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    )
    lr = 0.5
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=lr))
    width = config.directions * config.out_size
    trainer.train_batch(
        [ids, lengths.reshape(batch, 1)], np.zeros((batch, STEPS, width), np.float32)
    )

    feed = pack_padded_sequence(
        embedding(torch.tensor(ids, dtype=torch.int64)),
        torch.tensor(lengths, dtype=torch.int64),
        batch_first=True,
        enforce_sorted=False,
    )
    out, _ = pad_packed_sequence(module(feed)[0], batch_first=True, total_length=STEPS)
    (out**2).mean().backward()
    weights = model.get_weights()
    named = [(f".{k}", p) for k, p in module.named_parameters()]
    named.append(("embedding_0.weight", embedding.weight))
    for suffix, param in named:
        (key,) = [k for k in weights if k.endswith(suffix)]
        expected = (param - lr * param.grad).detach().numpy()
        assert_close(weights[key], expected, f"{key} at batch {batch}, {threads} threads")
