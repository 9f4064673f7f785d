"""SimpleRNN, LSTM and GRU against torch's nn.RNN (tanh, relu), nn.LSTM (with and without
proj_size) and nn.GRU: 1 and 2 layers, uni- and bidirectional, with and without initial
states and variable lengths; outputs, final states and every gradient within 1e-5 relative
(references in recurrent_parity.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import gometal as gm
from recurrent_parity import (
    Config,
    assert_close,
    check_parity,
    draw_inputs,
    gometal_layer,
    gometal_runs,
    torch_module,
    torch_run,
    upstreams_for,
)

CELLS = [("rnn_tanh", 0), ("rnn_relu", 0), ("lstm", 0), ("lstm", 3), ("gru", 0)]
GRID = [
    Config(
        cell,
        num_layers=layers,
        bidirectional=bi,
        initial_state=state,
        lengths=lengths,
        proj_size=proj,
    )
    for (cell, proj), layers, bi, (state, lengths) in itertools.product(
        CELLS, (1, 2), (False, True), ((False, False), (True, True))
    )
]
# Initial states without lengths and lengths without initial states, and no biases.
EXTRA = (
    [
        Config(cell, num_layers=2, bidirectional=True, initial_state=True, proj_size=proj)
        for cell, proj in CELLS
    ]
    + [Config(cell, lengths=True, proj_size=proj) for cell, proj in CELLS]
    + [Config(cell, num_layers=2, bias=False, lengths=True, proj_size=proj) for cell, proj in CELLS]
)


@pytest.mark.parametrize("config", GRID + EXTRA, ids=lambda c: c.id())
def test_matches_torch(config: Config) -> None:
    check_parity(config)


def test_matches_torch_at_a_longer_sequence_and_batch() -> None:
    check_parity(
        Config("lstm", num_layers=2, bidirectional=True, lengths=True, hidden_size=20),
        batch=9,
        steps=23,
    )
    check_parity(
        Config("gru", num_layers=2, initial_state=True, input_size=7, hidden_size=33),
        batch=17,
        steps=11,
    )


def test_one_model_runs_several_sequence_lengths() -> None:
    """The sequence length is symbolic: one engine, a plan per length, each equal to torch."""
    config = Config("lstm", num_layers=2, lengths=True)
    module = torch_module(config)
    feeds = []
    for steps in (1, 2, 4, 9):
        arrays = draw_inputs(config, 3, steps, seed=steps)
        shapes = {"sequence": (3, steps, 6), "h_n": (3, 2, 6), "c_n": (3, 2, 6)}
        feeds.append((arrays, upstreams_for(shapes, steps)))
    runs = gometal_runs(config, module.state_dict(), feeds)
    for (arrays, upstreams), (got, got_grads) in zip(feeds, runs):
        steps = arrays["x"].shape[1]
        expected, expected_grads = torch_run(module, config, arrays, upstreams)
        for key in config.outputs:
            assert_close(got[key], expected[key], f"T={steps}: {key}")
        for name, reference in expected_grads.items():
            assert_close(got_grads[name], reference, f"T={steps}: gradient of {name}")


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_last_is_the_last_layers_final_states(cell: str) -> None:
    """output="last" is h_n of the last layer's directions, concatenated: the last valid
    step forward and the first step in reverse."""
    config = Config(cell, num_layers=2, bidirectional=True, lengths=True)
    module = torch_module(config)
    arrays = draw_inputs(config, 4, 6, seed=3)
    expected = torch_final_states(module, config, arrays)
    x = gm.Input((None, config.input_size))
    lengths = gm.Input((1,), dtype="int32")
    layer = gometal_layer(config, "last")
    model = gm.Model(inputs=[x, lengths], outputs=layer([x, lengths]))
    layer.set_weights(
        {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    )
    got = model.predict([arrays["x"], arrays["lengths"]])
    want = np.concatenate([expected[:, -2], expected[:, -1]], axis=1)
    assert_close(got, want, "last")


def torch_final_states(module, config: Config, arrays) -> np.ndarray:
    """torch's h_n, batch-first (N, D*num_layers, H_out)."""
    x = torch.tensor(arrays["x"], dtype=torch.float64)
    lengths = torch.tensor(arrays["lengths"].reshape(-1), dtype=torch.int64)
    with torch.no_grad():
        _, final = module(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    h_n = final[0] if config.cell == "lstm" else final
    return h_n.transpose(0, 1).numpy()


def test_a_key_padding_mask_gives_what_its_lengths_give() -> None:
    config = Config("gru", num_layers=2, lengths=True)
    arrays = draw_inputs(config, 5, 7, seed=4)
    lengths = arrays["lengths"].reshape(-1)
    mask = (np.arange(7)[None, :] >= lengths[:, None]).astype(np.float32)
    x = gm.Input((None, config.input_size))
    by_length, by_mask = gm.Input((1,), dtype="int32"), gm.Input((None,))
    first = gometal_layer(config, "sequence")
    second = gometal_layer(Config("gru", num_layers=2), "sequence", key_padding_mask=True)
    model = gm.Model(
        inputs=[x, by_length, by_mask], outputs=[first([x, by_length]), second([x, by_mask])]
    )
    second.set_weights(first.get_weights())
    with_lengths, with_mask = model.predict([arrays["x"], arrays["lengths"], mask])
    np.testing.assert_array_equal(with_mask, with_lengths)
    assert np.all(with_lengths[np.arange(7)[None, :] >= lengths[:, None]] == 0.0)


@pytest.mark.parametrize("cell, proj", CELLS)
def test_a_torch_state_dict_loads_one_to_one(cell: str, proj: int) -> None:
    """Same names, shapes and order as torch's parameters; init U(-1/sqrt(H), 1/sqrt(H))."""
    config = Config(cell, num_layers=2, bidirectional=True, proj_size=proj, hidden_size=16)
    module = torch_module(config)
    layer = gometal_layer(config, "sequence")
    layer(gm.Input((None, config.input_size)))
    names = [spec.name for spec in layer.weight_specs]
    assert names == [name for name, _ in module.named_parameters()]
    assert [spec.shape for spec in layer.weight_specs] == [
        tuple(p.shape) for p in module.parameters()
    ]
    bound = 1.0 / np.sqrt(16)
    for spec in layer.weight_specs:
        assert repr(spec.initializer) == f"Uniform(bound={bound:g})", spec.name


def test_a_model_of_every_recurrent_layer_saves_and_loads(tmp_path) -> None:
    """Each layer rebuilds from its config with its weights: the loaded model predicts the same."""
    x, lengths = gm.Input((None, 5)), gm.Input((1,), dtype="int32")
    h = gm.layers.SimpleRNN(5, 6, nonlinearity="relu", lengths=True, name="rnn")([x, lengths])
    h = gm.layers.GRU(6, 4, bidirectional=True, num_layers=2, dropout=0.25)(h)
    out = gm.layers.LSTM(8, 7, proj_size=3, output="last")(h)
    model = gm.Model([x, lengths], out, seed=3)
    arrays = draw_inputs(Config("rnn_relu", lengths=True), 4, 6, seed=0)
    expected = model.predict([arrays["x"], arrays["lengths"]])
    model.save(tmp_path / "recurrent.gmz")
    loaded = gm.load_model(tmp_path / "recurrent.gmz")
    np.testing.assert_array_equal(loaded.predict([arrays["x"], arrays["lengths"]]), expected)
    assert [c.layer.get_config() for c in loaded.graph.calls] == [
        c.layer.get_config() for c in model.graph.calls
    ]


def test_dropout_between_layers_acts_in_training_only() -> None:
    """Inference ignores dropout; a training step with it differs from one without."""
    config = Config("lstm", num_layers=2)
    module = torch_module(config)
    arrays = draw_inputs(config, 3, 5, seed=1)
    outputs = []
    for rate in (0.0, 0.5):
        x = gm.Input((None, config.input_size))
        layer = gometal_layer(config, "sequence", dropout=rate)
        model = gm.Model(x, layer(x), seed=0)
        layer.set_weights(
            {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
        )
        trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.0))
        target = np.zeros((3, 5, 6), np.float32)
        outputs.append((model.predict(arrays["x"]), trainer.train_batch(arrays["x"], target).loss))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    assert outputs[0][1] != outputs[1][1]
