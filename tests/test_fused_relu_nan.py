"""A ReLU fused into a convolution's or a product's epilogue keeps NaN, as the element-wise relu
and torch.relu do: a NaN made inside the graph (here a NaN weight) must reach the output, not
turn into 0. Every convolution kernel (channel lanes forced on and off, Winograd's tiles where
pooled, each vector path, the small-batch parts at batch 1) and every packed-product path is
checked against torch in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conv_checks import conv_attrs, torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core
from matmul_checks import dense_engine

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]
NAN_CHANNEL = 5


@pytest.fixture(autouse=True)
def _restore_threads():
    before = _core.get_num_threads()
    yield
    _core.set_num_threads(before)


def _conv_relu_engine(x_shape, channels, pool, threads):
    g = _core.Graph()
    x = g.input("x", (-1, *x_shape[1:]), "float32")
    y = g.op(
        "conv2d",
        [x, g.variable("w", (channels, x_shape[1], 3, 3))],
        conv_attrs((1, 1), (1, 1), (1, 1), 1),
    )
    y = g.op("relu", [g.op("add", [y, g.variable("bias", (channels, 1, 1))])])
    if pool:
        y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]})
    _core.set_num_threads(threads)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


@pytest.mark.parametrize("pool", [False, True], ids=["relu", "relu_pool"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("lanes", ["always", "never", "winograd"])
@pytest.mark.parametrize("path", PATHS)
# an 11x13 plane (channel lanes when allowed) and a 40-wide one (the pixel-lane kernel)
@pytest.mark.parametrize("x_shape", [(3, 10, 11, 13), (1, 10, 11, 13), (2, 8, 20, 40)])
def test_a_fused_conv_relu_keeps_nan(x_shape, path, lanes, threads, pool, monkeypatch):
    if lanes == "winograd":  # pooled: Winograd's tiles; else the kernels of the shape rules
        monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    else:
        monkeypatch.setenv("GOMETAL_CONV_NCHWC", lanes)
        monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((19, x_shape[1], 3, 3)).astype(np.float32)
    w[NAN_CHANNEL, 0, 1, 1] = np.nan
    bias = rng.standard_normal((19, 1, 1)).astype(np.float32)
    engine = _conv_relu_engine(x_shape, 19, pool, threads)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    fused = "conv2d,add,relu" + (",max_pool2d" if pool else "")
    assert any(fused in step for step in engine.describe("f", x_shape[0]))

    expected = torch.relu(
        torch.from_numpy(torch_conv2d(x, w, conv_attrs((1, 1), (1, 1), (1, 1), 1)) + bias)
    )
    if pool:
        expected = F.max_pool2d(expected, 2)
    got = engine.run("f", [x])[0]
    assert np.isnan(got[:, NAN_CHANNEL]).all()
    np.testing.assert_allclose(
        got, expected.numpy(), rtol=1e-4, atol=1e-4
    )  # NaN where torch has NaN


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows", [1, 3, 64])
def test_a_dense_layer_with_a_fused_relu_keeps_nan(rows, path, threads, monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    monkeypatch.setenv("GOMETAL_GEMM_SMALL_KERNEL", path)
    rng = np.random.default_rng(rows)
    k, n = 40, 70  # 70 outputs: whole panels and a last one cut short
    a = rng.standard_normal((rows, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    w[NAN_CHANNEL, 3] = np.nan  # a column in the first panel
    w[n - 1, 0] = np.nan  # and one in the last, partial panel
    _core.set_num_threads(threads)
    engine = dense_engine(k, n, relu=True)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    got = engine.run("f", [a])[0]
    expected = torch.relu(
        torch.from_numpy(a).double() @ torch.from_numpy(w).double().T
        + torch.from_numpy(bias).double()
    )
    assert np.isnan(got[:, NAN_CHANNEL]).all() and np.isnan(got[:, n - 1]).all()
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-4)
