"""Finite values near float32's maximum through Winograd's F(2x2, 3x3) tiles.

The tiles' input transform adds up to 16 values of a tile before any product: two neighbours
of 3e38 overflow there, while a direct sum of their products with small weights, and torch,
stay finite. Inputs or weights of magnitude 2^120 and more take the direct sums.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conv_checks import conv_attrs
from cpu_paths import vector_path_available
from gometal import _core
from test_conv_winograd_grad import run_on_variables

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]
ATTRS = conv_attrs((1, 1), (1, 1), (1, 1), 1)


def _large(shape, seed, scale):
    """Standard normal values times `scale`, with a 2x2 block of 3e38 in the last image."""
    a = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    a[-1, 1, 2:4, 2:4] = np.float32(3e38)
    return a


def _assert_matches_torch(got, want):
    assert np.isfinite(want).all()
    bad = int((~np.isfinite(got)).sum())
    assert bad == 0, f"{bad} non-finite values where torch's are all finite"
    err = np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 1e30)
    assert err.max() < 1e-4, f"relative error {err.max():.3g}"


@pytest.mark.parametrize("path", PATHS)
def test_input_gradient_of_large_finite_dy_stays_finite(path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    dy = _large((2, 32, 8, 8), seed=1, scale=1.0)
    w = (np.random.default_rng(2).standard_normal((32, 32, 3, 3)) * 1e-3).astype(np.float32)
    got = run_on_variables("conv2d_input_grad", dy, w, {**ATTRS, "shape": [2, 32, 8, 8]})
    x = torch.zeros((2, 32, 8, 8), dtype=torch.float64, requires_grad=True)
    F.conv2d(x, torch.from_numpy(w).double(), padding=1).backward(torch.from_numpy(dy).double())
    _assert_matches_torch(got, x.grad.numpy())


@pytest.mark.parametrize("path", PATHS)
def test_pooled_forward_of_large_finite_inputs_stays_finite(path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x = _large((2, 16, 16, 16), seed=3, scale=1.0)
    w = (np.random.default_rng(4).standard_normal((16, 16, 3, 3)) * 1e-3).astype(np.float32)
    g = _core.Graph()
    xi = g.input("x", (-1, 16, 16, 16), "float32")
    y = g.op("conv2d", [xi, g.variable("w", w.shape)], ATTRS)
    y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    engine.set_variable("w", w)
    got = engine.run("f", [x])[0]
    want = F.max_pool2d(
        F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1), 2
    )
    _assert_matches_torch(got, want.numpy())
