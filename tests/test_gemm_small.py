"""The small-row matrix product (inference at small batch) on every instruction-set path.

Products whose A has at most 24 rows run on register tiles instead of the BLAS, with B as
stored (K x N) or transposed (N x K, a dense layer's weight). Every path the CPU has
(GOMETAL_GEMM_SMALL_KERNEL=portable|avx2|avx512, and blas for the BLAS) computes the same
products as NumPy in float64: odd M, N and K, rows from 1 to 64 (past 24 the BLAS takes
over), column counts that are no multiple of a register tile. A path the CPU lacks, or an unknown name, is refused naming the
variable; a dense model's predictions agree with torch's Linear on every path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from cpu_paths import vector_path_available
from matmul_checks import matmul_engine, matmul_operands

PATHS = ("portable", "avx2", "avx512", "blas")


@pytest.fixture(autouse=True)
def _weights_not_packed(monkeypatch):
    """Inference plans run products of 1 or more rows by a variable on packed weights
    (tests/test_gemm_packed.py); turned off here, they reach the small-row kernel."""
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", "off")


def _path_available(path: str) -> bool:
    return path == "blas" or vector_path_available(path)


# (M, N, K): rows 1..64, columns around every tile width (4, 16, 24, 64), odd depths.
SHAPES = [
    (1, 1, 1),
    (1, 10, 256),
    (1, 512, 784),
    (2, 7, 3),
    (3, 17, 9),
    (5, 25, 31),
    (6, 64, 16),
    (7, 65, 33),
    (8, 256, 512),
    (13, 49, 100),
    (24, 10, 256),
    (24, 67, 40),
    (33, 130, 47),
    (64, 97, 15),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("transpose_b", [False, True], ids=["b", "b_transposed"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_each_path_computes_the_product_as_numpy(shape, transpose_b, path, monkeypatch):
    m, n, k = shape
    a, b = matmul_operands(m, n, k, transpose_b, seed=m * 1000 + n + k)
    monkeypatch.setenv("GOMETAL_GEMM_SMALL_KERNEL", path)
    engine = matmul_engine(a.shape[1], b.shape, transpose_b)
    engine.set_variable("w", b)
    if not _path_available(path):
        with pytest.raises(ValueError, match=f"GOMETAL_GEMM_SMALL_KERNEL={path}: this CPU lacks"):
            engine.run("f", [a])
        return
    got = engine.run("f", [a])[0]
    b64 = b.astype(np.float64)
    expected = a.astype(np.float64) @ (b64.T if transpose_b else b64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("path", [p for p in PATHS if _path_available(p)])
def test_rows_past_the_small_kernel_still_match_numpy(path, monkeypatch):
    # 25 rows go to the BLAS whatever the path: the hand-over must not change the result.
    a, b = matmul_operands(25, 33, 70, True, seed=3)
    monkeypatch.setenv("GOMETAL_GEMM_SMALL_KERNEL", path)
    engine = matmul_engine(a.shape[1], b.shape, True)
    engine.set_variable("w", b)
    expected = a.astype(np.float64) @ b.astype(np.float64).T
    np.testing.assert_allclose(engine.run("f", [a])[0], expected, rtol=1e-5, atol=1e-4)


def test_an_unknown_path_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_SMALL_KERNEL", "sse9")
    engine = matmul_engine(4, (3, 4), True)
    with pytest.raises(
        ValueError,
        match="GOMETAL_GEMM_SMALL_KERNEL must be portable, avx2, avx512 or blas, got 'sse9'",
    ):
        engine.run("f", [np.zeros((2, 4), np.float32)])


@pytest.mark.parametrize("path", [p for p in PATHS if _path_available(p)])
@pytest.mark.parametrize("batch", [1, 8, 32])
def test_dense_model_predicts_as_torch_linear_layers(batch, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_SMALL_KERNEL", path)
    model = gm.ModelBuilder(input_shape=(37,)).dense(29).relu().dense(11).build(seed=4)
    x = np.random.default_rng(batch).standard_normal((batch, 37)).astype(np.float32)
    weights = model.get_weights()
    torch_net = torch.nn.Sequential(
        torch.nn.Linear(37, 29), torch.nn.ReLU(), torch.nn.Linear(29, 11)
    ).double()
    with torch.no_grad():
        for name, linear in (("dense_0", torch_net[0]), ("dense_1", torch_net[2])):
            for part in ("weight", "bias"):
                value = np.asarray(weights[f"{name}.{part}"], np.float64)
                getattr(linear, part).copy_(torch.from_numpy(value))
        expected = torch_net(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)
