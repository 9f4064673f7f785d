"""The fused attention's block products on each path GOMETAL_ATTENTION_KERNEL forces (the
register tiles for AVX-512, AVX2 and portable vectors, and the BLAS): outputs and the gradients
of q, k and v against torch's scaled_dot_product_attention in float64, at sizes whose blocks
are cut short (rows and columns past a tile, key counts past a vector), causal or not, masked or
not, self-attention (one backward op) and cross-attention (two)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpu_paths import vector_path_available
from gometal import _core

PATHS = ["portable", "avx2", "avx512", "blas"]
VARIABLE = "GOMETAL_ATTENTION_KERNEL"

# (N, H, Tq, Tk, D, causal, with a mask)
SIZES = [
    (2, 2, 64, 64, 32, True, False),  # workload D's heads, blocks of whole tiles
    (1, 2, 45, 45, 32, True, True),
    (1, 1, 37, 150, 16, False, True),  # keys past a block of 128, rows past a tile
    (2, 1, 29, 29, 20, False, False),  # D past a vector: columns one by one
    (1, 1, 40, 19, 7, False, True),
    (1, 1, 130, 130, 64, True, False),  # D of four AVX-512 vectors: two tiles wide
]


def _available(path: str) -> bool:
    return path == "blas" or vector_path_available(path)


def _engine(shapes, causal, mask):
    """q, k, v variables -> attention, and the gradients of sum(out * weights)."""
    g = _core.Graph()
    q, k, v = (g.variable(name, shape) for name, shape in zip("qkv", shapes))
    inputs = [q, k, v] + ([g.constant(mask)] if mask is not None else [])
    out = g.op("attention", inputs, {"causal": causal})
    weights = np.random.default_rng(5).uniform(-1.0, 1.0, g.shape(out)).astype(np.float32)
    loss = g.op("sum", [g.op("mul", [out, g.constant(weights)], {})], {"axes": []})
    grads = g.gradients(loss, [q, k, v])
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("step", inputs=[], outputs=[out, *grads], effects=[], advance_rng=False)
    return engine, weights


def _torch_reference(values, mask, causal, weights):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in values]
    attn_mask = None if mask is None else torch.tensor(mask, dtype=torch.float64)
    out = F.scaled_dot_product_attention(*tensors, attn_mask=attn_mask, is_causal=causal)
    (out * torch.tensor(weights, dtype=torch.float64)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size", SIZES, ids=[f"{s[2]}x{s[3]}x{s[4]}" for s in SIZES])
def test_each_path_matches_torch_outputs_and_gradients(size, path, monkeypatch):
    n, h, tq, tk, d, causal, masked = size
    rng = np.random.default_rng(tq * 100 + tk + d)
    shapes = [(n, h, tq, d), (n, h, tk, d), (n, h, tk, d)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    mask = rng.uniform(-2.0, 2.0, (1, h, tq, tk)).astype(np.float32) if masked else None
    monkeypatch.setenv(VARIABLE, path)
    if not _available(path):
        with pytest.raises(ValueError, match=f"{VARIABLE}={path}: this CPU lacks"):
            _engine(shapes, causal, mask)[0].run("step", [])
        return
    engine, weights = _engine(shapes, causal, mask)
    for name, value in zip("qkv", values):
        engine.set_variable(name, value)
    got = engine.run("step", [])
    want = _torch_reference(values, mask, causal, weights)
    for what, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        atol = 1e-5 * max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"{what} on {path}")


def test_an_unknown_path_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(VARIABLE, "sse9")
    engine, _ = _engine([(1, 1, 4, 8)] * 3, False, None)
    with pytest.raises(
        ValueError, match=f"{VARIABLE} must be portable, avx2, avx512 or blas, got 'sse9'"
    ):
        engine.run("step", [])
