"""Recurrent layers project each step's input inside the time loop (``project_input``): an LSTM's
or plain RNN's recurrence takes x and w_ih and sums ``x_t w_ih^T`` and ``h w_hh^T`` in one
product per step, so no projected sequence is written out and read back. ``predict`` equals
torch's output and final states within 1e-5 relative (float64 reference) at 1, 2 and 3
threads and batches that do and do not split the time loop over them, and gives the same
bits at every thread count. Training through it gives torch's gradients (x's and w_ih's from
the loop's d(xp)); a GRU keeps the projection a product apart."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal import _core
from gometal.nn.layers.recurrent_graph import input_projection
from recurrent_parity import (
    Config,
    assert_close,
    check_parity,
    draw_inputs,
    torch_module,
    torch_run,
)
from test_recurrent_inference import _predict

CONFIGS = [
    Config("rnn_relu", num_layers=2, input_size=9, hidden_size=40, lengths=True),
    Config("rnn_tanh", bidirectional=True, initial_state=True, input_size=3, hidden_size=17),
    Config("lstm", num_layers=2, input_size=9, hidden_size=40, proj_size=21, lengths=True),
]
THREADS = [1, 2, 3]


@pytest.mark.parametrize("batch", [13, 5])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id())
def test_predict_matches_torch_and_is_the_same_bits_at_every_thread_count(config, batch) -> None:
    module = torch_module(config).double()
    arrays = draw_inputs(config, batch, 7, seed=9)
    expected, _ = torch_run(module, config, arrays, {k: np.zeros(()) for k in config.outputs})
    before = gm.get_num_threads()
    runs = []
    try:
        for count in THREADS:
            gm.set_num_threads(count)
            runs.append(_predict(config, module, arrays, return_state=True))
    finally:
        gm.set_num_threads(before)
    for got, key in zip(runs[0], config.outputs):
        assert_close(got, expected[key], key)
    for count, other in zip(THREADS[1:], runs[1:]):
        for got, want, key in zip(other, runs[0], config.outputs):
            np.testing.assert_array_equal(got, want, f"{count} threads: {key}")


def _graph(input_size: int = 5, steps=7):
    g = _core.Graph()
    x = g.input("x", [-1, steps, input_size])
    return g, x, g.variable("weight_ih", [16, input_size])


def test_the_projection_moves_into_the_loop_only_when_asked() -> None:
    g, x, weight = _graph()
    assert input_projection(g, x, weight, in_loop=True) == ([x, weight], {"project_input": True})
    (projected,), attrs = input_projection(g, x, weight, in_loop=False)
    assert g.op_name(projected) == "matmul" and attrs == {}


def test_a_short_embedding_table_is_read_by_id_before_the_loop_projects() -> None:
    g = _core.Graph()
    ids = g.input("ids", [-1, 7], "int32")
    table = g.variable("table", [6, 5])
    weight = g.variable("weight_ih", [16, 5])
    operands, attrs = input_projection(g, g.op("gather", [table, ids]), weight, in_loop=True)
    assert [g.shape(n) for n in operands] == [(6, 16), (-1, 7)] and attrs == {}


@pytest.mark.parametrize(
    "config",
    [
        Config("gru", num_layers=2, input_size=4, hidden_size=6),
        Config("lstm", num_layers=2, input_size=4, hidden_size=6, proj_size=3, lengths=True),
        Config("rnn_tanh", bidirectional=True, initial_state=True, input_size=4, hidden_size=6),
    ],
    ids=lambda c: c.id(),
)
def test_training_through_the_loop_projection_gives_torchs_gradients(config) -> None:
    # A GRU keeps its projection a product apart; the others' gradients of x and w_ih come
    # from the loop's d(xp): outputs and every gradient against torch, at 1 and 2 threads.
    before = gm.get_num_threads()
    try:
        for count in (1, 2):
            gm.set_num_threads(count)
            check_parity(config, batch=9, steps=6)
    finally:
        gm.set_num_threads(before)


def test_the_input_forms_gradients_have_the_shapes_of_x_and_w_ih() -> None:
    g = _core.Graph()
    x, h0 = g.input("x", [-1, 4, 3]), g.input("h0", [-1, 4])
    w_ih, w_hh = g.variable("weight_ih", [4, 3]), g.variable("weight_hh", [4, 4])
    attrs = {"cell": "rnn_tanh", "project_input": True}
    y = g.op("recurrence", [x, w_ih, h0, w_hh], attrs)
    loss = g.op("sum", [y], {"axes": [], "keepdims": False})
    d_x, d_w = g.gradients(loss, [x, w_ih])
    assert g.shape(d_x) == (-1, 4, 3) and g.shape(d_w) == (4, 3)
