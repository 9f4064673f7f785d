"""The channel-lane convolution (cpu/conv_nchwc.cpp): output channels across the vector lanes.

GOMETAL_CONV_NCHWC=always runs it wherever it can (one group), on every instruction-set path
the CPU has (GOMETAL_CONV_KERNEL), and each result is compared with torch's conv2d in float64:
odd sizes, strides and dilations in both directions, padding or none, channel counts that
are no multiple of a vector, batches of 1 to 5, 1 and 2 threads, the whole batch at once and
image by image (sample tiling), with and without the fused bias, batch-norm, ReLU and 2x2
max-pooling epilogue, taps in one chunk of input channels or several (partial sums kept
between chunks; channel counts no multiple of a chunk). Grouped convolutions fall back to the other kernels with the same
results, and an unknown value of the variable is refused naming it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conv_checks import conv_attrs, torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]

# (N, C, H, W), (O, KH, KW), stride, padding, dilation
CASES = [
    ((3, 32, 8, 8), (64, 3, 3), (1, 1), (1, 1), (1, 1)),  # the batch-norm CNN's last layer
    ((2, 16, 16, 16), (32, 3, 3), (1, 1), (1, 1), (1, 1)),  # workload C's second layer
    ((1, 5, 13, 7), (7, 3, 3), (1, 1), (1, 1), (1, 1)),  # fewer channels than one block
    ((5, 9, 11, 10), (40, 3, 3), (1, 1), (0, 0), (1, 1)),  # 40 = 2.5 blocks of 16, no padding
    ((2, 8, 15, 17), (24, 5, 3), (2, 3), (2, 1), (1, 1)),  # strides in both directions
    ((1, 6, 14, 12), (17, 3, 3), (1, 2), (2, 2), (2, 1)),  # dilation, 17 = one block + 1
    ((3, 12, 9, 9), (33, 1, 1), (1, 1), (0, 0), (1, 1)),  # pointwise
    ((1, 3, 5, 4), (16, 3, 3), (1, 1), (1, 1), (1, 1)),  # fewer outputs than a tile
    # Taps in chunks of input channels (16 a chunk for 4 blocks of 16, 32 for 2; 64 on the
    # 8-lane paths): channel counts no multiple of a chunk, several bands of pixels.
    ((2, 37, 8, 8), (64, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 70, 9, 11), (24, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 41, 13, 12), (50, 5, 5), (2, 1), (2, 2), (1, 1)),
    ((1, 20, 17, 16), (64, 3, 3), (1, 1), (1, 1), (1, 1)),
]


def _ids(cases):
    return [f"{c[0]}x{c[1]}s{c[2]}p{c[3]}d{c[4]}" for c in cases]


def _inputs(x_shape, w_shape, groups=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((w_shape[0], x_shape[1] // groups, *w_shape[1:])).astype(np.float32)
    return x, w


def _engine(graph_fn, threads, tiling=None):
    """An engine of the graph graph_fn builds, compiled for `threads` threads."""
    g = _core.Graph()
    inputs, outputs = graph_fn(g)
    _core.set_num_threads(threads)
    options = {} if tiling is None else {"sample_tiling": tiling}
    engine = _core.Engine(g, seed=0, options=options)
    engine.define("f", inputs=inputs, outputs=outputs, effects=[])
    return engine


@pytest.fixture(autouse=True)
def _restore_threads():
    before = _core.get_num_threads()
    yield
    _core.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_each_path_computes_conv2d_as_torch(case, path, threads, monkeypatch):
    x_shape, w_shape, stride, padding, dilation = case
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    attrs = conv_attrs(stride, padding, dilation, 1)
    x, w = _inputs(x_shape, w_shape, seed=x_shape[1] + w_shape[0])

    def graph(g):
        xi = g.input("x", (-1, *x_shape[1:]), "float32")
        return [xi], [g.op("conv2d", [xi, g.variable("w", w.shape)], attrs)]

    engine = _engine(graph, threads)
    engine.set_variable("w", w)
    got = engine.run("f", [x])[0]
    np.testing.assert_allclose(got, torch_conv2d(x, w, attrs), rtol=1e-5, atol=1e-4)


def test_grouped_convolutions_fall_back_with_the_same_results(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "always")
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 2)
    x, w = _inputs((2, 8, 9, 9), (16, 3, 3), groups=2, seed=3)

    def graph(g):
        xi = g.input("x", (-1, 8, 9, 9), "float32")
        return [xi], [g.op("conv2d", [xi, g.variable("w", w.shape)], attrs)]

    engine = _engine(graph, 2)
    engine.set_variable("w", w)
    np.testing.assert_allclose(
        engine.run("f", [x])[0], torch_conv2d(x, w, attrs), rtol=1e-5, atol=1e-4
    )


def test_an_unknown_value_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "sometimes")
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)

    def graph(g):
        xi = g.input("x", (-1, 16, 8, 8), "float32")
        return [xi], [g.op("conv2d", [xi, g.variable("w", (16, 16, 3, 3))], attrs)]

    with pytest.raises(
        ValueError, match="GOMETAL_CONV_NCHWC must be always or never, got 'sometimes'"
    ):
        engine = _engine(graph, 1)
        engine.run("f", [np.zeros((1, 16, 8, 8), np.float32)])


# -- epilogues and chains ---------------------------------------------------------------------

# conv, then per-channel operations (name, operand) and maybe a 2x2 max pooling
EPILOGUES = {
    "none": [],
    "bias_relu": ["add", "relu"],
    "batch_norm_relu_pool": ["add", "mul", "add", "relu", "pool"],
    "bias_relu_pool": ["add", "relu", "pool"],
    "scale_shift": ["mul", "add"],
}


def _torch_chain(x, w, attrs, ops, operands):
    y = torch.from_numpy(torch_conv2d(x, w, attrs))
    for op, value in zip(ops, operands):
        if op == "relu":
            y = torch.relu(y)
        elif op == "pool":
            y = F.max_pool2d(y, 2)
        else:
            v = torch.from_numpy(value).double()
            y = y + v if op == "add" else y * v
    return y.numpy()


# (N, C, H, W), output channels: 19 is one vector block and a partial one, on an odd plane
# the pooling floors; 64 from 37 input channels takes the taps in chunks on AVX-512.
EPILOGUE_SHAPES = {"one_chunk": ((3, 10, 11, 13), 19), "chunks": ((2, 37, 10, 9), 64)}


@pytest.mark.parametrize("tiling", [False, True], ids=["whole_batch", "tiled"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", list(EPILOGUE_SHAPES))
@pytest.mark.parametrize("name", list(EPILOGUES))
def test_fused_epilogues_match_torch(name, shape, path, threads, tiling, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    ops = EPILOGUES[name]
    attrs = conv_attrs((1, 1), (1, 1), (1, 1), 1)
    x_shape, o = EPILOGUE_SHAPES[shape]
    x, w = _inputs(x_shape, (o, 3, 3), seed=11)
    rng = np.random.default_rng(12)
    operands = [
        None if op in ("relu", "pool") else rng.standard_normal((o, 1, 1)).astype(np.float32)
        for op in ops
    ]
    # A second conv reads the first's result, so a tiled plan runs both image by image.
    w2 = rng.standard_normal((16, o, 3, 3)).astype(np.float32)

    def graph(g):
        xi = g.input("x", (-1, *x_shape[1:]), "float32")
        y = g.op("conv2d", [xi, g.variable("w", w.shape)], attrs)
        for i, op in enumerate(ops):
            if op == "relu":
                y = g.op("relu", [y])
            elif op == "pool":
                y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]})
            else:
                y = g.op(op, [y, g.variable(f"operand_{i}", (o, 1, 1))])
        return [xi], [g.op("conv2d", [y, g.variable("w2", w2.shape)], attrs)]

    engine = _engine(graph, threads, tiling)
    engine.set_variable("w", w)
    engine.set_variable("w2", w2)
    for i, value in enumerate(operands):
        if value is not None:
            engine.set_variable(f"operand_{i}", value)
    steps = engine.describe("f", x.shape[0])
    if ops:
        fused = ",".join(["conv2d"] + [("max_pool2d" if op == "pool" else op) for op in ops])
        assert any(fused in step for step in steps), steps
    first = _torch_chain(x, w, attrs, ops, operands)
    expected = torch_conv2d(first, w2, attrs)
    np.testing.assert_allclose(engine.run("f", [x])[0], expected, rtol=1e-4, atol=1e-3)
