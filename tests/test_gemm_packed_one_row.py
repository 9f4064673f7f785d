"""One row by packed weights: a Dense layer at batch 1.

A single row of A runs on packed weights as more rows do (its panels, read back and forth, stay
in the cache where the BLAS's matrix-vector product streams the weights); products of fewer than
16 columns keep the BLAS. On every vector path the product, with a Dense layer's bias and ReLU in
its epilogue, agrees with NumPy in float64, and gives the same bits on 1, 2 and 3 threads (each
column's sum runs over K in order whichever thread computes it).
"""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from cpu_paths import vector_path_available
from helpers import mlp_pair, t
from matmul_checks import dense_engine, matmul_engine, matmul_operands

PATHS = [path for path in ("portable", "avx2", "avx512") if vector_path_available(path)]
THREADS = (1, 2, 3)
# (N, K): workload C's head and workload A's layers, columns around the panel widths (16, 24,
# 64), shallow and odd depths; the larger ones split their panels across threads.
SHAPES = [(128, 4096), (512, 784), (256, 512), (130, 2048), (17, 2500), (16, 9), (200, 3001)]


def _runs_on_threads(make_engine, x, threads):
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        engine = make_engine()
        return engine, [engine.run("f", [x])[0] for _ in range(3)]
    finally:
        gm.set_num_threads(previous)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias_relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"1x{n}x{k}" for n, k in SHAPES])
def test_one_row_packs_and_gives_the_same_bits_on_every_thread_count(
    shape, relu, path, monkeypatch
):
    n, k = shape
    rng = np.random.default_rng(n + k)
    a = rng.standard_normal((1, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)

    def make_engine():
        engine = dense_engine(k, n, relu)
        engine.set_variable("w", w)
        engine.set_variable("bias", bias)
        return engine

    expected = a.astype(np.float64) @ w.astype(np.float64).T + bias
    expected = np.maximum(expected, 0.0) if relu else expected
    first = None
    for threads in THREADS:
        engine, runs = _runs_on_threads(make_engine, a, threads)
        steps = "matmul,add,relu" if relu else "matmul,add"
        plan = engine.describe("f", 1)
        assert any(line.startswith(f"{steps} (1, {n})") for line in plan), plan
        np.testing.assert_allclose(runs[0], expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))
        first = runs[0] if first is None else first
        for run in runs:
            np.testing.assert_array_equal(run, first, err_msg=f"{threads} threads")


@pytest.mark.parametrize("transpose_b", [False, True], ids=["b", "b_transposed"])
def test_one_row_by_weights_as_stored_or_transposed_matches_numpy(transpose_b):
    a, b = matmul_operands(1, 70, 2049, transpose_b, seed=5)
    engine = matmul_engine(2049, b.shape, transpose_b)
    engine.set_variable("w", b)
    b64 = b.astype(np.float64)
    expected = a.astype(np.float64) @ (b64.T if transpose_b else b64)
    for _ in range(2):
        np.testing.assert_allclose(engine.run("f", [a])[0], expected, rtol=1e-5, atol=1e-3)


def test_one_row_of_fewer_than_16_columns_keeps_the_blas():
    engine = dense_engine(128, 10, relu=False)
    plan = engine.describe("f", 1)
    assert any(line.startswith("matmul (1, 10)") for line in plan), plan


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("sizes", [[4096, 128, 2], [784, 512, 256, 10]], ids=["cnn_head", "mlp"])
def test_dense_models_at_batch_one_predict_as_torch(sizes, threads):
    net, model = mlp_pair(sizes, "relu", seed=3)
    x = np.random.default_rng(3).standard_normal((1, sizes[0])).astype(np.float32)
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        expected = net(t(x)).detach().numpy()
        for _ in range(3):
            np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)
    finally:
        gm.set_num_threads(previous)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(5, 300, 200), (40, 161, 96)], ids=["5x300x200", "40x161x96"])
def test_panels_split_on_three_threads_give_the_bits_of_one(shape, path, monkeypatch):
    # Three threads cut the panels into three parts, which no thread count changes the bits of.
    m, n, k = shape
    a, w = matmul_operands(m, n, k, True, seed=m + n)
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)

    def make_engine():
        engine = matmul_engine(k, w.shape, True)
        engine.set_variable("w", w)
        return engine

    _, one = _runs_on_threads(make_engine, a, 1)
    _, three = _runs_on_threads(make_engine, a, 3)
    expected = a.astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_allclose(one[0], expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    for run in three:
        np.testing.assert_array_equal(run, one[0])
