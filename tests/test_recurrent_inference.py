"""An LSTM in inference writes out only what its callers read: with ``output="sequence"``
and no ``return_state`` its recurrences give h alone (no cell state columns, no copy of h
out of them); with ``return_state`` h and c. Either way ``predict`` equals torch's output
and final states within 1e-5 relative (float64 reference): hidden sizes that are and are
not whole vectors, a projection, lengths, a second layer and direction, initial states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from recurrent_parity import Config, assert_close, draw_inputs, gometal_layer, torch_module

CONFIGS = [
    Config("lstm", num_layers=2, input_size=7, hidden_size=16),
    Config("lstm", lengths=True, hidden_size=20),
    Config("lstm", num_layers=2, bidirectional=True, initial_state=True, lengths=True, proj_size=3),
]
BATCH, STEPS = 5, 7


def _torch_outputs(module, config: Config, arrays) -> dict[str, np.ndarray]:
    """torch's sequence (zero at padded steps) and batch-first final states."""
    x = torch.tensor(arrays["x"], dtype=torch.float64)
    initial = None
    if config.initial_state:
        h0, c0 = (
            torch.tensor(arrays[k], dtype=torch.float64).transpose(0, 1).contiguous()
            for k in ("h0", "c0")
        )
        initial = (h0, c0)
    feed = x
    if config.lengths:
        lengths = torch.tensor(arrays["lengths"].reshape(-1), dtype=torch.int64)
        feed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
    with torch.no_grad():
        out, (h_n, c_n) = module(feed, initial)
    if config.lengths:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=x.shape[1]
        )
    return {
        "sequence": out.numpy(),
        "h_n": h_n.transpose(0, 1).numpy(),
        "c_n": c_n.transpose(0, 1).numpy(),
    }


def _predict(config: Config, module, arrays, return_state: bool):
    """gometal's predict of one recurrent layer over `arrays`, with the torch module's weights."""
    inputs = [gm.Input((None, config.input_size))]
    states = config.directions * config.num_layers
    if config.initial_state:
        inputs.append(gm.Input((states, config.out_size)))
        if config.cell == "lstm":
            inputs.append(gm.Input((states, config.hidden_size)))
    if config.lengths:
        inputs.append(gm.Input((1,), dtype="int32"))
    layer = gometal_layer(config, "sequence", return_state=return_state)
    model = gm.Model(inputs=inputs, outputs=layer(inputs))
    layer.set_weights(
        {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    )
    feeds = [arrays[k] for k in ("x", "h0", "c0", "lengths") if k in arrays]
    return model.predict(feeds if len(feeds) > 1 else feeds[0])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id())
def test_predict_matches_torch_with_and_without_the_cell_states(config: Config) -> None:
    module = torch_module(config)
    arrays = draw_inputs(config, BATCH, STEPS, seed=4)
    expected = _torch_outputs(module, config, arrays)
    sequence = _predict(config, module, arrays, return_state=False)
    assert_close(sequence, expected["sequence"], "sequence, h alone out")
    with_states = _predict(config, module, arrays, return_state=True)
    for got, key in zip(with_states, ("sequence", "h_n", "c_n")):
        assert_close(got, expected[key], f"{key}, with return_state")
