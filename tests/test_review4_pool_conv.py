"""Adversarial checks of the thread pool's runs of tasks and the F(4x4, 3x3) tiles: sample-tiled
convolutions of 65535 to 131071 images (one pool task per image, past the 16-bit unit count),
run twice with different images so that a skipped task shows as a stale image; an exception thrown
inside such a region, then the same engine again; the F(4x4) gate at exactly 2^100 and just below,
of either sign; NaN in one image of an input gradient; and a small CNN whose convolutions take the
6x6 tiles trained for several SGD steps against torch in float64 as the batch size changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conv_checks import assert_torchs_non_finite_cells, conv_attrs, torch_conv2d
from gometal import _core
from test_review4_products import train_against_torch

pytestmark = pytest.mark.usefixtures("restore_threads")

PAD1 = conv_attrs((1, 1), (1, 1), (1, 1), 1)


def _tiled_conv_engine(w_shape):
    # conv2d (padding 1) -> sum of squares; its forward and both gradients run image by image
    # inside one tiled region of the plan (one pool task per image).
    g = _core.Graph()
    x = g.input("x", (-1, w_shape[1], 4, 4), "float32")
    w = g.variable("w", w_shape)
    y = g.op("conv2d", [x, w], PAD1)
    loss = g.op("sum", [g.op("mul", [y, y])], {"axes": []})
    gx, gw = g.gradients(loss, [x, w])
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y, gx, gw], effects=[])
    return engine


def _torch_conv_and_grads(x, w):
    xt = torch.from_numpy(x).double().requires_grad_()
    wt = torch.from_numpy(w).double().requires_grad_()
    y = F.conv2d(xt, wt, padding=1)
    (y * y).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize(
    "images, threads", [(65535, 2), (65536, 2), (65537, 3), (131071, 2), (131071, 3)]
)
def test_tiled_regions_past_65535_tasks_run_every_image_once(images, threads):
    _core.set_num_threads(threads)
    w = np.random.default_rng(images).standard_normal((2, 1, 3, 3)).astype(np.float32)
    engine = _tiled_conv_engine(w.shape)
    engine.set_variable("w", w)
    assert engine.describe("f", images)[0].startswith("tiled{"), engine.describe("f", images)
    for seed in (0, 1):  # the second run overwrites the first's images: none may stay stale
        x = np.random.default_rng(seed).standard_normal((images, 1, 4, 4)).astype(np.float32)
        got = engine.run("f", [x])
        want = _torch_conv_and_grads(x, w)
        for value, ref, tol in zip(got, want, (1e-5, 1e-4, 1e-5 * np.sqrt(images))):
            np.testing.assert_allclose(value, ref, rtol=1e-4, atol=tol * np.abs(ref).max())


def test_an_exception_inside_a_tiled_region_leaves_the_pool_working(monkeypatch):
    # A bad kernel choice is refused when the per-image tasks run; the region ends, the error
    # names the variable, and the same engine then computes the next call right.
    _core.set_num_threads(2)
    w = np.random.default_rng(7).standard_normal((2, 1, 3, 3)).astype(np.float32)
    engine = _tiled_conv_engine(w.shape)
    engine.set_variable("w", w)
    x = np.random.default_rng(8).standard_normal((70000, 1, 4, 4)).astype(np.float32)
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", "bogus")
    with pytest.raises(ValueError, match="GOMETAL_CONV_KERNEL"):
        engine.run("f", [x])
    monkeypatch.delenv("GOMETAL_CONV_KERNEL")
    for value, ref in zip(engine.run("f", [x]), _torch_conv_and_grads(x, w)):
        np.testing.assert_allclose(value, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.fixture
def force_f4(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", "always")
    return monkeypatch


def _f4_forward(x, w):
    """0.5 * conv2d(x, w) (padding 1) for a symbolic batch: a sample-tiled plan, the only one
    whose forward convolutions reach the 6x6 tiles."""
    g = _core.Graph()
    xi = g.input("x", (-1, *x.shape[1:]), "float32")
    y = g.op("mul", [g.op("conv2d", [xi, g.variable("w", w.shape)], PAD1), g.constant(0.5)])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    assert engine.describe("f", x.shape[0])[0].startswith("tiled{")
    return engine.run("f", [x])[0]


def _torch_f4_forward(x, w):
    return (
        0.5
        * F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
    )


BELOW_2_100 = float(np.nextafter(np.float32(2.0**100), np.float32(0)))


@pytest.mark.parametrize("sign", (1.0, -1.0))
def test_values_just_below_2_to_the_100_keep_the_6x6_tiles_and_torchs_sums(sign, force_f4):
    # Every input a unit normal times 2^97, one of them the largest float below 2^100: all take
    # F(4x4), whose sums stay finite and within its rounding of torch's.
    rng = np.random.default_rng(100)
    x = (rng.standard_normal((2, 16, 16, 16)) * 2.0**97).astype(np.float32)
    x = np.clip(x, -BELOW_2_100, BELOW_2_100)
    x[1, 4, 7, 8] = sign * BELOW_2_100
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    got = _f4_forward(x, w)
    want = _torch_f4_forward(x, w)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    force_f4.setenv("GOMETAL_CONV_WINOGRAD_F4", "never")
    assert not np.array_equal(got, _f4_forward(x, w)), "the 6x6 tiles did not run"


@pytest.mark.parametrize("value", (2.0**100, -(2.0**100)), ids=("2^100", "-2^100"))
def test_exactly_2_to_the_100_moves_only_its_image_off_the_6x6_tiles(value, force_f4):
    rng = np.random.default_rng(101)
    x = rng.standard_normal((3, 16, 16, 16)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    plain = _f4_forward(x, w)
    x[2, 0, 0, 0] = value
    got = _f4_forward(x, w)
    np.testing.assert_array_equal(got[:2], plain[:2])
    want = _torch_f4_forward(x, w)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6 * abs(value))
    force_f4.setenv("GOMETAL_CONV_WINOGRAD_F4", "never")
    f2 = _f4_forward(x, w)
    assert not np.array_equal(got[:2], f2[:2]), "the 6x6 tiles did not run"
    np.testing.assert_array_equal(got[2], f2[2])  # F(2x2, 3x3) took the image


@pytest.mark.parametrize("threads", (1, 2))
def test_nan_in_one_image_of_dy_stays_in_that_images_input_gradient(threads, force_f4):
    # dx of sum(conv2d(x, w) * dy * sqrt(m)) with m = -1 at one cell of image 1: its dy holds
    # one NaN, and the flipped 6x6 tiles of the tiled input gradient keep it in image 1.
    _core.set_num_threads(threads)
    rng = np.random.default_rng(102)
    x = rng.standard_normal((3, 16, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((3, 32, 16, 16)).astype(np.float32)
    m = np.ones_like(dy)
    m[1, 5, 9, 3] = -1.0
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    g = _core.Graph()
    xi = g.input("x", (-1, 16, 16, 16), "float32")
    di = g.input("dy", (-1, 32, 16, 16), "float32")
    mi = g.input("m", (-1, 32, 16, 16), "float32")
    y = g.op("conv2d", [xi, g.variable("w", w.shape)], PAD1)
    loss = g.op("sum", [g.op("mul", [y, g.op("mul", [di, g.op("sqrt", [mi])])])], {"axes": []})
    (dx,) = g.gradients(loss, [xi])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.define("f", inputs=[xi, di, mi], outputs=[dx], effects=[])
    got = engine.run("f", [x, dy, m])[0]
    with np.errstate(invalid="ignore"):
        cot = dy * np.sqrt(m.astype(np.float64))
    want = torch.nn.grad.conv2d_input(
        x.shape, torch.from_numpy(w).double(), torch.from_numpy(cot), padding=1
    ).numpy()
    assert_torchs_non_finite_cells(got, want)
    assert np.isfinite(got[[0, 2]]).all() and np.isnan(got[1]).any()


def _cnn_params(rng):
    return {
        "c1": (rng.standard_normal((16, 3, 3, 3)) / np.sqrt(27)).astype(np.float32),
        "b1": (0.1 * rng.standard_normal((16, 1, 1))).astype(np.float32),
        "c2": (rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32),
        "b2": (0.1 * rng.standard_normal((32, 1, 1))).astype(np.float32),
        "c3": (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32),
        "d": (rng.standard_normal((10, 32 * 16 * 16)) / 90).astype(np.float32),
    }


def _cnn_engine(params, lr):
    # conv 3->16 -> relu -> conv 16->32 at 16x16 -> relu -> conv 32->32 -> relu -> dense
    # 8192->10 -> mean squared error; SGD on every parameter. No max pool: F(4x4)'s rounding
    # (1e-5 of a sum) picks the other of two near-tied pool inputs now and then, as any
    # float32 sum order may, which moves that window's gradient to its neighbour.
    g = _core.Graph()
    x = g.input("x", (-1, 3, 16, 16), "float32")
    t = g.input("t", (-1, 10), "float32")
    v = {name: g.variable(name, value.shape) for name, value in params.items()}
    h = g.op("relu", [g.op("add", [g.op("conv2d", [x, v["c1"]], PAD1), v["b1"]])])
    h = g.op("relu", [g.op("add", [g.op("conv2d", [h, v["c2"]], PAD1), v["b2"]])])
    h = g.op("relu", [g.op("conv2d", [h, v["c3"]], PAD1)])
    h = g.op("reshape", [h], {"shape": [-1, 32 * 16 * 16]})
    out = g.op("matmul", [h, v["d"]], {"transpose_b": True})
    diff = g.op("sub", [out, t])
    loss = g.op("mean", [g.op("mul", [diff, diff])], {"axes": []})
    grads = g.gradients(loss, list(v.values()))
    rate = g.constant(lr)
    effects = [g.op("assign", [node, g.op("sub", [node, g.op("mul", [grad, rate])])])
               for node, grad in zip(v.values(), grads)]  # fmt: skip
    engine = _core.Engine(g, seed=0)
    for name, value in params.items():
        engine.set_variable(name, value)
    engine.define("step", inputs=[x, t], outputs=[loss], effects=effects)
    return engine


def _torch_cnn_loss(p, x, t):
    h = torch.relu(F.conv2d(x, p["c1"], padding=1) + p["b1"])
    h = torch.relu(F.conv2d(h, p["c2"], padding=1) + p["b2"])
    h = torch.relu(F.conv2d(h, p["c3"], padding=1))
    return ((h.reshape(h.shape[0], -1) @ p["d"].T - t) ** 2).mean()


@pytest.mark.parametrize("threads", (1, 2))
def test_a_cnn_on_the_6x6_tiles_trains_as_torch_over_several_steps(threads, force_f4):
    _core.set_num_threads(threads)
    rng = np.random.default_rng(103)
    params, lr = _cnn_params(rng), 0.02
    engine = _cnn_engine(params, lr)
    batches = [
        (
            rng.standard_normal((batch, 3, 16, 16)).astype(np.float32),
            rng.standard_normal((batch, 10)).astype(np.float32),
        )
        for batch in (4, 3, 4, 1, 5)  # the batch changes between steps
    ]
    train_against_torch(engine, params, lr, batches, _torch_cnn_loss)
    assert any(line.startswith("tiled{ conv2d") for line in engine.describe("step", 4))


@pytest.mark.parametrize("threads", (1, 2))
@pytest.mark.parametrize("kind", ("nan", "inf", "1e36"))
def test_a_non_finite_or_huge_input_stays_in_its_image_on_the_6x6_tiles(kind, threads, force_f4):
    # conv2d(x * sqrt(m) / d) in a tiled plan: m = -1 makes a NaN, d = 0 an infinity, x = 1e36
    # a value past 2^100, each in one cell of image 1; images 0 and 2 keep the 6x6 tiles' bits.
    _core.set_num_threads(threads)
    rng = np.random.default_rng(104)
    x = rng.standard_normal((3, 16, 16, 16)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    m, d = np.ones_like(x), np.ones_like(x)
    g = _core.Graph()
    xi, mi, di = (g.input(name, (-1, 16, 16, 16), "float32") for name in ("x", "m", "d"))
    src = g.op("div", [g.op("mul", [xi, g.op("sqrt", [mi])]), di])
    y = g.op("mul", [g.op("conv2d", [src, g.variable("w", w.shape)], PAD1), g.constant(0.5)])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.define("f", inputs=[xi, mi, di], outputs=[y], effects=[])
    assert engine.describe("f", 3)[0].startswith("tiled{")
    plain = engine.run("f", [x, m, d])[0]
    np.testing.assert_array_equal(plain, _f4_forward(x, w))  # the same tiles as a plain input
    cell = (1, 6, 0, 15)  # a corner column: its tiles straddle the padding
    if kind == "nan":
        m[cell] = -1.0
    elif kind == "inf":
        d[cell] = 0.0
    else:
        x[cell] = 1e36
    got = engine.run("f", [x, m, d])[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        src64 = x.astype(np.float64) * np.sqrt(m.astype(np.float64)) / d
    want = 0.5 * torch_conv2d(src64, w.astype(np.float64), PAD1)
    np.testing.assert_array_equal(got[[0, 2]], plain[[0, 2]])
    if kind == "1e36":
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6 * 1e36)
    else:
        assert_torchs_non_finite_cells(got[1], want[1])
