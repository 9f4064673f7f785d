"""The CPU kernels of layer_norm_grad and rms_norm_grad, with and without a weight, on rows
long enough for the kernel's partial sums and a remainder, against float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

DIM = 203  # 12 full groups of the kernel's sixteen partial sums and a remainder of 11
ROWS = 41


def _kernel_dx(
    op: str, x: np.ndarray, upstream: np.ndarray, weight: np.ndarray | None
) -> np.ndarray:
    g = _core.Graph()
    xi = g.input("x", (-1, DIM), "float32")
    gi = g.input("g", (-1, DIM), "float32")
    inputs = [xi, gi] + ([g.constant(weight)] if weight is not None else [])
    dx = g.op(op, inputs, {"eps": 1e-5})
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[xi, gi], outputs=[dx])
    return eng.run("f", [x, upstream])[0]


def _reference_dx(
    x: np.ndarray, upstream: np.ndarray, weight: np.ndarray | None, centre: bool
) -> np.ndarray:
    x64 = x.astype(np.float64)
    gw = upstream.astype(np.float64) * (1.0 if weight is None else weight.astype(np.float64))
    centred = x64 - x64.mean(axis=1, keepdims=True) if centre else x64
    rstd = 1.0 / np.sqrt((centred**2).mean(axis=1, keepdims=True) + 1e-5)
    xhat = centred * rstd
    inner = gw - xhat * (gw * xhat).mean(axis=1, keepdims=True)
    if centre:
        inner -= gw.mean(axis=1, keepdims=True)
    return rstd * inner


@pytest.mark.parametrize("op", ["layer_norm_grad", "rms_norm_grad"])
@pytest.mark.parametrize("weighted", [True, False])
def test_norm_gradient_matches_float64(op: str, weighted: bool):
    rng = np.random.default_rng(7)
    x = (0.5 + 2.0 * rng.standard_normal((ROWS, DIM))).astype(np.float32)
    upstream = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    weight = rng.uniform(0.5, 1.5, DIM).astype(np.float32) if weighted else None
    got = _kernel_dx(op, x, upstream, weight)
    want = _reference_dx(x, upstream, weight, centre=op == "layer_norm_grad")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
