"""A product by packed weights with its bias and then exact GELU, or its bias and then a
residual, in the epilogue (a transformer's feed-forward, and its projections back into the
residual stream).

In an inference plan, matmul -> add(bias) -> gelu becomes one step, "matmul,add,gelu", and
matmul -> add(bias) -> add(same-shape value) one step "matmul,add,add", whose values equal
torch's Linear then exact GELU, or Linear plus the residual (in float64), on every vector path,
for shapes whose columns and depth are not multiples of the panel width or the register tile,
at 1, 2 and 3 threads. A broadcast second add, or a sum read elsewhere, keeps its own step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from cpu_paths import vector_path_available
from gometal import _core

AVAILABLE = [path for path in ("portable", "avx2", "avx512") if vector_path_available(path)]

# (M, N, K): rows around the tile heights and a batch of sequences (768), columns around the
# panel widths (16, 24, 64) and a feed-forward's 512, depths not multiples of anything.
SHAPES = [(2, 7, 3), (7, 65, 33), (13, 130, 9), (300, 37, 20), (768, 512, 130), (770, 67, 128)]


def _gelu_engine(k: int, n: int) -> _core.Engine:
    g = _core.Graph()
    x = g.input("x", (-1, k), "float32")
    y = g.op("matmul", [x, g.variable("w", (n, k))], {"transpose_b": True})
    y = g.op("add", [y, g.variable("bias", (n,))], {})
    y = g.op("gelu", [y], {})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def _torch_linear_gelu(a, w, bias):
    y = (
        torch.from_numpy(a).double() @ torch.from_numpy(w).double().T
        + torch.from_numpy(bias).double()
    )
    return torch.nn.functional.gelu(y).numpy()


def _operands(epilogue, m, n, k):
    """rng, A (m, k), W (n, k) and a bias (n,), float32; for "gelu", sums reaching far past
    GELU's bend on both sides."""
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    if epilogue == "gelu":  # to -13 and past it
        w = (rng.standard_normal((n, k)) * 3 / np.sqrt(k)).astype(np.float32)
        return rng, a, w, rng.uniform(-16, 4, n).astype(np.float32)
    return (
        rng,
        a,
        rng.standard_normal((n, k)).astype(np.float32),
        rng.standard_normal(n).astype(np.float32),
    )


def _with_threads(threads, body):
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        body()
    finally:
        gm.set_num_threads(previous)


def test_without_packing_the_bias_and_gelu_stay_a_fused_step(monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", "off")
    engine = _gelu_engine(9, 12)
    plan = engine.describe("f", 8)
    assert any(line.startswith("matmul (8, 12)") for line in plan), plan
    assert not any(line.startswith("matmul,add,gelu") for line in plan), plan
    _, a, w, bias = _operands("plain", 8, 12, 9)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    np.testing.assert_allclose(
        engine.run("f", [a])[0], _torch_linear_gelu(a, w, bias), rtol=1e-5, atol=1e-5
    )


def test_a_gelu_read_elsewhere_keeps_the_sum_in_a_buffer(monkeypatch):
    # The biased sum is also returned: the chain cannot end in one buffer, so the GELU stays.
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", AVAILABLE[-1])
    g = _core.Graph()
    x = g.input("x", (-1, 20), "float32")
    y = g.op("matmul", [x, g.variable("w", (33, 20))], {"transpose_b": True})
    biased = g.op("add", [y, g.variable("bias", (33,))], {})
    out = g.op("gelu", [biased], {})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[biased, out], effects=[])
    _, a, w, bias = _operands("plain", 40, 33, 20)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    assert not any(line.startswith("matmul,add,gelu") for line in engine.describe("f", 40))
    got_biased, got = engine.run("f", [a])
    expected_biased = a.astype(np.float64) @ w.astype(np.float64).T + bias
    np.testing.assert_allclose(got_biased, expected_biased, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, _torch_linear_gelu(a, w, bias), rtol=1e-5, atol=1e-5)


def _residual_engine(k: int, n: int, residual_shape=None) -> _core.Engine:
    """x (batch, k) -> x w^T + bias + r, r an input of shape (batch, n) unless given."""
    g = _core.Graph()
    x = g.input("x", (-1, k), "float32")
    r = g.input("r", residual_shape or (-1, n), "float32")
    y = g.op("matmul", [x, g.variable("w", (n, k))], {"transpose_b": True})
    y = g.op("add", [y, g.variable("bias", (n,))], {})
    y = g.op("add", [r, y], {})  # the residual first, as a transformer's x + f(x)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x, r], outputs=[y], effects=[])
    return engine


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("path", AVAILABLE)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
@pytest.mark.parametrize("epilogue", ["gelu", "residual"])
def test_the_product_adds_the_bias_then_the_gelu_or_residual_in_its_epilogue(
    epilogue, shape, path, threads, monkeypatch
):
    m, n, k = shape
    rng, a, w, bias = _operands(epilogue, m, n, k)
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    steps = "matmul,add,gelu" if epilogue == "gelu" else "matmul,add,add"

    def body():
        engine = _gelu_engine(k, n) if epilogue == "gelu" else _residual_engine(k, n)
        plan = engine.describe("f", m)
        assert any(line.startswith(f"{steps} ({m}, {n})") for line in plan), plan
        engine.set_variable("w", w)
        # A write, then the run that packs again, then two on the packed copy.
        for step, scale in enumerate((1.0, -0.5, -0.5, -0.5)):
            engine.set_variable("bias", np.float32(scale) * bias)
            if epilogue == "gelu":
                got = engine.run("f", [a])[0]
                expected = _torch_linear_gelu(a, w, np.float32(scale) * bias)
            else:
                r = rng.standard_normal((m, n)).astype(np.float32) * np.float32(step + 1)
                got = engine.run("f", [a, r])[0]
                expected = a.astype(np.float64) @ w.astype(np.float64).T + scale * bias + r
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))

    _with_threads(threads, body)


def test_a_broadcast_second_add_keeps_its_step(monkeypatch):
    # (1, n) added after the bias is a second bias, not a residual: the add stays a step.
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", AVAILABLE[-1])
    engine = _residual_engine(20, 33, residual_shape=(1, 33))
    plan = engine.describe("f", 40)
    assert not any(line.startswith("matmul,add,add") for line in plan), plan
    rng, a, w, bias = _operands("plain", 40, 33, 20)
    r = rng.standard_normal((1, 33)).astype(np.float32)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    expected = a.astype(np.float64) @ w.astype(np.float64).T + bias + r
    np.testing.assert_allclose(engine.run("f", [a, r])[0], expected, rtol=1e-5, atol=1e-5)
