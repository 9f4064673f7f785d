"""A last-axis slice of a computed value read only by products summed over their batch (a
recurrence gradient's columns times the states) is read in place, its rows a stride apart,
instead of copied: the sums match NumPy in float64 for slices at the start, the middle and
the end, widths not a multiple of 16, on 1 and 2 threads; a slice read by anything else keeps
its copy."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

FOLDED = "(batch summed in one product)"


@pytest.fixture(params=[1, 2])
def threads(request):
    before = _core.get_num_threads()
    _core.set_num_threads(request.param)
    yield request.param
    _core.set_num_threads(before)


def _slice(g, x, start, end):
    return g.op("slice", [x], {"axis": 2, "start": start, "end": end})


def _summed(g, a, b):
    product = g.op("matmul", [a, b], {"transpose_a": True, "transpose_b": False})
    return g.op("sum", [product], {"axes": [0]})


def _plan_and_values(shape, a_cols, b_cols, also_read=False):
    """sum over the batch of slice(2x)^T slice(x + 1), the slices' columns given as ranges."""
    rng = np.random.default_rng(sum(shape) + a_cols[0] + b_cols[1])
    g = _core.Graph()
    x = g.input("x", shape, "float32")
    doubled = g.op("mul", [x, g.constant(2.0)])
    shifted = g.op("add", [x, g.constant(1.0)])
    a = _slice(g, doubled, *a_cols)
    b = _slice(g, shifted, *b_cols)
    outputs = [_summed(g, a, b)]
    if also_read:
        outputs.append(g.op("neg", [a]))
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[x], outputs=outputs)
    value = rng.standard_normal(shape).astype(np.float32)
    got = eng.run("f", [value])
    wide = value.astype(np.float64)
    a_ref = (2 * wide)[:, :, a_cols[0] : a_cols[1]]
    b_ref = (wide + 1)[:, :, b_cols[0] : b_cols[1]]
    want = np.einsum("ntm,ntk->mk", a_ref, b_ref)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-4)
    if also_read:
        np.testing.assert_allclose(got[1], -a_ref, rtol=1e-6)
    return eng.describe("f", shape[0])


@pytest.mark.parametrize(
    ("shape", "a_cols", "b_cols"),
    [
        ((4, 9, 50), (0, 17), (0, 50)),  # a at the start; b the whole width (no slice)
        ((4, 9, 50), (13, 30), (31, 50)),  # the middle and the end
        ((3, 40, 70), (45, 70), (0, 33)),  # enough multiply-adds to split over the threads
        ((2, 64, 300), (1, 257), (256, 300)),  # the recurrence's shape: d(xp) columns and h
    ],
)
def test_summed_product_reads_slices_in_place(threads, shape, a_cols, b_cols):
    plan = _plan_and_values(shape, a_cols, b_cols)
    assert not any(line.startswith("slice") for line in plan), plan
    assert sum(FOLDED in line for line in plan) == 2, plan


@pytest.mark.parametrize("columns", [((36, 39), (39, 45)), ((0, 20), (3, 45))])
def test_two_slices_of_one_value_read_in_place(threads, columns):
    """A projected LSTM's W_hr gradient: both operands are columns of the recurrence gradient,
    overlapping or not."""
    shape = (4, 5, 45)
    rng = np.random.default_rng(7)
    g = _core.Graph()
    x = g.input("x", shape, "float32")
    wide = g.op("tanh", [x])
    total = _summed(g, _slice(g, wide, *columns[0]), _slice(g, wide, *columns[1]))
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[x], outputs=[total])
    value = rng.standard_normal(shape).astype(np.float32)
    got = eng.run("f", [value])[0]
    t = np.tanh(value.astype(np.float64))
    (a0, a1), (b0, b1) = columns
    want = np.einsum("ntm,ntk->mk", t[:, :, a0:a1], t[:, :, b0:b1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not any(line.startswith("slice") for line in eng.describe("f", 4))


def test_a_slice_read_elsewhere_keeps_its_copy(threads):
    plan = _plan_and_values((4, 9, 50), (13, 30), (31, 50), also_read=True)
    assert sum(line.startswith("slice") for line in plan) == 1, plan


def test_a_slice_of_a_variable_keeps_its_copy():
    """A variable's slice is not read in place: an effect may write the variable after the
    slice runs but before the product reads it."""
    g = _core.Graph()
    w = g.variable("w", (2, 5, 8))
    x = g.input("x", (2, 5, 3), "float32")
    a = _slice(g, w, 2, 6)
    total = _summed(g, a, x)
    eng = _core.Engine(g, seed=0, backend="cpu")
    w_value = np.arange(80, dtype=np.float32).reshape(2, 5, 8) / 10
    eng.set_variable("w", w_value)
    eng.define("f", inputs=[x], outputs=[total])
    x_value = np.ones((2, 5, 3), np.float32)
    got = eng.run("f", [x_value])[0]
    want = np.einsum("ntm,ntk->mk", w_value[:, :, 2:6].astype(np.float64), x_value)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert sum(line.startswith("slice") for line in eng.describe("f", 2)) == 1
