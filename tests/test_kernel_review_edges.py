"""Edge cases of the newer CPU kernels, each against an independent reference.

Winograd's F(3x3, 2x2) weight gradient (conv_winograd_grad.cpp): geometries it must leave to
the other kernels even when forced (stride 2, dilation, groups, other windows), the channel
threshold either side of 16, padding wider than the window's reach, a finite gradient whose
transformed values overflow (the direct sums take it over), an infinity met only by zeros of
dy, the same bits on 1, 2 and 3 threads, and Conv2D layers' training gradients. Winograd's
input gradient: one image with an infinity among finite ones, and a 32-channel stack. Packed
products with a bias then GELU or a residual in their epilogue: the product's own input as
the residual, y + y, the row limit, Inf and NaN, two engines on two Python threads, Dense
layers with and without biases (attention: test_kernel_review_edges_attention.py). References:
torch in float64, NumPy, the unfused steps' values.
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


def side_by_side_mismatches(jobs, runs):
    """Runs every job (call, feeds, alone) on a Python thread of its own, all at once: `runs`
    calls of call(feeds[i % len(feeds)]) each. Returns (job, i) of every answer that differs
    from alone[i % len(feeds)], the job's answer on its own."""
    import threading

    mismatches = []
    start = threading.Barrier(len(jobs))

    def work(index, call, feeds, alone):
        start.wait()
        for i in range(runs):
            if not np.array_equal(call(feeds[i % len(feeds)]), alone[i % len(feeds)]):
                mismatches.append((index, i))

    workers = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return mismatches


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
    ((1, 16, 3, 261), 16, (1, 1), "always"),  # 131 tiles a row: a band is one row past 64
    ((2, 16, 130, 5), 17, (1, 1), "always"),  # 65 rows of 3 tiles: 21 rows a band, a short last
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", SHAPES, ids=lambda c: f"{c[0][1]}to{c[1]}p{c[2][0]}{c[2][1]}")
def test_winograd_grad_edges_match_torch_on_any_thread_count(case, threads, monkeypatch):
    x_shape, o, padding, forced = case
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", forced)
    # F(3x3, 2x2)'s edges, to its error bound: F(3x3, 4x4) has its own (test_conv_winograd_grad_f4).
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", "never")
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


def _assert_torch_gradients(grads, layer, module):
    """grads["<layer>.<name>"] equal the .grad of each of the torch module's parameters."""
    for name, p in module.named_parameters():
        expected = p.grad.numpy()
        np.testing.assert_allclose(
            grads[f"{layer}.{name}"],
            expected,
            rtol=1e-4,
            atol=1e-5 * np.abs(expected).max(),
            err_msg=f"{layer}.{name}",
        )


def _check_conv_stack_gradients(x, channels, out_padding, threads):
    """Conv2D(channels[1], 3, padding 1, GELU) then Conv2D(channels[2], 3, out_padding) on x
    (N, channels[0], H, W): every gradient of an MSE equals torch's in float64."""
    c0, c1, c2 = channels
    x_in = gm.Input(x.shape[1:])
    # GELU, not ReLU: a pre-activation within rounding of 0 would flip a ReLU's mask between
    # float32 and torch's float64 and move whole gradient cells.
    hidden = gm.layers.Conv2D(c1, 3, padding=1, activation="gelu")(x_in)
    model = gm.Model(x_in, gm.layers.Conv2D(c2, 3, padding=out_padding)(hidden))
    torch.manual_seed(sum(channels) + out_padding)
    convs = (
        torch.nn.Conv2d(c0, c1, 3, padding=1).double(),
        torch.nn.Conv2d(c1, c2, 3, padding=out_padding).double(),
    )
    model.set_weights(
        {
            f"conv2d_{i}.{name}": p.detach().numpy().astype(np.float32)
            for i, conv in enumerate(convs)
            for name, p in conv.named_parameters()
        }
    )
    out = convs[1](torch.nn.functional.gelu(convs[0](torch.from_numpy(x).double())))
    target = np.random.default_rng(c2).standard_normal(tuple(out.shape)).astype(np.float32)
    grads = _with_threads(
        threads, lambda: gm.Trainer(model, loss="mse").compute_gradients(x, target)
    )
    torch.nn.functional.mse_loss(out, torch.from_numpy(target).double()).backward()
    for i, conv in enumerate(convs):
        _assert_torch_gradients(grads, f"conv2d_{i}", conv)


