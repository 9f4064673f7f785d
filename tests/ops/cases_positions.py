"""positions: the indices 0..T-1 of one axis, T fixed or a run-time symbol ("seq"), with an
optional limit checked when the step runs; gathering a table by them is how a model built for
any sequence length reads its position table (the gradient lands in rows below T only)."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

from .harness import Arg, ErrorCase, ScenarioCase

LIMIT = {"limit": 6, "label": "pos", "message": "sequence length must be at most 6"}


def positions_follow_the_run_time_length(backend, rng):
    g = _core.Graph()
    x = g.input("x", ("batch", "seq", 3))
    ids = g.input("ids", ("batch", "seq"), "int32")
    along_seq = g.op("positions", [x], {"axis": 1})
    from_the_end = g.op("positions", [ids], {"axis": -1})
    along_width = g.op("positions", [x], {"axis": 2})
    assert tuple(g.shape(along_seq)) == (_core.dim_symbol("seq"),)
    assert tuple(g.shape(along_width)) == (3,)
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[x, ids], outputs=[along_seq, from_the_end, along_width])
    for batch, length in [(2, 5), (1, 13), (3, 1), (2, 5)]:
        values = rng.standard_normal((batch, length, 3)).astype(np.float32)
        tokens = rng.integers(0, 9, (batch, length)).astype(np.int32)
        got = engine.run("f", [values, tokens])
        np.testing.assert_array_equal(got[0], np.arange(length))
        np.testing.assert_array_equal(got[1], np.arange(length))
        np.testing.assert_array_equal(got[2], np.arange(3))
        assert np.asarray(got[0]).dtype == np.int32
    assert engine.stats()["plans"] == 3  # one per sequence length


def gathered_rows_get_gradients_below_the_length_only(backend, rng):
    """sum(table[positions(x)] * r) over a (8, 4) table: rows 0..T-1 get r, the rest zero."""
    g = _core.Graph()
    x = g.input("x", ("seq", 4))
    r = g.input("r", ("seq", 4))
    table = g.variable("table", (8, 4))
    rows = g.op("gather", [table, g.op("positions", [x], {"axis": 0})])
    loss = g.op("sum", [g.op("mul", [rows, r])], {"axes": []})
    (grad,) = g.gradients(loss, [table])
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[x, r], outputs=[rows, grad])
    values = rng.standard_normal((8, 4)).astype(np.float32)
    engine.set_variable("table", values)
    for length in (3, 8):
        weights = rng.standard_normal((length, 4)).astype(np.float32)
        got_rows, got_grad = engine.run("f", [np.zeros((length, 4), np.float32), weights])
        np.testing.assert_array_equal(got_rows, values[:length])
        want = np.zeros((8, 4), np.float32)
        want[:length] = weights
        np.testing.assert_allclose(got_grad, want, rtol=1e-6, atol=0)


def a_length_past_the_limit_fails_before_any_effect(backend, rng):
    g = _core.Graph()
    x = g.input("x", ("batch", "seq"), "int32")
    w = g.variable("w", (6,))
    column = g.op("reshape", [w], {"shape": [6, 1]})
    rows = g.op("gather", [column, g.op("positions", [x], {"axis": 1, **LIMIT})])
    total = g.op("sum", [rows], {"axes": []})
    update = g.op("assign", [w, g.op("add", [w, g.constant(1.0)])])
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[x], outputs=[total], effects=[update])
    engine.set_variable("w", np.zeros(6, np.float32))
    (got,) = engine.run("f", [np.zeros((2, 6), np.int32)])  # the limit itself passes
    assert float(got) == 0.0  # w was read before the update
    np.testing.assert_array_equal(engine.get_variable("w"), np.ones(6))
    with pytest.raises(ValueError, match=r"^\[pos\] sequence length must be at most 6, got 7$"):
        engine.run("f", [np.zeros((1, 7), np.int32)])
    np.testing.assert_array_equal(engine.get_variable("w"), np.ones(6))  # unchanged


SCENARIOS = [
    ScenarioCase("positions", "run-time-length", positions_follow_the_run_time_length),
    ScenarioCase("positions", "gather-gradient", gathered_rows_get_gradients_below_the_length_only),
    ScenarioCase("positions", "limit", a_length_past_the_limit_fails_before_any_effect),
]

ERROR_CASES = [
    ErrorCase("positions", (Arg((), leaf="variable"),), patterns=("got a scalar",), name="scalar"),
    ErrorCase("positions", (Arg((2, 3), leaf="variable"),), {"axis": 2}, name="axis"),
    ErrorCase(
        "positions",
        (Arg((2, 3), leaf="variable"),),
        {"axis": 1, "limit": 2, "label": "pos", "message": "at most 2"},
        patterns=(r"axis 1 of \(2, 3\) is longer than the limit 2",),
        name="fixed-too-long",
    ),
    ErrorCase(
        "positions",
        (Arg((2, 3), leaf="variable"),),
        {"axis": 1, "limit": 4},
        patterns=("a limit needs a label",),
        name="unlabelled-limit",
    ),
    ErrorCase(
        "positions",
        (Arg((2, 3), leaf="variable"),),
        {"limit": -1},
        patterns=("limit must be",),
        name="negative-limit",
    ),
]
