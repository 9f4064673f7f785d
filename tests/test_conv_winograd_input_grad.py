"""The 3x3 input gradient as Winograd's forward tiles over dy with the flipped weights.

With GOMETAL_CONV_WINOGRAD=always, every vector path the CPU has computes conv2d_input_grad
of stride-1 3x3 convolutions with even input sizes as torch's autograd does in float64:
padding 0 to 2 (the flipped convolution pads 2 to 0), 1 to 40 channels either way, batch
1; unforced, workload B's second and third layers (16 <- 32, 32 <- 64 channels) take these
tiles. Infinite and NaN values in dy or the weights give torch's Inf and NaN positions in every
cell (the tiles would turn a lone infinity into NaN: a non-finite dy takes direct sums with the
flipped weights; non-finite weights take im2col's transpose, which leaves dy's padding out).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conv_checks import assert_torchs_non_finite_cells, conv_attrs
from cpu_paths import vector_path_available
from test_conv_winograd_grad import run_on_variables

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]


@pytest.fixture(autouse=True)
def _f2x2_tiles(monkeypatch):
    # F(4x4, 3x3)'s tiles round more and have their own bound (test_conv_winograd_f4.py).
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_F4", "never")


# (N, C, H, W), O, padding (stride 1, 3x3 windows; H and W even)
CASES = [
    ((2, 32, 16, 16), 64, (1, 1)),  # workload B's third layer
    ((2, 16, 32, 32), 32, (1, 1)),  # its second
    ((1, 5, 10, 12), 7, (0, 0)),  # no padding: dy 8 x 10, padded by 2 in the flipped form
    ((3, 17, 8, 6), 20, (2, 2)),  # padding 2: dy 10 x 8, unpadded in the flipped form
    ((1, 40, 6, 8), 1, (1, 2)),  # one channel of dy, 40 of dx; mixed padding
    ((2, 1, 4, 4), 40, (1, 1)),  # one channel of dx
    ((1, 4, 20, 36), 6, (0, 0)),  # dy 18 x 34: wide rows split by vectors, padded by 2
    ((1, 3, 8, 32), 5, (2, 2)),  # dy 10 x 34, unpadded
]


def _case_id(case):
    x_shape, o, padding = case
    return f"{'x'.join(map(str, x_shape))}from{o}p{padding[0]}{padding[1]}"


def _arrays(case, seed):
    x_shape, o, padding = case
    attrs = conv_attrs((1, 1), padding, (1, 1), 1)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((o, x_shape[1], 3, 3)).astype(np.float32)
    out = torch.nn.functional.conv2d(torch.zeros(x_shape), torch.from_numpy(w), padding=padding)
    dy = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    return dy, w, attrs


def _input_grad(dy, w, x_shape, attrs):
    """dx with dy and the weights as variables (they may hold Inf and NaN)."""
    return run_on_variables("conv2d_input_grad", dy, w, {**attrs, "shape": list(x_shape)})


def _torch_input_grad(dy, w, x_shape, attrs):
    xt = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(xt, torch.from_numpy(w).double(), padding=attrs["padding"])
    y.backward(torch.from_numpy(dy).double())
    return xt.grad.numpy()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_each_path_computes_the_input_gradient_as_torch(case, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    dy, w, attrs = _arrays(case, seed=sum(case[0]) + case[1])
    got = _input_grad(dy, w, case[0], attrs)
    want = _torch_input_grad(dy, w, case[0], attrs)
    # Sums of O*9 products of unit normals: the tolerance scales with their square root.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4e-6 * np.sqrt(case[1] * 9))


@pytest.mark.parametrize("case", CASES[:2], ids=["third-layer", "second-layer"])
def test_workload_bs_layers_take_the_tiles_unforced(case, monkeypatch):
    """The flipped tiles and the channel lanes round differently: unforced, the default's
    bits are the tiles' (and both match torch)."""
    dy, w, attrs = _arrays(case, seed=11)
    monkeypatch.delenv("GOMETAL_CONV_WINOGRAD", raising=False)
    default = _input_grad(dy, w, case[0], attrs)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    tiles = _input_grad(dy, w, case[0], attrs)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")
    lanes = _input_grad(dy, w, case[0], attrs)
    np.testing.assert_array_equal(default, tiles)
    assert not np.array_equal(tiles, lanes)
    want = _torch_input_grad(dy, w, case[0], attrs)
    np.testing.assert_allclose(lanes, want, rtol=1e-5, atol=4e-6 * np.sqrt(case[1] * 9))


