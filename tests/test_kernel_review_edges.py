"""Edge cases of the newer CPU kernels, each against an independent reference.

Winograd's F(3x3, 2x2) weight gradient (conv_winograd_grad.cpp): geometries it must leave to
the other kernels even when forced (stride 2, dilation, groups, 5x5 windows), the channel
threshold either side of 16, padding wider than the window's reach, a finite gradient whose
transformed values overflow (the direct sums must take it over), an infinity met only by
zeros of dy, and the same bits on 1, 2 and 3 threads; then a Conv2D layer's training
gradients through the public API. Reference: torch's autograd in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from conv_checks import conv_attrs
from gometal import _core


def _with_threads(threads, body):
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        return body()
    finally:
        gm.set_num_threads(previous)


# --- Winograd's weight gradient ------------------------------------------------------------


def _weight_grad(x, dy, w_shape, attrs, variables=False):
    """conv2d_weight_grad of x and dy; as variables when they hold non-finite values."""
    g = _core.Graph()
    if variables:
        xi, dyi = g.variable("x", x.shape), g.variable("dy", dy.shape)
    else:
        xi, dyi = g.input("x", x.shape, "float32"), g.input("dy", dy.shape, "float32")
    dw = g.op("conv2d_weight_grad", [xi, dyi], {**attrs, "shape": list(w_shape)})
    engine = _core.Engine(g, seed=0)
    engine.define("dw", inputs=[] if variables else [xi, dyi], outputs=[dw], effects=[])
    if variables:
        engine.set_variable("x", x)
        engine.set_variable("dy", dy)
        return engine.run("dw", [])[0]
    return engine.run("dw", [x, dy])[0]


def _torch_weight_grad(x, dy, w_shape, attrs):
    w = torch.zeros(w_shape, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(
        torch.from_numpy(x).double(),
        w,
        stride=attrs["stride"],
        padding=attrs["padding"],
        dilation=attrs["dilation"],
        groups=attrs["groups"],
    )
    y.backward(torch.from_numpy(dy).double())
    return w.grad.numpy()


def _arrays(x_shape, o, attrs, kernel=(3, 3), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w_shape = (o, x_shape[1] // attrs["groups"], *kernel)
    out = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.zeros(w_shape),
        stride=attrs["stride"],
        padding=attrs["padding"],
        dilation=attrs["dilation"],
        groups=attrs["groups"],
    )
    dy = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    return x, dy, w_shape


def _assert_weight_grad(got, want, dy):
    terms = dy[0, 0].size * len(dy)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4e-6 * np.sqrt(terms))


# (N, C, H, W), O, kernel, stride, padding, dilation, groups: none of them Winograd's.
REFUSED = [
    ((2, 16, 11, 10), 16, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    ((2, 16, 11, 10), 16, (3, 3), (1, 2), (1, 1), (1, 1), 1),
    ((2, 16, 12, 12), 16, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    ((2, 32, 9, 9), 32, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((1, 16, 9, 9), 16, (5, 5), (1, 1), (2, 2), (1, 1), 1),
    ((1, 16, 9, 9), 16, (3, 1), (1, 1), (1, 0), (1, 1), 1),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: f"k{c[2]}s{c[3]}d{c[5]}g{c[6]}")
def test_forced_winograd_grad_leaves_other_geometries_to_the_other_kernels(case, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    x_shape, o, kernel, stride, padding, dilation, groups = case
    attrs = conv_attrs(stride, padding, dilation, groups)
    x, dy, w_shape = _arrays(x_shape, o, attrs, kernel, seed=len(x_shape) + o)
    got = _weight_grad(x, dy, w_shape, attrs)
    _assert_weight_grad(got, _torch_weight_grad(x, dy, w_shape, attrs), dy)


# (N, C, H, W), O, padding, GOMETAL_CONV_WINOGRAD_GRAD ("" = the shape decides)
SHAPES = [
    ((2, 15, 8, 8), 16, (1, 1), ""),  # one side under the threshold
    ((2, 16, 8, 8), 15, (1, 1), ""),
    ((2, 16, 8, 8), 16, (1, 1), ""),  # at it
    ((3, 17, 7, 9), 31, (3, 3), "always"),  # padding past the window: border outputs see zeros
    ((1, 24, 2, 2), 16, (1, 1), "always"),  # one tile, 2x2 planes
    ((2, 16, 3, 40), 17, (0, 1), "always"),  # one output row, a long row of tiles
    ((9, 16, 5, 5), 16, (2, 0), "always"),  # 9 images: chunks of 2, the last one alone
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", SHAPES, ids=lambda c: f"{c[0][1]}to{c[1]}p{c[2][0]}{c[2][1]}")
def test_winograd_grad_edges_match_torch_on_any_thread_count(case, threads, monkeypatch):
    x_shape, o, padding, forced = case
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", forced)
    attrs = conv_attrs((1, 1), padding, (1, 1), 1)
    x, dy, w_shape = _arrays(x_shape, o, attrs, seed=sum(x_shape) + o)
    got = _with_threads(threads, lambda: _weight_grad(x, dy, w_shape, attrs))
    _assert_weight_grad(got, _torch_weight_grad(x, dy, w_shape, attrs), dy)
    if threads > 1:  # the chunks are fixed by the batch alone: the same bits as one thread
        np.testing.assert_array_equal(
            got, _with_threads(1, lambda: _weight_grad(x, dy, w_shape, attrs))
        )


@pytest.mark.parametrize(
    "channels, tiles", [((15, 16), False), ((16, 15), False), ((16, 16), True)]
)
def test_unforced_the_channel_counts_choose_the_tiles_from_16_on(channels, tiles, monkeypatch):
    # The tiles round differently from the direct sums: unforced, the bits are those of
    # "always" from 16 input and 16 output channels on, else those of "never".
    c, o = channels
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    x, dy, w_shape = _arrays((2, c, 8, 8), o, attrs, seed=c + o)
    results = {}
    for forced in ("", "always", "never"):
        monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", forced)
        results[forced] = _weight_grad(x, dy, w_shape, attrs)
    assert not np.array_equal(results["always"], results["never"])
    np.testing.assert_array_equal(results[""], results["always" if tiles else "never"])


def test_a_finite_gradient_whose_tiles_overflow_is_computed_by_direct_sums(monkeypatch):
    # Two neighbouring inputs near float32's largest: the input transform adds them (Inf),
    # while every direct product (x * 1e-3) and every sum of them stays finite.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    x, dy, w_shape = _arrays((2, 16, 8, 8), 16, attrs, seed=4)
    x[1, 3, 4, 4] = x[1, 3, 4, 5] = 3e38
    dy = (np.abs(dy) * 1e-3).astype(np.float32)
    got = _weight_grad(x, dy, w_shape, attrs, variables=True)
    want = _torch_weight_grad(x, dy, w_shape, attrs)
    assert np.isfinite(want).all() and np.abs(want).max() < 3e38
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_an_infinity_met_only_by_zero_gradients_gives_torchs_nans(monkeypatch):
    # Inf * 0 is NaN in the direct sums: the taps of that channel are NaN for every output
    # channel, the others stay finite, as torch's.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    x, dy, w_shape = _arrays((2, 16, 6, 6), 16, attrs, seed=5)
    dy[1] = 0.0
    x[1, 7, 2, 3] = -np.inf
    got = _weight_grad(x, dy, w_shape, attrs, variables=True)
    want = _torch_weight_grad(x, dy, w_shape, attrs)
    assert np.isnan(want[:, 7]).all() and np.isfinite(np.delete(want, 7, axis=1)).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("forced", ["always", "never"])
def test_a_conv2d_layer_trains_with_torchs_gradients(forced, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", forced)
    x_in = gm.Input((16, 9, 11))
    hidden = gm.layers.Conv2D(20, 3, padding=1, activation="relu")(x_in)
    model = gm.Model(x_in, gm.layers.Conv2D(18, 3, padding=2)(hidden))
    conv1 = torch.nn.Conv2d(16, 20, 3, padding=1).double()
    conv2 = torch.nn.Conv2d(20, 18, 3, padding=2).double()
    model.set_weights(
        {
            f"conv2d_{i}.{name}": p.detach().numpy().astype(np.float32)
            for i, conv in enumerate((conv1, conv2))
            for name, p in conv.named_parameters()
        }
    )
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 16, 9, 11)).astype(np.float32)
    target = rng.standard_normal((3, 18, 11, 13)).astype(np.float32)
    grads = gm.Trainer(model, loss="mse").compute_gradients(x, target)
    out = conv2(torch.relu(conv1(torch.from_numpy(x).double())))
    torch.nn.functional.mse_loss(out, torch.from_numpy(target).double()).backward()
    for i, conv in enumerate((conv1, conv2)):
        for name, p in conv.named_parameters():
            expected = p.grad.numpy()
            np.testing.assert_allclose(
                grads[f"conv2d_{i}.{name}"],
                expected,
                rtol=1e-4,
                atol=1e-5 * np.abs(expected).max(),
                err_msg=f"conv2d_{i}.{name}",
            )
