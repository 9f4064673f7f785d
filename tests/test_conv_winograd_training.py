"""Winograd's F(2x2, 3x3) tiles without pooling: the forward pass of a training plan's 3x3
convolutions of 16+ input channels (conv_channel_forward asks conv2d_winograd_unpooled_chosen).

Each instruction-set path the CPU has (GOMETAL_CONV_KERNEL) computes conv2d with its fused bias
and ReLU as torch does in float64: workload B's second and third layers, rows of tiles that a
vector of tiles runs over into the next row, channel counts no multiple of a register tile, and
padding 0; image by image (a sample-tiled run) and over a whole batch alike, on 1, 2 and 3
threads to the same bits. Inside a training
step the loss and every gradient match torch's; with GOMETAL_CONV_WINOGRAD=never the channel-lane
kernel runs and agrees within rounding; odd planes keep the channel lanes (their last output row
or column lies outside every 2x2 tile) and still match torch.
"""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from conv_checks import check_conv_relu_pool_step, conv_attrs, conv_case_arrays, torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]

# (N, C, H, W), output channels, padding, relu
CASES = [
    ((3, 16, 32, 32), 32, 1, False),  # workload B's second layer (batch norm follows)
    ((2, 32, 16, 16), 64, 1, True),  # its third: 8 tiles a row, 16 a vector
    ((2, 16, 12, 20), 24, 1, True),  # 10 tiles a row: vectors start mid-row
    ((1, 20, 18, 18), 19, 0, False),  # no padding (16x16 outputs), a partial register tile
]


@pytest.fixture(autouse=True)
def _without_the_nchwc_kernel(monkeypatch):
    # The NCHWc kernel's shape rule is asked first and may take some of these shapes.
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")


def _case_ids():
    return [f"{c[0][1]}to{c[1]}at{c[0][2]}x{c[0][3]}p{c[2]}{'relu' if c[3] else ''}" for c in CASES]


def _forward(case, tiled=True):
    x_shape, channels, padding, relu = case
    x, w, bias = conv_case_arrays(x_shape, channels)
    _core.set_sample_tiling(tiled)
    try:
        g = _core.Graph()
        xi = g.input("x", (-1, *x_shape[1:]), "float32")
        y = g.op(
            "conv2d", [xi, g.variable("w", w.shape)], conv_attrs((1, 1), (padding,) * 2, (1, 1), 1)
        )
        y = g.op("add", [y, g.variable("bias", bias.shape)])
        if relu:
            y = g.op("relu", [y])
        # A second step per image, so that a sample-tiled run holds the convolution.
        y = g.op("mul", [y, y])
        engine = _core.Engine(g, seed=0)
        engine.set_variable("w", w)
        engine.set_variable("bias", bias)
        engine.define("f", inputs=[xi], outputs=[y], effects=[])
        return engine.run("f", [x])[0]
    finally:
        _core.set_sample_tiling(True)


def _torch_forward(case):
    x_shape, channels, padding, relu = case
    x, w, bias = conv_case_arrays(x_shape, channels)
    want = torch_conv2d(x, w, conv_attrs((1, 1), (padding,) * 2, (1, 1), 1)) + bias
    if relu:
        want = np.maximum(want, 0.0)
    return want * want


def _close(got, want, channels_in):
    # Sums of C*9 products of unit normals, squared: tolerances scale with their size.
    scale = np.sqrt(channels_in * 9)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale * scale)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=_case_ids())
def test_each_path_computes_the_fused_conv_as_torch(case, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    _close(_forward(case), _torch_forward(case), case[0][1])


def test_image_by_image_and_whole_batch_agree():
    # 8 images: the whole batch runs image by image too (smaller batches than twice the threads
    # are cut into parts of images by the pixel-lane kernel instead).
    case = ((8, 16, 32, 32), 32, 1, False)
    np.testing.assert_array_equal(_forward(case, tiled=True), _forward(case, tiled=False))


def test_one_two_and_three_threads_give_the_same_bits():
    # Each image is one thread's whole task, so the thread count cannot change a sum.
    case = ((7, 32, 16, 16), 64, 1, True)
    previous = gm.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            gm.set_num_threads(threads)
            results.append(_forward(case))
    finally:
        gm.set_num_threads(previous)
    _close(results[0], _torch_forward(case), case[0][1])
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("case", CASES[:2], ids=_case_ids()[:2])
def test_the_channel_lane_kernel_agrees_within_rounding(case, monkeypatch):
    winograd = _forward(case)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")
    lanes = _forward(case)
    assert not np.array_equal(winograd, lanes), "the two kernels round differently: both must run"
    _close(winograd, lanes, case[0][1])


def test_odd_planes_keep_the_channel_lanes_and_match_torch():
    case = ((2, 16, 17, 19), 32, 1, True)
    _close(_forward(case), _torch_forward(case), 16)


def test_a_training_step_matches_torch():
    """conv (Winograd) -> ReLU -> 2x2 max pool -> squared sum: the loss and every gradient."""
    x, w, bias = conv_case_arrays((4, 16, 16, 20), 32)
    check_conv_relu_pool_step(x, w / 12.0, bias)