@pytest.mark.parametrize("batch", [1, 3])
def test_unforced_second_layer_agrees_across_threads_and_tiling(batch, monkeypatch):
    """B's second layer's input gradient (16 <- 32 channels) after a ReLU of dy, as in a
    training step, on the default kernel: 1 and 2 threads, the whole batch and image by image
    (a sample-tiled step), the same bits, as torch."""
    from gometal import _core

    monkeypatch.delenv("GOMETAL_CONV_WINOGRAD", raising=False)
    case = ((batch, 16, 32, 32), 32, (1, 1))
    dy, w, attrs = _arrays(case, seed=batch)
    before = _core.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            for tiling in (False, True):
                _core.set_num_threads(threads)
                g = _core.Graph()
                dyi = g.input("dy", (-1, *dy.shape[1:]), "float32")
                op_attrs = {**attrs, "shape": [-1, *case[0][1:]]}
                relu = g.op("relu", [dyi])
                dx = g.op("conv2d_input_grad", [relu, g.variable("w", w.shape)], op_attrs)
                engine = _core.Engine(g, seed=0, options={"sample_tiling": tiling})
                engine.define("f", inputs=[dyi], outputs=[dx], effects=[])
                engine.set_variable("w", w)
                plan = engine.describe("f", batch, {})
                tiled = any(line.startswith("tiled{") for line in plan)
                assert tiled == (tiling and batch > 1), plan  # a batch of one runs whole
                results.append(engine.run("f", [dy])[0])
    finally:
        _core.set_num_threads(before)
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    want = _torch_input_grad(np.maximum(dy, 0), w, case[0], attrs)
    np.testing.assert_allclose(results[0], want, rtol=1e-5, atol=4e-6 * np.sqrt(case[1] * 9))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("where", ["dy", "w", "dy-nan"])
def test_infinite_and_nan_values_give_torchs_positions(where, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    case = ((2, 16, 10, 12), 32, (1, 1))
    dy, w, attrs = _arrays(case, seed=4)
    # Positive values: a lone +Inf then gives +Inf in the direct sums, where the tiles'
    # transforms (which subtract copies of it) would give NaN.
    dy, w = np.abs(dy) + 0.5, np.abs(w) + 0.5
    if where == "dy":
        dy[1, 7, 4, 5] = np.inf
    if where == "w":
        w[3, 9, 1, 2] = np.inf
    if where == "dy-nan":
        dy[0, 0, 0, 0] = np.nan
    got = _input_grad(dy, w, case[0], attrs)
    want = _torch_input_grad(dy, w, case[0], attrs)
    assert not np.isfinite(want).all()
    assert_torchs_non_finite_cells(got, want)


# (N, C, H, W), O, padding, GOMETAL_CONV_WINOGRAD: the tiles, the channel lanes and the
# flipped-weight register tiles, each of which would run over dy's zero padding.
INFINITE_WEIGHT_CASES = [
    ((2, 32, 8, 8), 64, (1, 1), "always"),
    ((2, 16, 10, 12), 32, (1, 1), "never"),
    ((2, 5, 9, 11), 7, (1, 1), "never"),
    ((1, 16, 8, 10), 24, (0, 0), "never"),
    ((1, 32, 8, 8), 8, (2, 1), "always"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "case", INFINITE_WEIGHT_CASES, ids=[_case_id(c[:3]) + c[3] for c in INFINITE_WEIGHT_CASES]
)
def test_an_infinite_weight_gives_torchs_border_cells(case, path, monkeypatch):
    """0 * Inf in dy's zero padding would put NaN on the border rows and columns, where
    torch sums only the products of real pixels: finite or +-Inf there."""
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", case[3])
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    dy, w, attrs = _arrays(case[:3], seed=8)
    dy, w = np.abs(dy) + 0.5, np.abs(w) + 0.5
    w[0, 1, 0, 0] = np.inf
    w[-1, -1, 2, 1] = -np.inf
    got = _input_grad(dy, w, case[0], attrs)
    want = _torch_input_grad(dy, w, case[0], attrs)
    assert np.isinf(want).any() and np.isfinite(want).any()
    assert_torchs_non_finite_cells(got, want)
