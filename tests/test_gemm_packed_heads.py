"""A product by packed weights stored split into attention heads.

In an inference plan, matmul -> add(bias) [-> gelu] -> reshape (N, T, H * D) -> (N, T, H, D)
-> transpose (0, 2, 1, 3) becomes one step, "matmul,add,transpose" (or with gelu), whose
product stores each head's rows where the transpose puts them. Its values equal NumPy's (in
float64) on every vector path at 1, 2 and 3 threads, for heads narrower and wider than a vector
and columns that end inside a panel. A split also read elsewhere, or another permutation,
keeps the transpose as a step of its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from cpu_paths import vector_path_available
from gometal import _core

AVAILABLE = [path for path in ("portable", "avx2", "avx512") if vector_path_available(path)]

# (N, T, H, D, K): a GPT's heads (D = 32), heads of 7 and 20 floats (runs that do not fill a
# vector), a last panel cut short (H * D = 66, 100), one row of one head.
SHAPES = [
    (12, 64, 4, 32, 128),
    (3, 5, 6, 7, 9),
    (2, 33, 5, 20, 17),
    (5, 3, 3, 22, 40),
    (1, 1, 1, 16, 3),
]


def _engine(t, heads, d, k, gelu=False, perm=(0, 2, 1, 3), return_split=False):
    g = _core.Graph()
    x = g.input("x", (-1, t, k), "float32")
    y = g.op("matmul", [x, g.variable("w", (heads * d, k))], {"transpose_b": True})
    y = g.op("add", [y, g.variable("bias", (heads * d,))], {})
    if gelu:
        y = g.op("gelu", [y], {})
    split = g.op("reshape", [y], {"shape": [-1, t, heads, d]})
    out = g.op("transpose", [split], {"perm": list(perm)})
    engine = _core.Engine(g, seed=0)
    outputs = [out, split] if return_split else [out]
    engine.define("f", inputs=[x], outputs=outputs, effects=[])
    return engine


def _expected(a, w, bias, heads, d, gelu=False, perm=(0, 2, 1, 3)):
    y = (
        torch.from_numpy(a).double() @ torch.from_numpy(w).double().T
        + torch.from_numpy(bias).double()
    )
    if gelu:
        y = torch.nn.functional.gelu(y)
    n, t, _ = a.shape
    return y.reshape(n, t, heads, d).permute(*perm).numpy()


def _operands(n, t, heads, d, k):
    rng = np.random.default_rng(n * t + heads * d + k)
    a = rng.standard_normal((n, t, k)).astype(np.float32)
    w = rng.standard_normal((heads * d, k)).astype(np.float32)
    return a, w, rng.standard_normal(heads * d).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("path", AVAILABLE)
@pytest.mark.parametrize("gelu", [False, True], ids=["bias", "bias_gelu"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_the_product_stores_its_rows_split_into_heads(shape, gelu, path, threads, monkeypatch):
    n, t, heads, d, k = shape
    a, w, bias = _operands(n, t, heads, d, k)
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        engine = _engine(t, heads, d, k, gelu=gelu)
        steps = "matmul,add,gelu,transpose" if gelu else "matmul,add,transpose"
        plan = engine.describe("f", n)
        assert plan == [f"{steps} ({n}, {heads}, {t}, {d})"], plan
        engine.set_variable("w", w)
        engine.set_variable("bias", bias)
        for scale in (1.0, -2.0):  # a write, then the run that packs again and one more
            engine.set_variable("w", np.float32(scale) * w)
            for _ in range(2):
                np.testing.assert_allclose(
                    engine.run("f", [a])[0],
                    _expected(a, scale * w, bias, heads, d, gelu),
                    rtol=1e-5,
                    atol=1e-5 * np.sqrt(k),
                )
    finally:
        gm.set_num_threads(previous)


@pytest.mark.parametrize(
    "perm, return_split", [((0, 2, 1, 3), True), ((0, 1, 3, 2), False), ((2, 0, 1, 3), False)]
)
def test_a_split_read_elsewhere_or_another_permutation_keeps_the_transpose(
    perm, return_split, monkeypatch
):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", AVAILABLE[-1])
    n, t, heads, d, k = 3, 5, 4, 8, 12
    a, w, bias = _operands(n, t, heads, d, k)
    engine = _engine(t, heads, d, k, perm=perm, return_split=return_split)
    plan = engine.describe("f", n)
    assert any(line.startswith("transpose") for line in plan), plan
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    got = engine.run("f", [a])
    np.testing.assert_allclose(
        got[0], _expected(a, w, bias, heads, d, perm=perm), rtol=1e-5, atol=1e-5
    )
    if return_split:
        split = _expected(a, w, bias, heads, d, perm=(0, 1, 2, 3))
        np.testing.assert_allclose(got[1], split, rtol=1e-5, atol=1e-5)
