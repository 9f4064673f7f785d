"""Convolutions of batches smaller than twice the threads run in parts of images.

A batch of one image would otherwise run on one thread: the direct kernel then cuts each
image into bands of output rows and blocks of output channels, one task each, every part
padding the rows it reads. Each case runs at 1, 2 and 3 threads (3 on a two-core machine
still cuts a 16-row plane into channel blocks) with batches of 1 to 5 images, on every
vector path the CPU has, against torch in float64, with and without the fused bias, ReLU
and 2x2 max pooling; the threads' results must also agree to the last bit, since every
output is the same sum whichever part computes it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gometal as gm
from conv_checks import conv_attrs, torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]
THREADS = (1, 2, 3)

# (C, H, W), (O, KH, KW), stride, padding, dilation, groups
CASES = [
    ((3, 64, 64), (16, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # workload C's layers
    ((16, 32, 32), (32, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((32, 16, 16), (64, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((5, 29, 23), (13, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # odd sizes, a partial channel block
    ((6, 27, 31), (20, 5, 3), (2, 1), (2, 1), (1, 1), 2),  # vertical stride, groups
    ((4, 25, 26), (18, 3, 3), (1, 1), (2, 2), (2, 2), 1),  # dilation
    ((3, 20, 18), (16, 3, 3), (1, 1), (5, 5), (1, 1), 1),  # padding past the window's reach
]


@pytest.fixture
def restore_threads():
    previous = gm.get_num_threads()
    yield
    gm.set_num_threads(previous)


def _engine(image_shape, w_shape, attrs, pooled):
    """conv2d of input "x", then (when pooled) + bias, ReLU and a 2x2 max pooling."""
    g = _core.Graph()
    x = g.input("x", (-1, *image_shape), "float32")
    y = g.op("conv2d", [x, g.variable("w", w_shape)], attrs)
    if pooled:
        y = g.op("relu", [g.op("add", [y, g.variable("b", (w_shape[0], 1, 1))])])
        y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def _torch_reference(x, w, b, attrs, pooled):
    y = torch.from_numpy(torch_conv2d(x, w, attrs))
    if pooled:
        y = F.max_pool2d(torch.relu(y + torch.from_numpy(b).double()), 2)
    return y.numpy()


@pytest.mark.parametrize("pooled", [False, True], ids=["plain", "pooled"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}" for c in CASES])
def test_small_batches_match_torch_at_every_thread_count(
    case, path, pooled, monkeypatch, restore_threads
):
    image_shape, w_shape, stride, padding, dilation, groups = case
    attrs = conv_attrs(stride, padding, dilation, groups)
    rng = np.random.default_rng(w_shape[0] + image_shape[1])
    w = rng.standard_normal((w_shape[0], image_shape[0] // groups, *w_shape[1:]))
    w = w.astype(np.float32)
    b = rng.standard_normal((w_shape[0], 1, 1)).astype(np.float32)
    images = rng.standard_normal((5, *image_shape)).astype(np.float32)
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")  # the pooled parts of the direct kernel
    for batch in (1, 2, 3, 5):
        x = images[:batch]
        expected = _torch_reference(x, w, b, attrs, pooled)
        results = []
        for threads in THREADS:
            gm.set_num_threads(threads)
            engine = _engine(image_shape, w.shape, attrs, pooled)
            engine.set_variable("w", w)
            if pooled:
                engine.set_variable("b", b)
            got = engine.run("f", [x])[0]
            np.testing.assert_allclose(
                got, expected, rtol=1e-5, atol=1e-4, err_msg=f"batch {batch}, {threads} threads"
            )
            results.append(got)
        for threads, got in zip(THREADS[1:], results[1:]):
            np.testing.assert_array_equal(
                got, results[0], err_msg=f"batch {batch}: {threads} threads against 1"
            )


def test_a_cnn_predicts_one_image_as_torch_on_two_threads(restore_threads):
    # Workload C's CNN at batch 1: every conv runs in parts, with its epilogues fused.
    gm.set_num_threads(2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 8 * 8, 2),
    ).double()
    with torch.no_grad():
        net[4].running_mean.uniform_(-0.5, 0.5)
        net[4].running_var.uniform_(0.5, 2.0)
    net.eval()
    builder = gm.ModelBuilder((3, 64, 64))
    for i, channels in enumerate((16, 32, 64)):
        builder = builder.conv2d(channels, 3, padding=1)
        if i == 1:
            builder = builder.batch_norm()
        builder = builder.relu().max_pool2d(2)
    model = builder.flatten().dense(2).build(seed=0)
    state = [v.numpy().astype(np.float32) for k, v in net.state_dict().items() if "num_" not in k]
    model.set_weights(dict(zip(model.weight_shapes, state)))
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("winograd", ["never", "always"], ids=["direct", "winograd"])
@pytest.mark.parametrize("path", PATHS)
def test_the_fused_max_pooling_propagates_nan_as_torch(
    path, winograd, monkeypatch, restore_threads
):
    # Pooled rows 20 wide: whole vectors of 16 or 8 windows and a tail of 4, a NaN in each.
    # Inputs with NaN are refused, so the graph makes them: the log of a negative pixel.
    # Winograd's tiles are the pooling windows, so a NaN reaches the same pooled outputs.
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", winograd)
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    x = (np.abs(rng.standard_normal((1, 3, 40, 40))) + 0.5).astype(np.float32)
    x[0, 0, 5, 3] = -1.0  # a vector's first windows
    x[0, 1, 20, 37] = -1.0  # the tail's
    x[0, 2, 39, 20] = -1.0  # the last row, mid-plane
    with np.errstate(invalid="ignore"):
        logs = np.log(x.astype(np.float64))
    expected = F.max_pool2d(torch.from_numpy(torch_conv2d(logs, w, attrs)), 2).numpy()
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    g = _core.Graph()
    xi = g.input("x", (-1, 3, 40, 40), "float32")
    y = g.op("conv2d", [g.op("log", [xi]), g.variable("w", w.shape)], attrs)
    y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]})
    for threads in THREADS:
        gm.set_num_threads(threads)
        engine = _core.Engine(g, seed=0)
        engine.define("f", inputs=[xi], outputs=[y], effects=[])
        engine.set_variable("w", w)
        got = engine.run("f", [x])[0]
        np.testing.assert_array_equal(
            np.isnan(got), np.isnan(expected), err_msg=f"{threads} threads"
        )
        np.testing.assert_allclose(
            got, expected, rtol=1e-5, atol=1e-4, err_msg=f"{threads} threads"
        )
