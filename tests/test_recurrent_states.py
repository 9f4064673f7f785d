"""A recurrent layer's ``emit_with_states``: one recurrence per layer and direction gives the
output sequence and the final states together (what generation's decoder builds on), from
given initial states and lengths: the values and every gradient equal torch's within 1e-5
relative (float64 reference), and the plan holds one recurrence per layer and direction."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal import _core
from recurrent_parity import (
    Config,
    assert_close,
    draw_inputs,
    gometal_layer,
    torch_module,
    torch_run,
    upstreams_for,
)

CONFIGS = [
    Config("lstm", num_layers=2, bidirectional=True, initial_state=True, lengths=True, proj_size=3),
    Config("gru", num_layers=2, initial_state=True, lengths=True),
    Config("rnn_relu", bidirectional=True, initial_state=True),
]
BATCH, STEPS = 4, 5


def _emitted_with_states(config: Config, state_dict, arrays, upstreams):
    """The layer's three results from one emit_with_states, and the gradients of
    sum_k result_k * upstream_k by the engine's autodiff."""
    states = config.directions * config.num_layers
    inputs = {"x": gm.Input((None, config.input_size)), "h0": gm.Input((states, config.out_size))}
    if config.cell == "lstm":
        inputs["c0"] = gm.Input((states, config.hidden_size))
    if config.lengths:
        inputs["lengths"] = gm.Input((1,), dtype="int32")
    layer = gometal_layer(config, "sequence")
    model = gm.Model(list(inputs.values()), layer(list(inputs.values())))
    layer.set_weights({k: v.detach().numpy().astype(np.float32) for k, v in state_dict.items()})
    g = _core.Graph()
    nodes = dict(zip(inputs, model.declare_inputs(g)))
    variables = model.declare_variables(g)
    ctx = gm.EmitContext(g, training=True, variables=variables)
    ctx.scope = layer.name
    lengths = nodes.get("lengths")
    if lengths is not None:
        lengths = g.op("reshape", [lengths], {"shape": [-1]})
    outs = layer.emit_with_states(ctx, nodes["x"], nodes["h0"], nodes.get("c0"), lengths=lengths)
    results = dict(zip(("sequence", "h_n", "c_n"), outs))
    total, upstream_nodes = None, []
    for key in config.outputs:
        up = g.input(f"upstream_{key}", tuple(g.shape(results[key])), "float32")
        upstream_nodes.append(up)
        term = g.op("sum", [g.op("mul", [results[key], up], {})], {"axes": [], "keepdims": False})
        total = term if total is None else g.op("add", [total, term], {})
    float_inputs = [k for k in inputs if k != "lengths"]
    weights = model.trainable_weight_names
    grads = g.gradients(total, [nodes[k] for k in float_inputs] + [variables[n] for n in weights])
    engine = _core.Engine(g, seed=0)
    for name, value in model.get_weights().items():
        engine.set_variable(name, value)
    wanted = [results[k] for k in config.outputs]
    engine.define(
        "f", inputs=[*nodes.values(), *upstream_nodes], outputs=[*wanted, *grads], effects=[]
    )
    values = engine.run("f", [arrays[k] for k in inputs] + [upstreams[k] for k in config.outputs])
    got = dict(zip(config.outputs, values))
    gradients = dict(zip(float_inputs, values[len(wanted) :]))
    for name, grad in zip(weights, values[len(wanted) + len(float_inputs) :]):
        gradients[name.split(".", 1)[1]] = grad
    kernels = engine.describe("f", BATCH, {"seq": STEPS})
    return got, gradients, kernels


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id())
def test_one_recurrence_gives_the_sequence_and_the_final_states(config: Config) -> None:
    module = torch_module(config)
    arrays = draw_inputs(config, BATCH, STEPS, seed=3)
    states = config.directions * config.num_layers
    shapes = {
        "sequence": (BATCH, STEPS, config.directions * config.out_size),
        "h_n": (BATCH, states, config.out_size),
        "c_n": (BATCH, states, config.hidden_size),
    }
    upstreams = upstreams_for({k: shapes[k] for k in config.outputs}, seed=4)
    expected, expected_grads = torch_run(module, config, arrays, upstreams)
    got, got_grads, kernels = _emitted_with_states(config, module.state_dict(), arrays, upstreams)
    for key in config.outputs:
        assert_close(got[key], expected[key], f"{config.id()}: {key}")
    assert sorted(got_grads) == sorted(expected_grads)
    for name, reference in expected_grads.items():
        assert_close(got_grads[name], reference, f"{config.id()}: gradient of {name}")
    forward = [k for k in kernels if k.startswith("recurrence ")]
    assert len(forward) == config.num_layers * config.directions, kernels
