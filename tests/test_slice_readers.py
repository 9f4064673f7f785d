"""A last-axis slice of a computed value whose every reader can read its columns in place (a
product summed over its batch, a scatter_add's updates, a batched product's A against a 2-D B,
a sum over all leading axes: the recurrence gradient's d(xp) and its readers) keeps no buffer
of its own: each reader reads the columns a row stride apart. Every reader matches NumPy in
float64 for slices at the start, the middle and the end, widths not a multiple of 16, repeated
indices, on 1 and 2 threads; the sums and the scatter_add give the bits of the copied slice's
kernels; a slice with any other reader keeps its copy."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core
from recurrent_parity import thread_counts

threads = thread_counts(1, 2)


def _slice(g, x, start, end):
    return g.op("slice", [x], {"axis": len(g.shape(x)) - 1, "start": start, "end": end})


def _scatter(g, updates, ids, rows):
    return g.op("scatter_add", [updates, ids], {"rows": rows})


def _scatter_reference(updates: np.ndarray, ids: np.ndarray, rows: int) -> np.ndarray:
    table = np.zeros((rows, updates.shape[-1]))
    np.add.at(table, ids.ravel(), updates.reshape(-1, updates.shape[-1]))
    return table


def _run(g, inputs, outputs, values):
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=inputs, outputs=outputs)
    return eng.run("f", values), eng.describe("f", values[0].shape[0])


@pytest.mark.parametrize(
    ("shape", "width", "columns", "rows"),
    [
        ((4, 9), 50, (0, 17), 5),  # at the start
        ((4, 9), 50, (13, 30), 3),  # the middle, three rows: most indices repeat
        ((3, 7), 45, (12, 45), 70),  # the end, most rows never picked
        ((2, 64), 1100, (0, 1024), 65),  # E's embedding gradient out of the gradient's columns
    ],
)
def test_scatter_add_reads_a_slice_in_place(threads, shape, width, columns, rows):
    rng = np.random.default_rng(width + columns[0])
    values = rng.standard_normal((*shape, width)).astype(np.float32)
    ids = rng.integers(0, rows, size=shape).astype(np.int32)
    g = _core.Graph()
    x = g.input("x", (*shape, width), "float32")
    i = g.input("i", shape, "int32")
    doubled = g.op("mul", [x, g.constant(2.0)])
    table = _scatter(g, _slice(g, doubled, *columns), i, rows)
    (got,), plan = _run(g, [x, i], [table], [values, ids])
    assert any(line.startswith("scatter_add,slice") for line in plan), plan
    want = _scatter_reference(
        (2 * values.astype(np.float64))[..., columns[0] : columns[1]], ids, rows
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The same bits as scatter_add of the slice's copy: each sum runs in the order of the rows.
    copied = np.ascontiguousarray((2 * values)[..., columns[0] : columns[1]])
    g2 = _core.Graph()
    u = g2.input("u", copied.shape, "float32")
    i2 = g2.input("i", shape, "int32")
    (direct,), _ = _run(g2, [u, i2], [_scatter(g2, u, i2, rows)], [copied, ids])
    np.testing.assert_array_equal(got, direct)


def test_scatter_add_in_place_splits_columns_past_its_size(threads):
    """Past 1 << 24 floats of updates the columns split over the threads: the same sums."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((16400, 1040)).astype(np.float32)
    ids = rng.integers(0, 70, size=(16400,)).astype(np.int32)
    g = _core.Graph()
    x = g.input("x", values.shape, "float32")
    i = g.input("i", ids.shape, "int32")
    table = _scatter(g, _slice(g, g.op("neg", [x]), 16, 1040), i, 70)
    (got,), plan = _run(g, [x, i], [table], [values, ids])
    assert any(line.startswith("scatter_add,slice") for line in plan), plan
    want = _scatter_reference(-values.astype(np.float64)[:, 16:], ids, 70)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def _four_readers(shape, width, columns, also_neg=False):
    """One slice of tanh(x) read by a batch-summed product, a product by a 2-D weight, a sum
    over its leading axes and a scatter_add (and, with also_neg, by a neg, which copies)."""
    rng = np.random.default_rng(width + columns[1])
    n, t = shape
    c = columns[1] - columns[0]
    x_value = rng.standard_normal((n, t, width)).astype(np.float32)
    other = rng.standard_normal((n, t, 6)).astype(np.float32)
    weight = rng.standard_normal((c, 7)).astype(np.float32)
    ids = rng.integers(0, 4, size=(n, t)).astype(np.int32)
    g = _core.Graph()
    x = g.input("x", (n, t, width), "float32")
    o = g.input("o", (n, t, 6), "float32")
    w = g.input("w", (c, 7), "float32")
    i = g.input("i", (n, t), "int32")
    part = _slice(g, g.op("tanh", [x]), *columns)
    summed = g.op("sum", [g.op("matmul", [part, o], {"transpose_a": True})], {"axes": [0]})
    outputs = [
        summed,
        g.op("matmul", [part, w]),
        g.op("sum", [part], {"axes": [0, 1]}),
        _scatter(g, part, i, 4),
    ]
    if also_neg:
        outputs.append(g.op("neg", [part]))
    got, plan = _run(g, [x, o, w, i], outputs, [x_value, other, weight, ids])
    s = np.tanh(x_value.astype(np.float64))[..., columns[0] : columns[1]]
    want = [
        np.einsum("ntm,ntk->mk", s, other),
        s @ weight,
        s.sum(axis=(0, 1)),
        _scatter_reference(s, ids, 4),
    ]
    if also_neg:
        want.append(-s)
    for value, reference in zip(got, want):
        np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-5)
    return got, plan


