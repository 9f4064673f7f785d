"""The forward convolution with output channels across the vector lanes (conv_channel_forward).

Training plans' 3x3, stride-1 convolutions (no pooling epilogue, rows of 16 pixels and more)
run it; each vector path (GOMETAL_CONV_KERNEL=portable|avx2|avx512) computes conv2d with its
fused bias and ReLU as torch does in float64, on workload B's layers and on partial vectors of
output channels, rows whose last tile overlaps the one before, and padding 0; inside a training
step its outputs and gradients match torch's; GOMETAL_CONV_CHANNEL_FORWARD=never (the pixel-lane
kernel) gives the same values; an unknown value of that variable is refused by name; a write
to the weights reaches the next run of this kernel and of the channel-lane input gradient,
which both keep their packed weights per thread, and more convolutions than that cache holds
stay exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conv_checks import check_conv_relu_pool_step, conv_attrs, conv_case_arrays, torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]


@pytest.fixture(autouse=True)
def _without_the_nchwc_and_winograd_kernels(monkeypatch):
    # The NCHWc kernel's shape rule is asked first and may take some of these shapes; Winograd's
    # tiles take planes of 16+ input channels (test_conv_winograd_training.py).
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")


# (N, C, H, W), output channels, padding, relu
CASES = [
    ((3, 3, 64, 64), 16, 1, True),  # workload B's first layer
    ((2, 16, 32, 32), 32, 1, False),  # its second (batch norm follows: bias alone)
    ((2, 32, 16, 16), 64, 1, True),  # its third
    ((2, 5, 20, 20), 24, 1, True),  # a partial vector of channels, an overlapping last tile
    ((1, 7, 19, 35), 9, 0, False),  # no padding, fewer channels than one AVX2 vector
    ((2, 16, 17, 17), 40, 1, True),  # 17-pixel rows: the last tile overlaps by 15
]


def _case_ids():
    return [f"{c[0][1]}to{c[1]}at{c[0][2]}x{c[0][3]}p{c[2]}{'relu' if c[3] else ''}" for c in CASES]


def _conv_engine(x_shape, channels, padding, relu):
    g = _core.Graph()
    x = g.input("x", (-1, *x_shape[1:]), "float32")
    w = g.variable("w", (channels, x_shape[1], 3, 3))
    y = g.op("conv2d", [x, w], conv_attrs((1, 1), (padding, padding), (1, 1), 1))
    y = g.op("add", [y, g.variable("bias", (channels, 1, 1))])
    if relu:
        y = g.op("relu", [y])
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def _run(case, monkeypatch, path, lanes=None):
    x_shape, channels, padding, relu = case
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    if lanes is not None:
        monkeypatch.setenv("GOMETAL_CONV_CHANNEL_FORWARD", lanes)
    x, w, bias = conv_case_arrays(x_shape, channels)
    engine = _conv_engine(x_shape, channels, padding, relu)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    return engine.run("f", [x])[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=_case_ids())
def test_each_path_computes_the_fused_conv_as_torch(case, path, monkeypatch):
    x_shape, channels, padding, relu = case
    x, w, bias = conv_case_arrays(x_shape, channels)
    want = torch_conv2d(x, w, conv_attrs((1, 1), (padding, padding), (1, 1), 1)) + bias
    if relu:
        want = np.maximum(want, 0.0)
    # Sums of C*9 products of unit normals: the absolute tolerance scales with their root.
    np.testing.assert_allclose(
        _run(case, monkeypatch, path), want, rtol=1e-5, atol=2e-6 * np.sqrt(x_shape[1] * 9)
    )


@pytest.mark.parametrize("case", CASES[:4], ids=_case_ids()[:4])
def test_the_pixel_lane_kernel_gives_the_same_values(case, monkeypatch):
    # Both sum the taps in the same order (input channel, window row, column) from zero.
    np.testing.assert_array_equal(
        _run(case, monkeypatch, PATHS[-1], "always"), _run(case, monkeypatch, PATHS[-1], "never")
    )


def test_a_training_step_matches_torch():
    """conv (this kernel) -> ReLU -> 2x2 max pool -> sum: the loss and every gradient."""
    x, w, bias = conv_case_arrays((4, 6, 18, 20), 20)
    lines = check_conv_relu_pool_step(x, w, bias)
    assert any("conv2d,add,relu" in line for line in lines)


def test_an_unknown_choice_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_CHANNEL_FORWARD", "sometimes")
    with pytest.raises(ValueError, match="GOMETAL_CONV_CHANNEL_FORWARD must be always or never"):
        _run(CASES[0], monkeypatch, PATHS[0])


def test_new_weights_are_seen_by_both_channel_lane_kernels():
    """Both kernels keep their packed weights per thread across runs: a write to the weights
    (same buffer, new values) must reach the next run's forward pass and input gradient."""
    x_shape, channels = (2, 16, 12, 20), 24
    x, w, _ = conv_case_arrays(x_shape, channels)
    g = _core.Graph()
    xi = g.input("x", x_shape, "float32")
    wv = g.variable("w", w.shape)
    y = g.op("conv2d", [xi, wv], conv_attrs((1, 1), (1, 1), (1, 1), 1))
    loss = g.op("sum", [g.op("mul", [y, y])], {"axes": []})
    (dx,) = g.gradients(loss, [xi])
    engine = _core.Engine(g, seed=0)
    engine.define("step", inputs=[xi], outputs=[y, dx], effects=[])
    for weights in (w, -2.0 * w[::-1].copy()):
        engine.set_variable("w", weights)
        got_y, got_dx = engine.run("step", [x])
        xt = torch.from_numpy(x).double().requires_grad_()
        yt = torch.nn.functional.conv2d(xt, torch.from_numpy(weights).double(), padding=1)
        (yt * yt).sum().backward()
        np.testing.assert_allclose(got_y, yt.detach().numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got_dx, xt.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_more_convolutions_than_the_cache_holds_stay_exact():
    """20 convolutions in a row (the per-thread cache keeps 16 packings): each run repacks the
    weights that were dropped, and every run gives torch's values."""
    layers, channels, rng = 20, 16, np.random.default_rng(3)
    x = rng.standard_normal((2, channels, 8, 16)).astype(np.float32)
    weights = [
        (rng.standard_normal((channels, channels, 3, 3)) / 12).astype(np.float32)
        for _ in range(layers)
    ]
    g = _core.Graph()
    y = xi = g.input("x", x.shape, "float32")
    for i in range(layers):
        y = g.op(
            "conv2d",
            [y, g.variable(f"w{i}", weights[i].shape)],
            conv_attrs((1, 1), (1, 1), (1, 1), 1),
        )
    engine = _core.Engine(g, seed=0)
    for i, w in enumerate(weights):
        engine.set_variable(f"w{i}", w)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    want = torch.from_numpy(x).double()
    for w in weights:
        want = torch.nn.functional.conv2d(want, torch.from_numpy(w).double(), padding=1)
    for _ in range(2):
        np.testing.assert_allclose(engine.run("f", [x])[0], want.numpy(), rtol=1e-4, atol=1e-5)
