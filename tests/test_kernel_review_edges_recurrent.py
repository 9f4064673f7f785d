"""Edge cases of the recurrence gradient's newer pieces, against torch in float64.

The backward pass packs W_hh (and W_hr) split over the pool's threads: a GRU whose (3H, H)
W_hh passes the split's size with a last panel part padding, at 1, 2 and 3 threads (three
tasks of uneven panels), bidirectional and with lengths, and a projected LSTM (W_hh (4H, P)
split, W_hr (P, H)) from initial states. A layer fed by an embedding table
takes its bias's gradient as the sum of the table's scattered rows: every step reading one
row, a padding_idx row whose embedding takes no gradient while the steps reading it still
feed the biases, and a layer without biases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from recurrent_parity import (
    Config,
    assert_close,
    check_parity,
    gometal_layer,
    thread_counts,
    torch_module,
)

threads = thread_counts(1, 2, 3)

PACKS = [
    Config("gru", input_size=7, hidden_size=150),  # W_hh (450, 150): 67,500 floats
    Config("gru", bidirectional=True, lengths=True, input_size=3, hidden_size=151),
    Config("lstm", proj_size=130, input_size=4, hidden_size=131, initial_state=True),  # (524, 130)
]


@pytest.mark.parametrize("config", PACKS, ids=[c.id() for c in PACKS])
def test_threaded_packs_of_the_recurrent_weights_give_torchs_gradients(config, threads):
    check_parity(config, batch=2, steps=3, seed=threads)


STEPS, EMBED, ROWS = 6, 5, 4

TABLES = [
    (Config("lstm", input_size=EMBED, hidden_size=19, lengths=True), "one row"),
    (Config("gru", input_size=EMBED, hidden_size=17, lengths=True), "padding row"),
    (Config("lstm", input_size=EMBED, hidden_size=18, lengths=True, bias=False), "padding row"),
]


@pytest.mark.parametrize("config, ids_kind", TABLES, ids=[f"{c.id()}-{k}" for c, k in TABLES])
def test_biases_of_a_layer_reading_table_rows_take_every_real_steps_gradient(
    config, ids_kind, threads
):
    module = torch_module(config, seed=5)
    torch.manual_seed(6)
    padding_idx = 2
    embedding = torch.nn.Embedding(ROWS, EMBED, padding_idx=padding_idx).double()
    batch = 3
    if ids_kind == "one row":
        ids = np.full((batch, STEPS), 1, np.int32)
    else:
        ids = np.random.default_rng(threads).integers(0, ROWS, (batch, STEPS)).astype(np.int32)
        ids[:, :2] = padding_idx
    lengths = np.array([STEPS, 3, 1], np.int32)

    token_ids = gm.Input((STEPS,), dtype="int32")
    length_input = gm.Input((1,), dtype="int32")
    table = gm.layers.Embedding(ROWS, EMBED, padding_idx=padding_idx)
    layer = gometal_layer(config, "sequence")
    model = gm.Model([token_ids, length_input], layer([table(token_ids), length_input]))
    table.set_weights({"weight": embedding.weight.detach().numpy().astype(np.float32)})
    layer.set_weights(
        {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    )
    target = (
        np.random.default_rng(7)
        .standard_normal((batch, STEPS, config.hidden_size))
        .astype(np.float32)
    )
    grads = gm.Trainer(model, loss="mse").compute_gradients(
        [ids, lengths.reshape(batch, 1)], target
    )

    feed = torch.nn.utils.rnn.pack_padded_sequence(
        embedding(torch.tensor(ids, dtype=torch.int64)),
        torch.tensor(lengths, dtype=torch.int64),
        batch_first=True,
        enforce_sorted=False,
    )
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(
        module(feed)[0], batch_first=True, total_length=STEPS
    )
    torch.nn.functional.mse_loss(out, torch.from_numpy(target).double()).backward()
    named = [(f".{k}", p) for k, p in module.named_parameters()]
    named.append(("embedding_0.weight", embedding.weight))
    assert sorted(grads) == sorted(k for k in grads if any(k.endswith(s) for s, _ in named))
    for suffix, param in named:
        (key,) = [k for k in grads if k.endswith(suffix)]
        assert_close(grads[key], param.grad.numpy(), f"{key}, {threads} threads")
    if ids_kind == "padding row":
        assert not grads["embedding_0.weight"][padding_idx].any()
