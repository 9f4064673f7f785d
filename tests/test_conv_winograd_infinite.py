"""Infinite values through Winograd's F(2x2, 3x3) tiles, pooled and unpooled.

The tiles' transforms add and subtract inputs (and weights) before the products and the output
transform subtracts sums again, so a single infinity would meet its own copy as Inf - Inf = NaN
where a direct sum, and torch, give +-Inf. An infinite weight or activation must give torch's
pattern of Inf and NaN: a weight of Inf times the zero padding is NaN, times anything else Inf.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conv_checks import assert_torchs_non_finite_cells, conv_attrs, torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    before = _core.get_num_threads()
    yield
    _core.set_num_threads(before)


def _engine(image_shape, o, pooled, threads):
    """conv2d (padding 1) of x scaled elementwise by the variable s, then a pooling or a square."""
    g = _core.Graph()
    x = g.input("x", (-1, *image_shape), "float32")
    scaled = g.op("mul", [x, g.variable("s", image_shape)])
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    y = g.op("conv2d", [scaled, g.variable("w", (o, image_shape[0], 3, 3))], attrs)
    y = g.op("add", [y, g.variable("b", (o, 1, 1))])
    y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]}) if pooled else g.op("mul", [y, y])
    _core.set_num_threads(threads)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def _reference(x, s, w, b, pooled):
    y = torch.from_numpy(torch_conv2d(x * s, w, conv_attrs((1, 1), (1, 1), (1, 1), 1)) + b)
    return (F.max_pool2d(y, 2) if pooled else y * y).numpy()


def _arrays(n, c, plane, o, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, plane, plane)).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal((o, 1, 1)).astype(np.float32)
    return x, np.ones((c, plane, plane), np.float32), w, b


def _check(engine, x, s, w, b, pooled):
    for name, value in (("s", s), ("w", w), ("b", b)):
        engine.set_variable(name, value)
    got = engine.run("f", [x])[0]
    want = _reference(x, s.astype(np.float64), w, b, pooled)
    assert np.isinf(want).any()
    assert_torchs_non_finite_cells(got, want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "unpooled"])
@pytest.mark.parametrize("threads", [1, 2])
def test_an_infinite_weight_gives_torchs_infinities(path, pooled, threads, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x, s, w, b = _arrays(4, 16, 16, 32, seed=1)
    w[3, 0, 1, 0] = np.inf
    w[7, 2, 0, 2] = -np.inf
    _check(_engine((16, 16, 16), 32, pooled, threads), x, s, w, b, pooled)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "unpooled"])
@pytest.mark.parametrize("batch", [1, 4])
def test_an_infinite_activation_gives_torchs_infinities(path, pooled, batch, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x, s, w, b = _arrays(batch, 16, 16, 32, seed=2)
    # Two pixels of every image overflow to +-Inf (a finite input times an infinite scale): the
    # outputs that read one of them are infinite, those that read both NaN.
    s[5, 7, 9] = np.inf
    s[9, 8, 10] = -np.inf
    x[:, 5, 7, 9] = np.abs(x[:, 5, 7, 9]) + 0.5
    x[:, 9, 8, 10] = np.abs(x[:, 9, 8, 10]) + 0.5
    _check(_engine((16, 16, 16), 32, pooled, 2), x, s, w, b, pooled)


def test_finite_inputs_keep_the_tiles(monkeypatch):
    # The direct sums are only for infinities: finite data still runs the tiles, whose rounding
    # differs from the direct kernel's.
    x, s, w, b = _arrays(4, 16, 16, 32, seed=3)
    results = {}
    for mode in ("always", "never"):
        monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", mode)
        engine = _engine((16, 16, 16), 32, True, 1)
        for name, value in (("s", s), ("w", w), ("b", b)):
            engine.set_variable(name, value)
        results[mode] = engine.run("f", [x])[0]
    assert not np.array_equal(results["always"], results["never"])
    np.testing.assert_allclose(results["always"], results["never"], rtol=1e-4, atol=1e-4)
