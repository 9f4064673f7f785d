"""The convolution's input and weight gradients on every instruction-set path.

Each path the CPU has (GOMETAL_CONV_KERNEL=portable|avx2|avx512) computes conv2d_input_grad
and conv2d_weight_grad as torch's autograd does in float64, on workload B's layers and on
odd sizes, strides, padding (including padding wider than the dilated window, which the
forward-convolution form of the input gradient cannot take), dilation and groups; planes
of 1,024 pixels and more (the direct weight gradient) and smaller ones (im2col + BLAS), and
3x3 windows of one group (the channel-lane weight and input gradients); and the same weight
gradient, bit for bit, whatever the number of threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conv_checks import conv_attrs
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]


@pytest.fixture(autouse=True)
def _f2x2_tiles(monkeypatch):
    # F(4x4, 3x3)'s tiles round more and have their own bound (test_conv_winograd_f4.py).
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", "never")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", "never")  # test_conv_winograd_grad_f4.py


# (N, C, H, W), (O, KH, KW), stride, padding, dilation, groups
CASES = [
    ((2, 3, 64, 64), (16, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # workload B's first layer
    ((2, 16, 32, 32), (32, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # its second
    ((2, 32, 16, 16), (64, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # its third
    ((2, 5, 13, 29), (7, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # partial blocks and rows
    ((1, 9, 33, 40), (25, 3, 3), (1, 1), (2, 0), (1, 1), 1),  # 25 outputs, 1,240 pixels
    ((2, 4, 11, 40), (13, 5, 5), (2, 1), (2, 2), (1, 1), 1),  # vertical stride, 5x5
    ((1, 6, 15, 21), (10, 3, 3), (1, 1), (2, 2), (2, 2), 2),  # dilation and groups
    ((2, 4, 40, 32), (6, 3, 3), (1, 1), (3, 3), (1, 1), 2),  # padding wider than the window
    ((1, 17, 9, 8), (9, 3, 3), (3, 1), (0, 0), (1, 1), 1),  # a stride of 3, no padding
    ((2, 6, 9, 32), (8, 3, 3), (2, 1), (1, 1), (1, 1), 2),  # vertical stride, groups, 16-float rows
    ((3, 1, 7, 5), (1, 1, 3), (1, 1), (0, 1), (1, 1), 1),  # one channel, a 1x3 window
    # The channel-lane weight gradient: chunks of images (the last one short), a last block
    # of fewer input channels, strides of 2, partial vectors of output channels, bands of rows.
    ((11, 4, 20, 20), (16, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((3, 5, 17, 23), (40, 3, 3), (2, 2), (1, 1), (1, 1), 1),
    ((2, 3, 70, 36), (33, 3, 3), (1, 1), (0, 1), (1, 1), 1),
    # The channel-lane input gradient (16 and more input channels): one vector of channels on
    # rows of 8 (its narrowest tile); a pair and a last one, padding 2 and 0, a row's last tile
    # overlapping the one before; a pair on rows of 12 without vertical padding.
    ((2, 16, 9, 8), (12, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 40, 11, 21), (24, 3, 3), (1, 1), (2, 0), (1, 1), 1),
    ((1, 32, 7, 12), (8, 3, 3), (1, 1), (0, 1), (1, 1), 1),
]


def _case_ids():
    return [f"{c[0]}x{c[1]}s{c[2][0]}p{c[3][0]}d{c[4][0]}g{c[5]}" for c in CASES]


def _gradient_engine(x_shape, w_shape, out_shape, attrs):
    """An engine with "dx" (from dy and w) and "dw" (from x and dy) functions."""
    g = _core.Graph()
    x = g.input("x", x_shape, "float32")
    dy = g.input("dy", out_shape, "float32")
    w = g.variable("w", w_shape)
    dx = g.op("conv2d_input_grad", [dy, w], {**attrs, "shape": list(x_shape)})
    dw = g.op("conv2d_weight_grad", [x, dy], {**attrs, "shape": list(w_shape)})
    engine = _core.Engine(g, seed=0)
    engine.define("dx", inputs=[dy], outputs=[dx], effects=[])
    engine.define("dw", inputs=[x, dy], outputs=[dw], effects=[])
    return engine


def _torch_gradients(x, w, dy, attrs):
    xt = torch.from_numpy(x).double().requires_grad_()
    wt = torch.from_numpy(w).double().requires_grad_()
    y = torch.nn.functional.conv2d(xt, wt, **attrs)
    y.backward(torch.from_numpy(dy).double())
    return xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=_case_ids())
def test_each_path_computes_both_gradients_as_torch(case, path, monkeypatch):
    x_shape, (o, kh, kw), stride, padding, dilation, groups = case
    attrs = conv_attrs(stride, padding, dilation, groups)
    rng = np.random.default_rng(sum(x_shape) + o)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((o, x_shape[1] // groups, kh, kw)).astype(np.float32)
    out_shape = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), **attrs).shape
    dy = rng.standard_normal(tuple(out_shape)).astype(np.float32)
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    engine = _gradient_engine(x.shape, w.shape, dy.shape, attrs)
    engine.set_variable("w", w)
    want_dx, want_dw = _torch_gradients(x, w, dy, attrs)
    # Sums of up to C*KH*KW (dx) or N*OH*OW (dw) products of unit normals: absolute
    # tolerances scale with their square roots.
    np.testing.assert_allclose(
        engine.run("dx", [dy])[0], want_dx, rtol=1e-5, atol=2e-6 * np.sqrt(o * kh * kw)
    )
    np.testing.assert_allclose(
        engine.run("dw", [x, dy])[0],
        want_dw,
        rtol=1e-5,
        atol=2e-6 * np.sqrt(dy[0, 0].size * len(x)),
    )


@pytest.mark.parametrize(
    "case", [CASES[1], CASES[2], CASES[11]], ids=["16to32", "32to64", "11images"]
)
def test_weight_gradient_is_the_same_bits_on_one_and_two_threads(case):
    x_shape, (o, kh, kw), stride, padding, dilation, groups = case
    attrs = conv_attrs(stride, padding, dilation, groups)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w_shape = (o, x_shape[1] // groups, kh, kw)
    out_shape = torch.nn.functional.conv2d(torch.from_numpy(x), torch.zeros(w_shape), **attrs).shape
    dy = rng.standard_normal(tuple(out_shape)).astype(np.float32)
    threads = _core.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            _core.set_num_threads(count)
            results.append(
                _gradient_engine(x.shape, w_shape, dy.shape, attrs).run("dw", [x, dy])[0]
            )
    finally:
        _core.set_num_threads(threads)
    np.testing.assert_array_equal(results[0], results[1])
