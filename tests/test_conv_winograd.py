"""The Winograd F(2x2, 3x3) convolution with a fused 2x2 max pooling (cpu/conv_winograd.cpp).

GOMETAL_CONV_WINOGRAD=always runs it wherever it can (3x3, unit stride and dilation, one
group, pooled), on every instruction-set path the CPU has (GOMETAL_CONV_KERNEL), and each
result is compared with torch in float64: workload C's layers, odd planes whose pooling floors,
padding of 0 and 2, channel counts no multiple of a register tile, tile counts no multiple of a
vector, batches of 1 to 5 at 1, 2 and 3 threads (a small batch cuts each image into ranges of
tiles), the whole batch at once and image by image. Every output is the same sum however the
batch is cut, so the threads, the batch sizes and the two ways of running agree to the last bit.
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
THREADS = (1, 2, 3)

# (C, H, W), output channels, padding
CASES = [
    ((3, 64, 64), 16, 1),  # workload C's layers
    ((16, 32, 32), 32, 1),
    ((32, 16, 16), 64, 1),
    ((5, 13, 11), 7, 1),  # odd plane, fewer channels than a register tile
    ((9, 10, 9), 19, 0),  # no padding, 19 channels: whole tiles and a partial one
    ((8, 9, 12), 40, 2),  # padding past one pixel
    ((20, 30, 22), 13, 1),  # 165 tiles: rows of 11 tiles across blocks of 64
    ((4, 10, 34), 8, 0),  # rows split 16 columns a vector, then one by one: no padding
    ((3, 8, 20), 8, 2),  # and padding 2
    ((2, 9, 35), 5, 1),  # an odd row: its last column lies past the last tile
]
# The operations after the convolution: bias, batch norm's scale and shift, ReLU.
EPILOGUES = {"bias_relu_pool": ["add", "relu"], "norm_relu_pool": ["add", "mul", "add", "relu"]}


def _ids(cases):
    return [f"{c[0]}->{c[1]}p{c[2]}" for c in cases]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = _core.get_num_threads()
    yield
    _core.set_num_threads(before)


def _engine(image_shape, o, padding, ops, threads, tiling=False):
    g = _core.Graph()
    x = g.input("x", (-1, *image_shape), "float32")
    attrs = conv_attrs((1, 1), (padding, padding), (1, 1), 1)
    y = g.op("conv2d", [x, g.variable("w", (o, image_shape[0], 3, 3))], attrs)
    for i, op in enumerate(ops):
        y = g.op("relu", [y]) if op == "relu" else g.op(op, [y, g.variable(f"v{i}", (o, 1, 1))])
    y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]})
    _core.set_num_threads(threads)
    engine = _core.Engine(g, seed=0, options={"sample_tiling": tiling})
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def _reference(x, w, padding, ops, operands):
    y = torch.from_numpy(torch_conv2d(x, w, conv_attrs((1, 1), (padding, padding), (1, 1), 1)))
    for op, value in zip(ops, operands):
        if op == "relu":
            y = torch.relu(y)
        else:
            v = torch.from_numpy(value).double()
            y = y + v if op == "add" else y * v
    return F.max_pool2d(y, 2).numpy()


def _run(engine, x, w, ops, operands):
    engine.set_variable("w", w)
    for i, (op, value) in enumerate(zip(ops, operands)):
        if op != "relu":
            engine.set_variable(f"v{i}", value)
    return engine.run("f", [x])[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("epilogue", list(EPILOGUES))
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_every_path_pools_conv2d_as_torch_with_the_same_bits_everywhere(
    case, epilogue, path, monkeypatch
):
    image_shape, o, padding = case
    ops = EPILOGUES[epilogue]
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    rng = np.random.default_rng(o + image_shape[0])
    images = rng.standard_normal((5, *image_shape)).astype(np.float32)
    w = rng.standard_normal((o, image_shape[0], 3, 3)).astype(np.float32)
    operands = [
        None if op == "relu" else rng.uniform(0.5, 1.5, (o, 1, 1)).astype(np.float32) for op in ops
    ]
    expected = {batch: _reference(images[:batch], w, padding, ops, operands) for batch in (1, 2, 5)}
    whole = None
    for threads in THREADS:
        for tiling in (False, True):
            engine = _engine(image_shape, o, padding, ops, threads, tiling)
            plan = engine.describe("f", 5)
            assert any("conv2d," in step and ",max_pool2d" in step for step in plan), plan
            for batch in (1, 2, 5):
                got = _run(engine, images[:batch], w, ops, operands)
                note = f"{threads} threads, batch {batch}, tiling {tiling}"
                np.testing.assert_allclose(got, expected[batch], rtol=1e-5, atol=1e-4, err_msg=note)
                if whole is None:
                    whole = _run(engine, images, w, ops, operands)
                np.testing.assert_array_equal(got, whole[:batch], err_msg=note)


@pytest.mark.parametrize("path", PATHS)
def test_nan_in_a_weight_reaches_every_pooled_output_of_its_channel(path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 16, 18)).astype(np.float32)
    w = rng.standard_normal((24, 8, 3, 3)).astype(np.float32)
    w[5, 0, 1, 1] = np.nan
    operands = [rng.standard_normal((24, 1, 1)).astype(np.float32), None]
    got = _run(_engine((8, 16, 18), 24, 1, ["add", "relu"], 2), x, w, ["add", "relu"], operands)
    expected = _reference(x, w, 1, ["add", "relu"], operands)
    assert np.isnan(got[:, 5]).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)  # NaN where torch has NaN


def test_new_weights_are_transformed_again(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 16, 16, 16)).astype(np.float32)
    engine = _engine((16, 16, 16), 32, 1, [], 1)
    for seed in range(2):
        w = np.random.default_rng(seed).standard_normal((32, 16, 3, 3)).astype(np.float32)
        np.testing.assert_allclose(
            _run(engine, x, w, [], []), _reference(x, w, 1, [], []), rtol=1e-5, atol=1e-4
        )


def test_shapes_it_cannot_run_fall_back_with_the_same_results(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 6, 15, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 3, 3)).astype(np.float32)
    attrs = conv_attrs((2, 1), (1, 1), (1, 1), 1)  # a vertical stride

    g = _core.Graph()
    xi = g.input("x", (-1, 6, 15, 14), "float32")
    y = g.op(
        "max_pool2d",
        [g.op("conv2d", [xi, g.variable("w", w.shape)], attrs)],
        {"kernel_size": [2, 2]},
    )
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    engine.set_variable("w", w)
    expected = F.max_pool2d(torch.from_numpy(torch_conv2d(x, w, attrs)), 2).numpy()
    np.testing.assert_allclose(engine.run("f", [x])[0], expected, rtol=1e-5, atol=1e-4)


def test_an_unknown_value_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "sometimes")
    engine = _engine((16, 8, 8), 16, 1, [], 1)
    engine.set_variable("w", np.zeros((16, 16, 3, 3), np.float32))
    with pytest.raises(
        ValueError, match="GOMETAL_CONV_WINOGRAD must be always or never, got 'sometimes'"
    ):
        engine.run("f", [np.zeros((1, 16, 8, 8), np.float32)])