@pytest.mark.parametrize(
    "x_shape, o", [((2, 3, 7, 9), 5), ((2, 1, 5, 5), 2), ((3, 40, 6, 6), 3), ((2, 4, 30, 30), 6)]
)
def test_forced_tiles_with_an_infinity_fall_back_to_whichever_kernel_the_shape_takes(
    x_shape, o, monkeypatch
):
    # Few channels: the fallback is not the channel lanes but the direct sums or im2col, which
    # must overwrite every value the tiles left in dw and in the shared sums.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    x, dy, w_shape = _arrays(x_shape, o, attrs, seed=1)
    x[1, 0, 2, 3] = np.inf
    dy = np.abs(dy) + 0.5  # +Inf in every tap of channel 0: no NaN in torch's dw
    got = _weight_grad(x, dy, w_shape, attrs, variables=True)
    want = _torch_weight_grad(x, dy, w_shape, attrs)
    assert np.isposinf(want[:, 0]).any()
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(got), mask(want), err_msg=mask.__name__)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("forced", ["always", "never"])
def test_a_conv2d_layer_trains_with_torchs_gradients(forced, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", forced)
    x = np.random.default_rng(6).standard_normal((3, 16, 9, 11)).astype(np.float32)
    _check_conv_stack_gradients(x, (16, 20, 18), out_padding=2, threads=1)


# --- Winograd's input gradient (the flipped forward tiles over dy) ---------------------------


def _input_grad(dy, w, x_shape, attrs):
    g = _core.Graph()
    dyi, wi = g.variable("dy", dy.shape), g.variable("w", w.shape)
    dx = g.op("conv2d_input_grad", [dyi, wi], {**attrs, "shape": list(x_shape)})
    engine = _core.Engine(g, seed=0)
    engine.define("dx", inputs=[], outputs=[dx], effects=[])
    engine.set_variable("dy", dy)
    engine.set_variable("w", w)
    return engine.run("dx", [])[0]


def _torch_input_grad(dy, w, x_shape, attrs):
    x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, torch.from_numpy(w).double(), padding=attrs["padding"])
    y.backward(torch.from_numpy(dy).double())
    return x.grad.numpy()


@pytest.mark.parametrize("batch", [1, 2])
def test_training_tiles_over_rows_of_8_tiles_split_over_3_threads(batch, monkeypatch):
    # 14 x 16 outputs: 7 rows of 8 tiles (half a 16-float vector each), an image's 56 tiles
    # split in chunks over 3 threads, forward and input gradient alike.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    x = np.random.default_rng(batch).standard_normal((batch, 16, 14, 16)).astype(np.float32)
    _check_conv_stack_gradients(x, (16, 32, 16), out_padding=1, threads=3)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_image_with_an_infinity_takes_direct_sums_and_leaves_the_others_tiled(
    threads, monkeypatch
):
    # Images 0 and 2 keep the tiles' bits (those of a batch without the infinity); image 1
    # gives torch's Inf and NaN positions.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    x_shape, attrs = (3, 32, 8, 10), conv_attrs((1, 1), (1, 1), (1, 1), 1)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((20, 32, 3, 3)).astype(np.float32)
    dy = np.abs(rng.standard_normal((3, 20, 8, 10))).astype(np.float32) + 0.5
    clean = _with_threads(threads, lambda: _input_grad(dy, w, x_shape, attrs))
    np.testing.assert_allclose(
        clean, _torch_input_grad(dy, w, x_shape, attrs), rtol=1e-5, atol=4e-6 * np.sqrt(20 * 9)
    )
    dy = dy.copy()
    dy[1, 6, 2, 7] = np.inf
    dy[1, 0, 7, 0] = np.nan
    got = _with_threads(threads, lambda: _input_grad(dy, w, x_shape, attrs))
    np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])
    want = _torch_input_grad(dy, w, x_shape, attrs)
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(got), mask(want), err_msg=mask.__name__)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("forced", ["", "always", "never"])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_a_conv_stack_of_32_channels_trains_with_torchs_gradients(forced, padding, monkeypatch):
    # The second convolution's input gradient (32 input channels, even planes) feeds the
    # first one's weight gradient: batch 3 on 2 threads runs it image by image.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", forced)
    x = np.random.default_rng(padding).standard_normal((3, 8, 10, 12)).astype(np.float32)
    _check_conv_stack_gradients(x, (8, 32, 24), out_padding=padding, threads=2)


