"""An LSTM's recurrence on two and three threads (each step's product split by panels of
W_hh, its gate math by rows) against torch's nn.LSTM: training outputs and every gradient,
and inference (the lean form, no saved gates), with padded sequences, reverse directions and
hidden sizes whose panels do not split evenly over the threads.

Hidden sizes are whole panels of the packed W_hh (32 columns with AVX-512, 16 with AVX2):
64 splits evenly over two threads, 96 does not; 17 rows split unevenly too.
"""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal import _core
from recurrent_parity import (
    Config,
    assert_close,
    check_parity,
    draw_inputs,
    gometal_layer,
    thread_counts,
    torch_module,
    torch_run,
    upstreams_for,
)

threads = thread_counts(2, 3)


CONFIGS = [
    Config("lstm", hidden_size=64, input_size=7),
    Config(
        "lstm", hidden_size=64, input_size=7, bidirectional=True, lengths=True, initial_state=True
    ),
    Config("lstm", hidden_size=96, input_size=5, num_layers=2, lengths=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id())
def test_training_form_matches_torch(config: Config, threads: int) -> None:
    check_parity(config, batch=17, steps=6)


def _inference_outputs(config: Config, state_dict, arrays) -> dict[str, np.ndarray]:
    """The layer's outputs from a graph emitted for inference (no gradients, lean recurrence)."""
    inputs = {"x": gm.Input((None, config.input_size))}
    for name in ("h0", "c0"):
        if name in arrays:
            inputs[name] = gm.Input(arrays[name].shape[1:])
    if "lengths" in arrays:
        inputs["lengths"] = gm.Input((1,), dtype="int32")
    layers = {k: gometal_layer(config, k) for k in config.outputs}
    calls = [layers[k](list(inputs.values())) for k in config.outputs]
    model = gm.Model(inputs=list(inputs.values()), outputs=calls)
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in state_dict.items()}
    for layer in layers.values():
        layer.set_weights(weights)
    g = _core.Graph()
    input_ids = model.declare_inputs(g)
    variables = model.declare_variables(g)
    outs = model.emit(gm.EmitContext(g, training=False, variables=variables), input_ids)
    engine = _core.Engine(g, seed=0)
    for name, value in model.get_weights().items():
        engine.set_variable(name, value)
    engine.define("f", inputs=input_ids, outputs=outs, effects=[])
    values = engine.run("f", [arrays[n] for n in inputs])
    return dict(zip(config.outputs, values))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id())
def test_inference_form_matches_torch(config: Config, threads: int) -> None:
    batch, steps = 17, 6
    module = torch_module(config, seed=0)
    arrays = draw_inputs(config, batch, steps, seed=0)
    states = config.directions * config.num_layers
    shapes = {
        "sequence": (batch, steps, config.directions * config.out_size),
        "h_n": (batch, states, config.out_size),
        "c_n": (batch, states, config.hidden_size),
    }
    upstreams = upstreams_for({k: shapes[k] for k in config.outputs}, seed=1)
    expected, _ = torch_run(module, config, arrays, upstreams)
    got = _inference_outputs(config, module.state_dict(), arrays)
    for key in config.outputs:
        assert_close(got[key], expected[key], f"{config.id()} inference: {key}")
