"""Consecutive runs of a product by packed weights visit the weight panels in alternate orders
(first to last, then last to first), so that weights a little larger than the L2 cache start
each run where the last one ended, still cached. The order must not show in the results: every
run gives the same bits, and the products (with a Dense layer's bias and ReLU in the epilogue)
agree with NumPy in float64, on every vector path, on one thread and with the panels split
across two.
"""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from cpu_paths import vector_path_available
from matmul_checks import dense_engine

PATHS = [path for path in ("portable", "avx2", "avx512") if vector_path_available(path)]
# (M, N, K): a few rows and many panels (up to 19 at the portable path's 16 columns), a last
# panel cut short, and enough multiply-adds to split the panels across threads.
SHAPES = [(8, 300, 200), (40, 161, 96), (3, 70, 33)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_every_run_gives_the_same_bits_whichever_order_it_reads_the_panels(
    shape, threads, path, monkeypatch
):
    m, n, k = shape
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        engine = dense_engine(k, n, relu=True)
        engine.set_variable("w", w)
        engine.set_variable("bias", bias)
        runs = [engine.run("f", [a])[0] for _ in range(5)]
    finally:
        gm.set_num_threads(previous)
    expected = np.maximum(a.astype(np.float64) @ w.astype(np.float64).T + bias, 0.0)
    np.testing.assert_allclose(runs[0], expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    for later in runs[1:]:
        np.testing.assert_array_equal(later, runs[0])