@pytest.mark.parametrize("forced", ["", "always"])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_a_transposed_convolution_runs_its_forward_and_gradients_as_torch(
    forced, padding, monkeypatch
):
    # Conv2DTranspose's forward pass is conv2d_input_grad (the flipped tiles from 32 output
    # channels on) and its weight's gradient conv2d_weight_grad (the weight gradient's tiles).
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", forced)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", forced)
    torch.manual_seed(padding)
    module = torch.nn.ConvTranspose2d(24, 32, 3, padding=padding).double()
    x_in = gm.Input((24, 8, 10))
    model = gm.Model(x_in, gm.layers.Conv2DTranspose(32, 3, padding=padding)(x_in))
    model.set_weights(
        {
            f"conv2d_transpose_0.{k}": v.detach().numpy().astype(np.float32)
            for k, v in module.state_dict().items()
        }
    )
    rng = np.random.default_rng(padding)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 24, 8, 10)).astype(np.float32)
        out = module(torch.from_numpy(x).double())
        got = _with_threads(2, lambda x=x: model.predict(x))
        np.testing.assert_allclose(got, out.detach().numpy(), rtol=1e-5, atol=1e-4)
        target = rng.standard_normal(tuple(out.shape)).astype(np.float32)
        grads = _with_threads(
            2, lambda x=x, t=target: gm.Trainer(model, loss="mse").compute_gradients(x, t)
        )
        module.zero_grad()
        torch.nn.functional.mse_loss(out, torch.from_numpy(target).double()).backward()
        _assert_torch_gradients(grads, "conv2d_transpose_0", module)


def test_two_convolution_models_predict_on_two_python_threads_at_once(monkeypatch):
    # Transposed convolutions on the flipped tiles and convolutions into a 2x2 max pool on
    # the pooled tiles, each thread with its own cache of transformed weights.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    rng = np.random.default_rng(12)
    x_in = gm.Input((24, 8, 10))
    transposed = gm.Model(x_in, gm.layers.Conv2DTranspose(32, 3, padding=1)(x_in))
    pooled = gm.Model(
        x_in, gm.layers.MaxPool2D(2)(gm.layers.Conv2D(32, 3, padding=1, activation="relu")(x_in))
    )
    jobs = []
    for model in (transposed, pooled):
        feeds = [rng.standard_normal((3, 24, 8, 10)).astype(np.float32) for _ in range(3)]
        jobs.append((model.predict, feeds, [model.predict(x) for x in feeds]))
    assert not side_by_side_mismatches(jobs, runs=40)


def test_an_unknown_value_of_the_tiles_variable_is_refused_for_an_input_gradient(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "sometimes")
    rng = np.random.default_rng(0)
    dy = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((16, 32, 3, 3)).astype(np.float32)
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(
        ValueError, match="GOMETAL_CONV_WINOGRAD must be always or never, got 'sometimes'"
    ):
        _input_grad(dy, w, (2, 32, 8, 8), attrs)


# --- Products by packed weights with a bias and GELU, or a bias and a residual ------------


def _dense_engine(m, k, n, tail, variables=False):
    """(m, k) x w (n, k)^T + bias, then `tail`: "gelu", "residual" (r + y, r an input or
    variable of y's shape), "self" (x + y, x the product's own A), or "twice" (y + y)."""
    g = _core.Graph()
    x = g.variable("x", (m, k)) if variables else g.input("x", (-1, k), "float32")
    r = None
    if tail == "residual":
        r = g.variable("r", (m, n)) if variables else g.input("r", (-1, n), "float32")
    y = g.op("matmul", [x, g.variable("w", (n, k))], {"transpose_b": True})
    y = g.op("add", [y, g.variable("bias", (n,))])
    if tail == "gelu":
        y = g.op("gelu", [y])
    elif tail == "residual":
        y = g.op("add", [r, y])
    elif tail == "self":
        y = g.op("add", [x, y])
    elif tail == "twice":
        y = g.op("add", [y, y])
    engine = _core.Engine(g, seed=0)
    inputs = [] if variables else [x] + ([r] if r is not None else [])
    engine.define("f", inputs=inputs, outputs=[y], effects=[])
    return engine


def _float64_dense(x, w, bias, tail, r=None):
    y = x.astype(np.float64) @ w.astype(np.float64).T + bias
    if tail == "gelu":
        return torch.nn.functional.gelu(torch.from_numpy(y)).numpy()
    if tail == "residual":
        return r + y
    if tail == "self":
        return x + y
    return y + y


@pytest.mark.parametrize(
    "tail, step, fused",
    [("self", "matmul,add,add", True), ("twice", "matmul,add,add", False)],
)
@pytest.mark.parametrize("m", [1, 17, 1024, 1025])
def test_a_residual_that_is_the_products_own_input_or_its_sum(tail, step, fused, m, monkeypatch):
    # x + (x W^T + b) reads A again after the products; y + y is no residual. 1024 rows are
    # the most a packed product takes, 1025 go to the BLAS.
    monkeypatch.delenv("GOMETAL_GEMM_PACKED_KERNEL", raising=False)
    k = n = 40
    rng = np.random.default_rng(m)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    engine = _dense_engine(m, k, n, tail)
    plan = engine.describe("f", m)
    assert any(line.startswith(f"{step} ({m}, {n})") for line in plan) == (fused and m <= 1024), (
        plan
    )
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    for _ in range(2):  # packs, then runs on the packed copy
        got = engine.run("f", [x])[0]
        np.testing.assert_allclose(got, _float64_dense(x, w, bias, tail), rtol=1e-5, atol=1e-4)


