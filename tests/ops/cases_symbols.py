"""Symbolic dims beyond the batch: a named symbol (here "seq") takes its size from the inputs
at each run, a plan is compiled per binding of the symbols, and a shorter last sequence (or
batch) just works; sizes that disagree, and reshapes or slices the symbols do not allow, are
refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

from .harness import ScenarioCase


def _sequence_graph():
    """(batch, seq, 4) -> times a weight, split into 2 heads of 2, transposed, averaged over the
    sequence; and the weight's gradient."""
    g = _core.Graph()
    x = g.input("x", ("batch", "seq", 4))
    w = g.variable("w", (4,))
    y = g.op("mul", [x, w])
    heads = g.op("reshape", [y], {"shape": [-1, _core.dim_symbol("seq"), 2, 2]})
    swapped = g.op("transpose", [heads], {"perm": [0, 2, 1, 3]})  # (batch, 2, seq, 2)
    pooled = g.op("mean", [swapped], {"axes": [2]})  # (batch, 2, 2)
    loss = g.op("sum", [g.op("square", [pooled])], {"axes": []})
    (grad,) = g.gradients(loss, [w])
    return g, x, pooled, grad


def _reference(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b, t, _ = x.shape
    pooled = (x * w).reshape(b, t, 2, 2).transpose(0, 2, 1, 3).mean(axis=2)
    # d/dw sum(pooled^2): pooled[b,h,j] = mean_t x[b,t,2h+j] w[2h+j]
    grad = (2 * pooled.reshape(b, 4) * x.mean(axis=1)).sum(axis=0)
    return pooled, grad


def a_plan_per_binding_and_shorter_sequences_work(backend, rng):
    g, x, pooled, grad = _sequence_graph()
    assert g.shape(x) == (-1, _core.dim_symbol("seq"), 4)
    assert _core.symbol_name(g.shape(x)[1]) == "seq"
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[x], outputs=[pooled, grad])
    w = rng.standard_normal(4).astype(np.float32)
    engine.set_variable("w", w)
    for batch, seq in [(3, 8), (3, 8), (3, 5), (2, 8), (1, 1)]:
        value = rng.standard_normal((batch, seq, 4)).astype(np.float32)
        got_pooled, got_grad = engine.run("f", [value])
        want_pooled, want_grad = _reference(value.astype(np.float64), w.astype(np.float64))
        np.testing.assert_allclose(got_pooled, want_pooled, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6)
    assert engine.stats()["plans"] == 4  # (3, 8) compiled once, then one per new binding
    plan = engine.describe("f", 2, {"seq": 6})
    assert any("(2, 6, 4)" in line for line in plan), plan


def symbol_sizes_must_agree_and_be_positive(backend, rng):
    g = _core.Graph()
    a = g.input("a", ("batch", "seq", 2))
    b = g.input("b", ("batch", "seq", 2))
    total = g.op("add", [a, b])
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[a, b], outputs=[total])
    with pytest.raises(
        ValueError, match="inputs 'a' and 'b' have different sizes for 'seq': 5 vs 4"
    ):
        engine.run("f", [np.zeros((2, 5, 2), np.float32), np.zeros((2, 4, 2), np.float32)])
    with pytest.raises(ValueError, match="inputs 'a' and 'b' have different batch sizes: 2 vs 3"):
        engine.run("f", [np.zeros((2, 5, 2), np.float32), np.zeros((3, 5, 2), np.float32)])
    with pytest.raises(ValueError, match="got size 0 for 'seq'"):
        engine.run("f", [np.zeros((2, 0, 2), np.float32), np.zeros((2, 0, 2), np.float32)])


def symbolic_dims_stay_where_reshape_and_slice_need_sizes(backend, rng):
    g = _core.Graph()
    x = g.input("x", ("batch", "seq", 4))
    seq = _core.dim_symbol("seq")
    with pytest.raises(
        ValueError,
        match=r"\[reshape\] cannot reshape \(batch, seq, 4\) into "
        r"\(seq, batch, 4\): symbolic dims must stay, in the same order",
    ):
        g.op("reshape", [x], {"shape": [seq, -1, 4]})
    with pytest.raises(ValueError, match=r"\[reshape\] .*symbolic dims must stay"):
        g.op("reshape", [x], {"shape": [-1, 4]})  # merging batch and seq needs their sizes
    with pytest.raises(
        ValueError, match=r"\[slice\] cannot slice along the symbolic dimension 'seq'"
    ):
        g.op("slice", [x], {"axis": 1, "start": 0, "end": 2})
    with pytest.raises(
        ValueError, match=r"\[concat\] cannot concatenate along the symbolic dimension 'seq'"
    ):
        g.op("concat", [x, x], {"axis": 1})
    y = g.input("y", ("batch", "other", 4))
    with pytest.raises(
        ValueError, match=r"\[add\] shapes \(batch, seq, 4\) and \(batch, other, 4\)"
    ):
        g.op("add", [x, y])
    with pytest.raises(ValueError, match=r"a variable has no symbolic dims"):
        g.variable("v", (-1, 4))


SCENARIOS = [
    ScenarioCase("mean", "symbolic-sequence", a_plan_per_binding_and_shorter_sequences_work),
    ScenarioCase("add", "symbol-sizes-agree", symbol_sizes_must_agree_and_be_positive),
    ScenarioCase("reshape", "symbols-stay", symbolic_dims_stay_where_reshape_and_slice_need_sizes),
]
