"""F(4x4, 3x3) tiles take an image only when its largest value times the weights' largest,
summed over the channels and grown by the tiles' transforms, stays below float32's range:
inputs of 2^97 with weights of 2^22 (each below the 2^100 gate alone) overflowed on the tiles
where the convolution's true values (about 2^124) are finite. References: torch float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conv_checks import conv_attrs, torch_conv2d
from gometal import _core

pytestmark = pytest.mark.usefixtures("restore_threads")
ATTRS = conv_attrs((1, 1), (1, 1), (1, 1), 1)


@pytest.fixture(autouse=True)
def _winograd_tiles(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")


def _forward(x, w, f4, monkeypatch):
    # A symbolic batch: the plan is sample-tiled, where forward convolutions reach the tiles.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", f4)
    g = _core.Graph()
    xi = g.input("x", (-1, *x.shape[1:]), "float32")
    y = g.op("mul", [g.op("conv2d", [xi, g.variable("w", w.shape)], ATTRS), g.constant(0.5)])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    return engine.run("f", [x])[0]


def _input_grad(dy, w, x_shape, f4, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", f4)
    g = _core.Graph()
    di = g.input("dy", dy.shape, "float32")
    dx = g.op(
        "conv2d_input_grad", [di, g.variable("w", w.shape)], {**ATTRS, "shape": list(x_shape)}
    )
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.define("f", inputs=[di], outputs=[dx], effects=[])
    return engine.run("f", [dy])[0]


def _operands(x_shape, o, x_power, w_power, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(x_shape) * 2.0**x_power).astype(np.float32)
    w = (rng.standard_normal((o, x_shape[1], 3, 3)) * 2.0**w_power).astype(np.float32)
    return x, w


def _close(got, want):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("threads", (1, 2))
def test_forward_near_the_range_stays_finite(threads, monkeypatch):
    _core.set_num_threads(threads)
    x, w = _operands((2, 16, 16, 16), 24, 97, 22)
    want = 0.5 * torch_conv2d(x.astype(np.float64), w.astype(np.float64), ATTRS)
    assert 2.0**123 < np.abs(want).max() < 2.0**127  # finite in float32, near its top
    _close(_forward(x, w, "always", monkeypatch), want)


def test_input_gradient_near_the_range_stays_finite(monkeypatch):
    dy, w = _operands((2, 64, 16, 16), 32, 97, 21)
    w = np.ascontiguousarray(w.transpose(1, 0, 2, 3))  # (64 outputs, 32 inputs): dx has 32 channels
    x_shape = (2, 32, 16, 16)
    want = torch.nn.grad.conv2d_input(
        x_shape, torch.from_numpy(w).double(), torch.from_numpy(dy).double(), padding=1
    ).numpy()
    assert 2.0**123 < np.abs(want).max() < 2.0**127
    _close(_input_grad(dy, w, x_shape, "always", monkeypatch), want)


def test_large_values_whose_products_fit_keep_the_tiles(monkeypatch):
    # 2^60 by 2^10 leaves room: the 6x6 tiles run (their bits differ from F(2x2)'s) and match.
    x, w = _operands((2, 16, 16, 16), 24, 60, 10, seed=1)
    want = 0.5 * torch_conv2d(x.astype(np.float64), w.astype(np.float64), ATTRS)
    tiles = _forward(x, w, "always", monkeypatch)
    other = _forward(x, w, "never", monkeypatch)
    assert not np.array_equal(tiles, other)
    _close(tiles, want)


def test_only_the_image_near_the_range_leaves_the_tiles(monkeypatch):
    # Image 1 holds 2^97, image 0 ordinary values: image 0 keeps the tiles' bits.
    x, w = _operands((2, 16, 16, 16), 24, 0, 22, seed=2)
    ordinary = _forward(x, w, "always", monkeypatch)
    x[1] *= np.float32(2.0**97)
    tiles = _forward(x, w, "always", monkeypatch)
    other = _forward(x, w, "never", monkeypatch)
    np.testing.assert_array_equal(tiles[0], ordinary[0])
    np.testing.assert_array_equal(tiles[1], other[1])
    assert np.isfinite(tiles).all()