def _non_finite_dense_operands(m, k, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32)
    x[1, 3] = np.inf  # row 1: +-Inf sums, or NaN where +Inf and -Inf products meet
    x[2, 0] = np.nan  # row 2: all NaN
    w[5, 2] = -np.inf  # column 5: +-Inf on every row
    bias[7] = np.nan  # column 7: NaN
    bias[n - 1] = np.inf  # the last (partial panel's) column
    r[0, 4] = -np.inf
    r[3, n - 1] = -np.inf  # meets the bias's +Inf: NaN
    return x, w, bias, r


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("tail", ["gelu", "residual"])
def test_non_finite_values_through_the_epilogue_land_where_the_unfused_steps_put_them(
    tail, threads, monkeypatch
):
    m, k, n = 9, 13, 37
    x, w, bias, r = _non_finite_dense_operands(m, k, n, seed=threads)
    results = {}
    for packed in ("", "off"):
        monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", packed)
        engine = _dense_engine(m, k, n, tail, variables=True)
        plan = engine.describe("f", m)
        step = "matmul,add,gelu" if tail == "gelu" else "matmul,add,add"
        assert any(line.startswith(step) for line in plan) == (packed == ""), plan
        for name, value in (("x", x), ("w", w), ("bias", bias), ("r", r)):
            if name != "r" or tail == "residual":
                engine.set_variable(name, value)
        results[packed] = _with_threads(threads, lambda e=engine: e.run("f", [])[0])
    got, unfused = results[""], results["off"]
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(got), mask(unfused), err_msg=mask.__name__)
    with np.errstate(invalid="ignore"):
        want = _float64_dense(x, w, bias, tail, r)
    assert np.isnan(got).any() and np.isinf(got).any()
    # torch's GELU of -Inf is NaN, the engine's (and its limit) 0: compare torch elsewhere.
    np.testing.assert_array_equal(np.isnan(got) | np.isnan(want), np.isnan(want))
    finite = np.isfinite(want) & np.isfinite(got)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


def test_two_models_predict_on_two_python_threads_at_once(monkeypatch):
    # Two engines' packed copies and epilogues, run side by side many times: every answer
    # equals the one each engine gives alone.
    monkeypatch.delenv("GOMETAL_GEMM_PACKED_KERNEL", raising=False)
    m, k, n = 24, 48, 70
    jobs = []
    for seed, tail in ((1, "gelu"), (2, "residual")):
        rng = np.random.default_rng(seed)
        engine = _dense_engine(m, k, n, tail)
        engine.set_variable("w", rng.standard_normal((n, k)).astype(np.float32))
        engine.set_variable("bias", rng.standard_normal(n).astype(np.float32))
        feeds = [
            [rng.standard_normal((m, k)).astype(np.float32)]
            + ([rng.standard_normal((m, n)).astype(np.float32)] if tail == "residual" else [])
            for _ in range(4)
        ]
        alone = [engine.run("f", feed)[0] for feed in feeds]
        jobs.append((lambda feed, e=engine: e.run("f", feed)[0], feeds, alone))
    assert not side_by_side_mismatches(jobs, runs=200)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gelu_layers_and_a_residual_add_predict_as_torch(bias):
    # A Dense without a bias has no add for its GELU to follow: it stays two steps.
    x_in = gm.Input((None, 20))
    hidden = gm.layers.Dense(36, activation="gelu", use_bias=bias)(x_in)
    out = gm.layers.Add()([x_in, gm.layers.Dense(20, use_bias=bias)(hidden)])
    model = gm.Model(x_in, out)
    torch.manual_seed(8)
    fc1, fc2 = (
        torch.nn.Linear(20, 36, bias=bias).double(),
        torch.nn.Linear(36, 20, bias=bias).double(),
    )
    model.set_weights(
        {
            f"dense_{i}.{name}": p.detach().numpy().astype(np.float32)
            for i, fc in enumerate((fc1, fc2))
            for name, p in fc.named_parameters()
        }
    )
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 7, 20)).astype(np.float32) * 3
        xt = torch.from_numpy(x).double()
        want = (xt + fc2(torch.nn.functional.gelu(fc1(xt)))).detach().numpy()
        np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-5)
