"""Winograd's F(4x4, 3x3) tiles (conv_winograd_f4.cpp): the unpooled forward pass of a training
plan's 3x3 convolutions and the flipped-weight input gradient, against torch in float64.

GOMETAL_CONV_WINOGRAD_F4=always forces the 6x6 tiles wherever the output sizes are multiples of
4, GOMETAL_CONV_WINOGRAD=always lets the unpooled Winograd path take every channel count, and
GOMETAL_CONV_KERNEL picks each instruction-set path the CPU has. The cases cover channel counts
no multiple of a register tile or a vector, batch 1, rows of tiles that are no whole quarter of a
vector (5 and 7 tiles), more than one block of 64 tiles, more than one group of 48 output
channels, and padding 0 to 2 (the input gradient's forward padding is 2 minus the convolution's).
Inputs and weights of 2^100 and more, Inf and NaN take F(2x2, 3x3) and its direct sums.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conv_checks import assert_torchs_non_finite_cells, conv_attrs, conv_case_arrays, torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]

# Forward: (N, C, H, W), output channels, padding, relu. The training forward reaches the tiles
# through the channel-lane kernel's rule: padding of at most 1, output rows of 16 and more.
FORWARD = [
    ((2, 16, 32, 32), 32, 1, False),  # workload B's second layer: 8 tiles a row
    ((2, 32, 16, 16), 64, 1, True),  # its third: 16 tiles, one AVX-512 vector of them
    ((1, 5, 16, 20), 7, 1, True),  # 5 tiles a row: vectors start mid-row
    ((3, 17, 18, 30), 13, 0, False),  # no padding: 16x28 outputs, 7 tiles a row
    ((2, 4, 40, 36), 6, 1, True),  # 90 tiles: two blocks, the second partial
    ((2, 8, 16, 16), 50, 1, False),  # two groups of output channels
]

# Input gradient: the convolution's input (N, C, H, W), output channels, padding.
INPUT_GRAD = [
    ((2, 32, 16, 16), 64, 1),  # workload B's third layer's input gradient
    ((1, 16, 32, 32), 32, 1),  # its second's
    ((1, 5, 12, 16), 7, 1),
    ((2, 9, 8, 20), 17, 1),
    ((1, 6, 12, 12), 5, 0),  # dy 10x10, padded by 2
    ((1, 4, 8, 12), 3, 2),  # dy 10x14, unpadded
]


@pytest.fixture(autouse=True)
def _force_the_tiles(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", "always")
    before = _core.get_num_threads()
    yield
    _core.set_num_threads(before)


def _forward_id(case):
    (n, c, h, w), o, pad, relu = case
    return f"{n}x{c}x{h}x{w}to{o}p{pad}{'relu' if relu else ''}"


def _input_grad_id(case):
    (n, c, h, w), o, pad = case
    return f"{n}x{c}x{h}x{w}from{o}p{pad}"


def _forward(case, x, w, bias, scale=None):
    """conv2d + bias (+ ReLU) of x, optionally times a variable of x's shape first (which may hold
    values the engine refuses in an input), halved so that the convolution is one step of two."""
    x_shape, _, padding, relu = case
    g = _core.Graph()
    xi = g.input("x", (-1, *x_shape[1:]) if scale is None else x_shape, "float32")
    src = xi if scale is None else g.op("mul", [xi, g.variable("s", scale.shape)])
    attrs = conv_attrs((1, 1), (padding,) * 2, (1, 1), 1)
    y = g.op(
        "add", [g.op("conv2d", [src, g.variable("w", w.shape)], attrs), g.variable("b", bias.shape)]
    )
    if relu:
        y = g.op("relu", [y])
    y = g.op("mul", [y, g.constant(0.5)])
    engine = _core.Engine(g, seed=0)
    for name, value in (("w", w), ("b", bias), ("s", scale)):
        if value is not None:
            engine.set_variable(name, value)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    return engine.run("f", [x])[0]


def _torch_forward(case, x, w, bias):
    _, _, padding, relu = case
    y = torch_conv2d(x.astype(np.float64), w, conv_attrs((1, 1), (padding,) * 2, (1, 1), 1)) + bias
    if relu:
        y = np.maximum(y, 0.0)
    return y * 0.5


def _input_grad(case, dy, w, scale=None):
    x_shape, _, padding = case
    attrs = conv_attrs((1, 1), (padding,) * 2, (1, 1), 1)
    g = _core.Graph()
    di = g.input("dy", dy.shape, "float32")
    src = di if scale is None else g.op("mul", [di, g.variable("s", scale.shape)])
    dx = g.op(
        "conv2d_input_grad", [src, g.variable("w", w.shape)], {**attrs, "shape": list(x_shape)}
    )
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    if scale is not None:
        engine.set_variable("s", scale)
    engine.define("f", inputs=[di], outputs=[dx], effects=[])
    return engine.run("f", [dy])[0]


def _torch_input_grad(case, dy, w):
    x_shape, _, padding = case
    return torch.nn.grad.conv2d_input(
        x_shape, torch.from_numpy(w).double(), torch.from_numpy(dy).double(), padding=padding
    ).numpy()


def _input_grad_arrays(case):
    x_shape, channels, padding = case
    _, w, _ = conv_case_arrays(x_shape, channels)
    n, _, h, wd = x_shape
    rng = np.random.default_rng(sum(x_shape) + 7)
    dy = rng.standard_normal((n, channels, h + 2 * padding - 2, wd + 2 * padding - 2)).astype(
        np.float32
    )
    return dy, w


# F(4x4, 3x3) rounds more than F(2x2, 3x3): its transforms scale values by up to 100 (input)
# and 361 (output) before the sums cancel. Measured over these cases against torch in float64
# (sums of K = 9 C products of unit normals, standard deviation sqrt(K)), the largest error is
# 2.8e-5 sqrt(K) (the input gradient of 32<-64 at 16x16, 6.7e-4 with sqrt(K) = 24), where
# F(2x2, 3x3) gives 1.5e-6 sqrt(K). The bound is about 3x the largest measured.
def _atol(terms: int) -> float:
    return 8e-5 * np.sqrt(terms)


def _close(got, want, case):
    np.testing.assert_allclose(got, want, rtol=0, atol=0.5 * _atol(9 * case[0][1]))


def _with_f4(setting, monkeypatch, fn):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", setting)
    try:
        return fn()
    finally:
        monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", "always")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", FORWARD, ids=[_forward_id(c) for c in FORWARD])
def test_each_path_computes_the_forward_pass_as_torch(case, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x, w, bias = conv_case_arrays(case[0], case[1])
    got = _forward(case, x, w, bias)
    _close(got, _torch_forward(case, x, w, bias), case)
    # F(2x2, 3x3) rounds differently: the 6x6 tiles ran.
    assert not np.array_equal(
        got, _with_f4("never", monkeypatch, lambda: _forward(case, x, w, bias))
    )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", INPUT_GRAD, ids=[_input_grad_id(c) for c in INPUT_GRAD])
def test_each_path_computes_the_input_gradient_as_torch(case, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    dy, w = _input_grad_arrays(case)
    got = _input_grad(case, dy, w)
    np.testing.assert_allclose(got, _torch_input_grad(case, dy, w), rtol=0, atol=_atol(9 * case[1]))
    assert not np.array_equal(got, _with_f4("never", monkeypatch, lambda: _input_grad(case, dy, w)))


@pytest.mark.parametrize("threads", [1, 2])
def test_one_and_two_threads_give_the_same_bits(threads):
    # Each image is one thread's task: the thread count cannot change a sum.
    case = ((5, 16, 32, 32), 32, 1, True)
    x, w, bias = conv_case_arrays(case[0], case[1])
    _core.set_num_threads(1)
    one = _forward(case, x, w, bias)
    _core.set_num_threads(threads)
    np.testing.assert_array_equal(_forward(case, x, w, bias), one)
    grad_case = ((5, 32, 16, 16), 64, 1)
    dy, wg = _input_grad_arrays(grad_case)
    _core.set_num_threads(1)
    one = _input_grad(grad_case, dy, wg)
    _core.set_num_threads(threads)
    got = _input_grad(grad_case, dy, wg)
    np.testing.assert_array_equal(got, one)
    np.testing.assert_allclose(
        got, _torch_input_grad(grad_case, dy, wg), rtol=0, atol=_atol(9 * 64)
    )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "value", [np.inf, -np.inf, np.nan, 1e36], ids=["inf", "-inf", "nan", "1e36"]
)
def test_values_past_2_to_the_100_take_the_other_tiles_image_by_image(value, path, monkeypatch):
    """One image holds the value and gives torch's Inf and NaN cells; the other images keep
    F(4x4, 3x3)'s bits. 1e36 (past 2^100, below F(2x2, 3x3)'s 2^120) would overflow in these
    transforms (x 25 in, x 64 out) where the true sums, about 1e36, are finite."""
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    case = ((3, 16, 16, 16), 24, 1, False)
    x, w, bias = conv_case_arrays(case[0], case[1])
    scale = np.ones(case[0], np.float32)
    plain = _forward(case, x, w, bias, scale)
    x[1, 3, 5, 7] = 1.0
    scale[1, 3, 5, 7] = value
    got = _forward(case, x, w, bias, scale)
    want = _torch_forward(case, x * scale.astype(np.float64), w, bias)
    if np.isfinite(value):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6 * value)
    else:
        assert_torchs_non_finite_cells(got[1], want[1])
    np.testing.assert_array_equal(got[[0, 2]], plain[[0, 2]])


@pytest.mark.parametrize("value", [np.inf, 1e36], ids=["inf", "1e36"])
def test_a_large_weight_takes_the_other_tiles(value):
    case = ((2, 16, 8, 16), 24, 1)
    dy, w = _input_grad_arrays(case)
    w[3, 5, 1, 2] = value
    got = _input_grad(case, dy, w)
    want = _torch_input_grad(case, dy, w)
    if np.isfinite(value):
        # Finite everywhere (the transforms' x 64 would overflow); cells in a tile beside the
        # large weight's reach lose their small terms to its rounding, as in F(2x2, 3x3).
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * value)
    else:
        assert_torchs_non_finite_cells(got, want)


def test_outputs_of_no_multiple_of_4_keep_the_2x2_tiles():
    case = ((2, 16, 18, 22), 24, 1, True)  # 18x22 outputs: F(2x2, 3x3) only
    x, w, bias = conv_case_arrays(case[0], case[1])
    got = _forward(case, x, w, bias)
    _close(got, _torch_forward(case, x, w, bias), case)


def test_an_unknown_setting_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", "sometimes")
    case = ((1, 16, 16, 16), 16, 1, False)
    x, w, bias = conv_case_arrays(case[0], case[1])
    with pytest.raises(
        ValueError, match="GOMETAL_CONV_WINOGRAD_F4 must be always or never, got 'sometimes'"
    ):
        _forward(case, x, w, bias)