@pytest.mark.parametrize(
    ("shape", "width", "columns"),
    [
        ((3, 5), 40, (0, 10)),
        ((3, 5), 40, (7, 30)),
        ((2, 9), 37, (20, 37)),
        ((4, 64), 300, (0, 257)),  # enough work for the products and the sum to split
    ],
)
def test_every_reader_reads_one_slice_in_place(threads, shape, width, columns):
    _, plan = _four_readers(shape, width, columns)
    assert not any(line.startswith("slice") for line in plan), plan
    assert sum(",slice" in line for line in plan) == 4, plan


@pytest.mark.parametrize("columns", [(0, 10), (7, 30), (0, 257)])
def test_in_place_readers_give_the_copys_bits(threads, columns):
    """A neg also reading the slice keeps its copy, and the other readers read that: the
    in-place sum and scatter_add give the same bits."""
    shape, width = ((4, 64), 300) if columns[1] > 40 else ((3, 5), 40)
    in_place, _ = _four_readers(shape, width, columns)
    copied, copied_plan = _four_readers(shape, width, columns, also_neg=True)
    assert any(line.startswith("slice") for line in copied_plan), copied_plan
    assert not any(",slice" in line for line in copied_plan), copied_plan
    np.testing.assert_array_equal(in_place[2], copied[2])
    np.testing.assert_array_equal(in_place[3], copied[3])


def test_a_sum_over_some_leading_axes_keeps_the_copy(threads):
    """A sum over axis 0 alone is no column sum: the slice keeps its buffer."""
    rng = np.random.default_rng(5)
    value = rng.standard_normal((3, 4, 20)).astype(np.float32)
    g = _core.Graph()
    x = g.input("x", value.shape, "float32")
    part = _slice(g, g.op("exp", [x]), 2, 9)
    (got,), plan = _run(g, [x], [g.op("sum", [part], {"axes": [0]})], [value])
    assert any(line.startswith("slice") for line in plan), plan
    np.testing.assert_allclose(
        got, np.exp(value.astype(np.float64))[..., 2:9].sum(axis=0), rtol=1e-5
    )
