"""scatter_add sums each update row into its index's row of the table: equal to NumPy's sums in
float64 on 1 and 2 threads, below the size from which it splits its columns over the threads
(an LSTM's embedding gradient, 2048 x 1024 into 65 rows) and above it, and the same bits on
both thread counts (each element's sum runs in the order of the rows either way)."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core


def _scatter(updates: np.ndarray, ids: np.ndarray, rows: int, threads: int) -> np.ndarray:
    before = _core.get_num_threads()
    _core.set_num_threads(threads)
    try:
        g = _core.Graph()
        u = g.input("u", updates.shape, "float32")
        i = g.input("i", ids.shape, "int32")
        table = g.op("scatter_add", [u, i], {"rows": rows})
        eng = _core.Engine(g, seed=0, backend="cpu")
        eng.define("f", inputs=[u, i], outputs=[table])
        return eng.run("f", [updates, ids])[0]
    finally:
        _core.set_num_threads(before)


def _reference(updates: np.ndarray, ids: np.ndarray, rows: int) -> np.ndarray:
    flat = updates.reshape(-1, updates.shape[-1]).astype(np.float64)
    order = np.argsort(ids.ravel(), kind="stable")
    sums = np.zeros((rows, flat.shape[1]))
    starts = np.searchsorted(ids.ravel()[order], np.arange(rows))
    nonempty = np.bincount(ids.ravel(), minlength=rows) > 0
    sums[nonempty] = np.add.reduceat(flat[order], starts[nonempty], axis=0)
    return sums


@pytest.mark.parametrize(
    ("shape", "rows", "dim"),
    [
        ((32, 64), 65, 1024),  # E's embedding gradient: one thread
        ((3, 7), 5, 33),  # rows never picked stay zero
        ((16400,), 70, 1024),  # past 1 << 24 floats: the columns split over the threads
    ],
)
def test_scatter_add_matches_numpy_on_one_and_two_threads(shape, rows, dim):
    rng = np.random.default_rng(dim + rows)
    updates = rng.standard_normal((*shape, dim)).astype(np.float32)
    ids = rng.integers(0, rows - 1 if rows == 5 else rows, size=shape).astype(np.int32)
    want = _reference(updates, ids, rows)
    one = _scatter(updates, ids, rows, 1)
    two = _scatter(updates, ids, rows, 2)
    np.testing.assert_allclose(one, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(one, two)
    if rows == 5:
        assert not one[4].any()
