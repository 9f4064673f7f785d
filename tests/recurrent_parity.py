"""gometal's recurrent layers beside torch's nn.RNN, nn.LSTM and nn.GRU holding the same
weights: outputs, final states and the gradients of the inputs, initial states and every
weight. Variable lengths run through torch's pack_padded_sequence / pad_packed_sequence.

The gometal side builds one model whose outputs are the same layer's sequence, h_n and
(LSTM) c_n, each from a layer object loaded with torch's state_dict; the engine's autodiff
gives d(sum_k out_k * upstream_k) for every input and weight, and a weight's gradient is the
sum over those layer objects. torch runs in float64, the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gometal as gm
from gometal import _core
from gometal.layers import GRU, LSTM, SimpleRNN


def thread_counts(*counts: int):
    """A fixture that runs each test using it at every one of ``counts`` engine threads,
    putting the previous count back after it.

    Example:
        >>> threads = thread_counts(1, 2)  # at a test module's top level  # doctest: +SKIP
    """

    @pytest.fixture(params=counts, ids=[f"{c}-thread{'s' if c > 1 else ''}" for c in counts])
    def threads(request):
        before = gm.get_num_threads()
        gm.set_num_threads(request.param)
        yield request.param
        gm.set_num_threads(before)

    return threads


@dataclass(frozen=True)
class Config:
    cell: str  # "rnn_tanh", "rnn_relu", "lstm", "gru"
    num_layers: int = 1
    bidirectional: bool = False
    initial_state: bool = False
    lengths: bool = False
    proj_size: int = 0
    input_size: int = 5
    hidden_size: int = 6
    bias: bool = True

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        return self.proj_size or self.hidden_size

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("sequence", "h_n", "c_n") if self.cell == "lstm" else ("sequence", "h_n")

    def id(self) -> str:
        parts = [self.cell, f"L{self.num_layers}"]
        parts += ["bi"] if self.bidirectional else []
        parts += ["h0"] if self.initial_state else []
        parts += ["lengths"] if self.lengths else []
        parts += [f"proj{self.proj_size}"] if self.proj_size else []
        parts += ["nobias"] if not self.bias else []
        return "-".join(parts)


def torch_module(config: Config, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    common = {
        "num_layers": config.num_layers,
        "bias": config.bias,
        "batch_first": True,
        "bidirectional": config.bidirectional,
    }
    if config.cell == "lstm":
        module = nn.LSTM(
            config.input_size, config.hidden_size, proj_size=config.proj_size, **common
        )
    elif config.cell == "gru":
        module = nn.GRU(config.input_size, config.hidden_size, **common)
    else:
        module = nn.RNN(
            config.input_size, config.hidden_size, nonlinearity=config.cell[4:], **common
        )
    return module.double()


def gometal_layer(config: Config, output: str, **options) -> gm.layers.Layer:
    common = {
        "num_layers": config.num_layers,
        "bias": config.bias,
        "bidirectional": config.bidirectional,
        "initial_state": config.initial_state,
        "lengths": config.lengths,
        "output": output,
        **options,
    }
    if config.cell == "lstm":
        return LSTM(config.input_size, config.hidden_size, proj_size=config.proj_size, **common)
    if config.cell == "gru":
        return GRU(config.input_size, config.hidden_size, **common)
    return SimpleRNN(config.input_size, config.hidden_size, nonlinearity=config.cell[4:], **common)


def draw_inputs(config: Config, batch: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """x, and as the config takes them h0, c0 (batch-first) and lengths (N, 1) in [1, T]."""
    rng = np.random.default_rng(seed)
    states = config.directions * config.num_layers
    arrays = {"x": rng.uniform(-1, 1, (batch, steps, config.input_size)).astype(np.float32)}
    if config.initial_state:
        arrays["h0"] = rng.uniform(-1, 1, (batch, states, config.out_size)).astype(np.float32)
        if config.cell == "lstm":
            arrays["c0"] = rng.uniform(-1, 1, (batch, states, config.hidden_size)).astype(
                np.float32
            )
    if config.lengths:
        lengths = rng.integers(1, steps + 1, batch)
        lengths[0], lengths[-1] = steps, 1  # the longest and the shortest, unsorted
        arrays["lengths"] = lengths.astype(np.int32).reshape(batch, 1)
    return arrays


def torch_run(module: nn.Module, config: Config, arrays, upstreams):
    """torch's outputs (batch-first states) and the gradients of every float input and
    parameter, as float64 arrays."""
    module.zero_grad()
    x = torch.tensor(arrays["x"], dtype=torch.float64, requires_grad=True)
    states = {}
    for name in ("h0", "c0"):
        if name in arrays:
            value = torch.tensor(arrays[name], dtype=torch.float64).transpose(0, 1).contiguous()
            states[name] = value.requires_grad_(True)
    steps = x.shape[1]
    feed = x
    if "lengths" in arrays:
        lengths = torch.tensor(arrays["lengths"].reshape(-1), dtype=torch.int64)
        feed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    initial = None
    if states:
        initial = (states["h0"], states["c0"]) if config.cell == "lstm" else states["h0"]
    out, final = module(feed, initial)
    if "lengths" in arrays:
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
    h_n, c_n = final if config.cell == "lstm" else (final, None)
    results = {
        "sequence": out,
        "h_n": h_n.transpose(0, 1),
        "c_n": None if c_n is None else c_n.transpose(0, 1),
    }
    loss = sum(
        (results[k] * torch.tensor(upstreams[k], dtype=torch.float64)).sum() for k in config.outputs
    )
    loss.backward()
    grads = {"x": x.grad.numpy()}
    for name, value in states.items():
        grads[name] = value.grad.transpose(0, 1).numpy()
    for name, param in module.named_parameters():
        grads[name] = param.grad.numpy()
    return {k: results[k].detach().numpy() for k in config.outputs}, grads


def gometal_run(config: Config, state_dict, arrays, upstreams):
    """The same through one gometal model with an output per entry of config.outputs."""
    return gometal_runs(config, state_dict, [(arrays, upstreams)])[0]


def gometal_runs(config: Config, state_dict, feeds):
    """gometal_run over several (arrays, upstreams) pairs, through one engine whose sequence
    length is symbolic: one plan per length."""
    arrays = feeds[0][0]
    inputs = {"x": gm.Input((None, config.input_size))}
    for name in ("h0", "c0"):
        if name in arrays:
            inputs[name] = gm.Input(arrays[name].shape[1:])
    if "lengths" in arrays:
        inputs["lengths"] = gm.Input((1,), dtype="int32")
    layers = {k: gometal_layer(config, k) for k in config.outputs}
    calls = [layers[k](list(inputs.values())) for k in config.outputs]
    model = gm.Model(inputs=list(inputs.values()), outputs=calls)
    for layer in layers.values():
        layer.set_weights({k: v.detach().numpy().astype(np.float32) for k, v in state_dict.items()})
    g = _core.Graph()
    input_ids = model.declare_inputs(g)
    variables = model.declare_variables(g)
    ctx = gm.EmitContext(g, training=True, variables=variables)
    outs = model.emit(ctx, input_ids)
    total, upstream_ids = None, []
    for out in outs:
        up = g.input(f"upstream_{len(upstream_ids)}", tuple(g.shape(out)), "float32")
        upstream_ids.append(up)
        term = g.op("sum", [g.op("mul", [out, up], {})], {"axes": [], "keepdims": False})
        total = term if total is None else g.op("add", [total, term], {})
    float_inputs = [(n, i) for n, i in zip(inputs, input_ids) if n != "lengths"]
    weight_names = model.trainable_weight_names
    grads = g.gradients(total, [i for _, i in float_inputs] + [variables[n] for n in weight_names])
    engine = _core.Engine(g, seed=0)
    for name, value in model.get_weights().items():
        engine.set_variable(name, value)
    engine.define("f", inputs=[*input_ids, *upstream_ids], outputs=[*outs, *grads], effects=[])
    runs = []
    for arrays, upstreams in feeds:
        values = engine.run(
            "f", [arrays[n] for n in inputs] + [upstreams[k] for k in config.outputs]
        )
        results = dict(zip(config.outputs, values[: len(outs)]))
        rest = values[len(outs) :]
        gradients = {n: rest[i] for i, (n, _) in enumerate(float_inputs)}
        weight_grads = rest[len(float_inputs) :]
        for name, grad in zip(weight_names, weight_grads):
            short = name.split(".", 1)[1]
            gradients[short] = gradients.get(short, 0) + grad
        runs.append((results, gradients))
    return runs


def upstreams_for(results_shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in results_shapes.items()}


def assert_close(actual, expected, what: str, rtol: float = 1e-5) -> None:
    """Equal within ``rtol`` relative to the tensor's largest value."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def check_parity(config: Config, batch: int = 4, steps: int = 5, seed: int = 0) -> None:
    """Outputs, final states and every gradient of gometal's layer against torch's."""
    module = torch_module(config, seed)
    arrays = draw_inputs(config, batch, steps, seed)
    states = config.directions * config.num_layers
    shapes = {
        "sequence": (batch, steps, config.directions * config.out_size),
        "h_n": (batch, states, config.out_size),
        "c_n": (batch, states, config.hidden_size),
    }
    upstreams = upstreams_for({k: shapes[k] for k in config.outputs}, seed + 1)
    expected, expected_grads = torch_run(module, config, arrays, upstreams)
    got, got_grads = gometal_run(config, module.state_dict(), arrays, upstreams)
    for key in config.outputs:
        assert_close(got[key], expected[key], f"{config.id()}: {key}")
    assert sorted(got_grads) == sorted(expected_grads)
    for name, reference in expected_grads.items():
        assert_close(got_grads[name], reference, f"{config.id()}: gradient of {name}")
