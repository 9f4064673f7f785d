"""Edge shapes of Winograd's F(2x2, 3x3) convolutions and of the products that pack B on each
call or run A^T B on a register tile, against torch and NumPy in float64.

Winograd (GOMETAL_CONV_WINOGRAD=always, every vector path the CPU has): the smallest plane (one tile), rows of tiles past a
vector and a half vector, padding past the kernel's reach, one output channel and one past the
padded register rows, channel counts no multiple of a vector, a batch of one cut into parts at
2 and 3 threads, unpooled forward passes and a training step's gradients at such shapes, and
two threads predicting on two engines whose weights share a shape at once. Products: rows
around the packed tiles (6, 7, 8, 9), B of 64 to 128 columns stored either way, and A^T B at
the register tile's bounds of rows and depth, at 1 to 3 threads, with NaN in A.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conv_checks import check_conv_relu_pool_step, conv_attrs, torch_conv2d
from cpu_paths import X86, vector_path_available
from gometal import _core
from matmul_checks import check_product

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]


pytestmark = pytest.mark.usefixtures("restore_threads")


def _pooled_engine(image_shape, o, padding, threads):
    g = _core.Graph()
    x = g.input("x", (-1, *image_shape), "float32")
    attrs = conv_attrs((1, 1), (padding, padding), (1, 1), 1)
    y = g.op("conv2d", [x, g.variable("w", (o, image_shape[0], 3, 3))], attrs)
    y = g.op("relu", [g.op("add", [y, g.variable("bias", (o, 1, 1))])])
    y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]})
    _core.set_num_threads(threads)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def _pooled_reference(x, w, bias, padding):
    y = torch_conv2d(x, w, conv_attrs((1, 1), (padding, padding), (1, 1), 1)) + bias
    return F.max_pool2d(torch.from_numpy(np.maximum(y, 0.0)), 2).numpy()


def _arrays(x_shape, o, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((o, x_shape[1], 3, 3)).astype(np.float32)
    bias = rng.standard_normal((o, 1, 1)).astype(np.float32)
    return x, w, bias


def _close(got, want, c):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * np.sqrt(c * 9))


# (N, C, H, W), output channels, padding
POOLED = [
    ((2, 3, 2, 2), 16, 1),  # one tile, one pooled output
    ((1, 5, 4, 5), 1, 0),  # one output channel, a 2x3 plane floored to one tile
    ((2, 7, 6, 6), 25, 3),  # padding past the kernel: border tiles read only zeros
    ((1, 17, 8, 70), 24, 1),  # 35 tiles a row: whole vectors, a half vector and single tiles
    ((1, 33, 18, 34), 48, 1),  # batch 1 cut into parts at 2 and 3 threads
    ((3, 16, 5, 19), 9, 2),  # odd plane: the pooling floors both ways
    ((2, 16, 30, 4), 17, 1),  # tall and narrow: two tiles a row, a vector over eight rows
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize("case", POOLED, ids=[f"{c[0]}->{c[1]}p{c[2]}" for c in POOLED])
def test_pooled_winograd_edges_match_torch(case, threads, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x_shape, o, padding = case
    x, w, bias = _arrays(x_shape, o, sum(x_shape) + o)
    engine = _pooled_engine(x_shape[1:], o, padding, threads)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    assert any("conv2d," in s and ",max_pool2d" in s for s in engine.describe("f", 1))
    got = engine.run("f", [x])[0]
    _close(got, _pooled_reference(x, w, bias, padding), x_shape[1])
    for n in range(x_shape[0]):  # image by image, the same bits as in the batch
        np.testing.assert_array_equal(engine.run("f", [x[n : n + 1]])[0], got[n : n + 1])


def _unpooled(x, w, bias, padding, threads):
    _core.set_num_threads(threads)
    g = _core.Graph()
    xi = g.input("x", (-1, *x.shape[1:]), "float32")
    attrs = conv_attrs((1, 1), (padding, padding), (1, 1), 1)
    y = g.op("conv2d", [xi, g.variable("w", w.shape)], attrs)
    y = g.op("add", [y, g.variable("bias", bias.shape)])
    y = g.op("mul", [y, y])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    return engine.run("f", [x])[0]


# (N, C, H, W), output channels, padding. The training plan's forward pass runs these tiles
# image by image where the channel lanes could (padding <= 1, 16+ outputs a row), 16+ input
# channels, even outputs; a batch smaller than twice the threads is cut into parts of images by
# the pixel-lane kernel instead.
UNPOOLED = [
    ((2, 16, 2, 18), 8, 1),  # one row of 9 tiles
    ((1, 17, 4, 68), 25, 1),  # 34 tiles a row, 17 channels, one row past the padded rows
    ((6, 33, 10, 18), 1, 1),  # one output channel, a vector across rows, 6 images
    ((2, 16, 12, 18), 40, 0),  # no padding
]
# Shapes that stay off these tiles even when forced (the channel lanes' own rule or odd outputs).
UNPOOLED_ELSEWHERE = [
    ((3, 33, 10, 6), 1, 2),
    ((1, 16, 2, 2), 5, 3),
    ((2, 16, 5, 7), 9, 1),
]


def _unpooled_ids(cases):
    return [f"{c[0]}->{c[1]}p{c[2]}" for c in cases]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize(
    "case", UNPOOLED + UNPOOLED_ELSEWHERE, ids=_unpooled_ids(UNPOOLED + UNPOOLED_ELSEWHERE)
)
def test_unpooled_winograd_edges_match_torch(case, threads, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    x_shape, o, padding = case
    x, w, bias = _arrays(x_shape, o, sum(x_shape) + o)
    got = _unpooled(x, w, bias, padding, threads)
    want = torch_conv2d(x, w, conv_attrs((1, 1), (padding, padding), (1, 1), 1)) + bias
    scale = x_shape[1] * 9
    np.testing.assert_allclose(got, want * want, rtol=1e-4, atol=1e-5 * scale)


def _runs_winograd(x, w, bias, padding, monkeypatch):
    # The two kernels round differently: a shape the tiles took differs from the lanes in a bit.
    monkeypatch.setenv("GOMETAL_CONV_NCHWC", "never")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    winograd = _unpooled(x, w, bias, padding, 1)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")
    lanes = _unpooled(x, w, bias, padding, 1)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    return not np.array_equal(winograd, lanes)


@pytest.mark.parametrize("case", UNPOOLED, ids=_unpooled_ids(UNPOOLED))
def test_the_unpooled_edges_run_winograd(case, monkeypatch):
    x_shape, o, padding = case
    x, w, bias = _arrays(x_shape, o, 7)
    assert _runs_winograd(x, w, bias, padding, monkeypatch)


@pytest.mark.parametrize("x_shape, o", [((2, 17, 6, 34), 25), ((3, 16, 2, 18), 1)])
def test_a_training_step_at_edge_shapes_matches_torch(x_shape, o, monkeypatch):
    x, w, bias = _arrays(x_shape, o, 3)
    assert _runs_winograd(x, w / 12.0, bias, 1, monkeypatch)
    _core.set_num_threads(1)
    check_conv_relu_pool_step(x, w / 12.0, bias)


@pytest.mark.parametrize("engine_threads, shape", [(1, (2, 16, 16, 16)), (2, (1, 16, 32, 32))])
def test_two_threads_predict_on_two_engines_at_once(engine_threads, shape, monkeypatch):
    # The same (O, C): the per-thread caches of transformed weights must not mix them up; at 2
    # engine threads a batch of one is cut into parts of the image.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    engines, inputs, expected = [], [], []
    for seed in (1, 2):
        x, w, bias = _arrays(shape, 32, seed)
        engine = _pooled_engine(shape[1:], 32, 1, engine_threads)
        engine.set_variable("w", w)
        engine.set_variable("bias", bias)
        engines.append(engine)
        inputs.append(x)
        expected.append(_pooled_reference(x, w, bias, 1))
    results: list[list[np.ndarray]] = [[], []]

    def predict(i):
        for _ in range(20):
            results[i].append(engines[i].run("f", [inputs[i]])[0])

    threads = [threading.Thread(target=predict, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        assert len(results[i]) == 20
        for got in results[i]:
            _close(got, expected[i], 16)


# (M, N, K), B transposed: past gemm_small's 24 rows, B of 64 to 128 columns
PACKED_PER_CALL = [
    (25, 64, 1, False),
    (31, 80, 3, False),
    (103, 112, 2048, False),  # the largest packing (N * K = 2^18 floats)
    (26, 128, 256, True),
    (1025, 64, 300, True),  # transposed B past 1024 rows
    (57, 96, 17, True),
]


@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize("m, n, k, tb", PACKED_PER_CALL)
def test_products_packing_b_per_call(m, n, k, tb, threads):
    check_product(False, tb, m, n, k, threads)


def test_products_of_different_shapes_reuse_a_packing_of_the_same_size():
    # (64 x 256) and (128 x 128) pack into the same bytes: each product must read its own B.
    for seed, (n, k) in enumerate([(64, 256), (128, 128), (64, 256), (128, 128)]):
        check_product(False, False, 40, n, k, 1, seed=seed)


# (M, N, K) of A^T B: the tile's bounds (25 <= M <= 640, K >= 256, N % 64 == 0; past K = 1024
# only N <= 128, in chunks of 1024 steps of K)
TRANSPOSED_A = [
    (25, 64, 256),
    (31, 64, 1024),
    (640, 128, 257),
    (641, 64, 300),  # past the tile: the BLAS
    (43, 192, 1025),  # past the tile's depth at N > 128: the BLAS
    (43, 128, 2049),  # past it at N <= 128: three chunks of K, the last of one step
    (7, 64, 300),  # fewer rows than the tile takes
]


@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize("m, n, k", TRANSPOSED_A)
def test_transposed_a_products(m, n, k, threads):
    check_product(True, False, m, n, k, threads)


@pytest.mark.parametrize("m", (6, 7, 8, 9))
def test_packed_rows_around_the_tall_tile(m):
    # Weights as a variable in an inference plan: the packed kernel's tiles of 6, 8 or both.
    rng = np.random.default_rng(m)
    x = rng.standard_normal((m, 70)).astype(np.float32)
    w = rng.standard_normal((70, 200)).astype(np.float32)
    g = _core.Graph()
    xi = g.input("x", (-1, 70), "float32")
    y = g.op("matmul", [xi, g.variable("w", w.shape)], {"transpose_b": False})
    _core.set_num_threads(1)
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    got = engine.run("f", [x])[0]
    np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("ta, m, n, k", [(False, 40, 64, 100), (True, 40, 64, 300)])
def test_nan_in_a_row_of_a_stays_in_its_row(ta, m, n, k):
    check_product(ta, False, m, n, k, 1, nan_row=13)


def _consults(variable, ta, tb, m, n, k, monkeypatch):
    # A kernel reads its variable only for the shapes it takes: a bad value shows it was asked.
    monkeypatch.setenv(variable, "bogus")
    try:
        check_product(ta, tb, m, n, k, 1)
    except ValueError as error:
        assert variable in str(error)
        return True
    finally:
        monkeypatch.delenv(variable)
    return False


def test_the_shapes_above_reach_the_kernels_they_mean(monkeypatch):
    packed = "GOMETAL_GEMM_PACKED_KERNEL"
    for m, n, k, tb in PACKED_PER_CALL:
        assert _consults(packed, False, tb, m, n, k, monkeypatch), (m, n, k, tb)
    assert not _consults(packed, False, False, 24, 64, 10, monkeypatch)  # gemm_small's rows
    assert not _consults(packed, False, True, 100, 64, 300, monkeypatch)  # deep transposed B
    inside = {(25, 64, 256), (31, 64, 1024), (640, 128, 257), (43, 128, 2049)}
    for m, n, k in TRANSPOSED_A:
        taken = _consults("GOMETAL_GEMM_TRANSPOSED_A_KERNEL", True, False, m, n, k, monkeypatch)
        assert taken == (X86 and (m, n, k) in inside), (m, n, k)


def _mlp_step(x, w1, b1, w2):
    # relu(x w1^T + b1) w2^T, squared sum: x's gradient runs dH w1 (B packed per call) and
    # w1's runs dH^T x (the A^T B tile) at 300 rows.
    g = _core.Graph()
    xi = g.input("x", x.shape, "float32")
    v1, c1, v2 = g.variable("w1", w1.shape), g.variable("b1", b1.shape), g.variable("w2", w2.shape)
    h = g.op("relu", [g.op("add", [g.op("matmul", [xi, v1], {"transpose_b": True}), c1])])
    y = g.op("matmul", [h, v2], {"transpose_b": True})
    loss = g.op("sum", [g.op("mul", [y, y])], {"axes": []})
    grads = g.gradients(loss, [xi, v1, c1, v2])
    engine = _core.Engine(g, seed=0)
    for name, value in (("w1", w1), ("b1", b1), ("w2", w2)):
        engine.set_variable(name, value)
    engine.define("step", inputs=[xi], outputs=[loss, *grads], effects=[])
    return engine.run("step", [x])


@pytest.mark.parametrize("threads", (1, 2, 3))
def test_a_dense_training_step_on_the_new_products_matches_torch(threads, monkeypatch):
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((300, 128)).astype(np.float32)
    w1 = (rng.standard_normal((64, 128)) / 11).astype(np.float32)
    b1 = rng.standard_normal(64).astype(np.float32)
    w2 = (rng.standard_normal((128, 64)) / 8).astype(np.float32)
    asked = ["GOMETAL_GEMM_PACKED_KERNEL"] + (["GOMETAL_GEMM_TRANSPOSED_A_KERNEL"] if X86 else [])
    for variable in asked:
        monkeypatch.setenv(variable, "bogus")
        with pytest.raises(ValueError, match=variable):
            _mlp_step(x, w1, b1, w2)
        monkeypatch.delenv(variable)
    _core.set_num_threads(threads)
    got = _mlp_step(x, w1, b1, w2)
    xt, w1t, b1t, w2t = (torch.from_numpy(a).double().requires_grad_() for a in (x, w1, b1, w2))
    y = torch.relu(xt @ w1t.T + b1t) @ w2t.T
    loss = (y * y).sum()
    loss.backward()
    np.testing.assert_allclose(got[0], loss.item(), rtol=1e-5)
    for value, tensor in zip(got[1:], (xt, w1t, b1t, w2t)):
        want = tensor.grad.numpy()
        np.testing.assert_allclose(value, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


# Convolutions the tiles cannot compute: forced, they still run elsewhere and match torch.
REFUSED = [
    ((2, 16, 12, 20), (32, 16, 3, 3), (1, 2), (1, 1), (2, 2), 1),  # horizontal stride
    ((2, 16, 12, 20), (32, 16, 3, 3), (1, 1), (2, 2), (2, 2), 1),  # dilation
    ((2, 16, 12, 20), (32, 8, 3, 3), (1, 1), (1, 1), (1, 1), 2),  # two groups
    ((2, 16, 12, 20), (32, 16, 5, 5), (1, 1), (2, 2), (1, 1), 1),  # a 5x5 kernel
    ((2, 16, 12, 20), (32, 16, 3, 1), (1, 1), (1, 0), (1, 1), 1),  # 3x1
]


@pytest.mark.parametrize("pooled", (True, False))
@pytest.mark.parametrize("case", REFUSED, ids=["stride", "dilation", "groups", "5x5", "3x1"])
def test_convolutions_the_tiles_refuse_run_elsewhere_and_match_torch(case, pooled, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    attrs = conv_attrs(stride, padding, dilation, groups)
    g = _core.Graph()
    xi = g.input("x", (-1, *x_shape[1:]), "float32")
    y = g.op("conv2d", [xi, g.variable("w", w_shape)], attrs)
    y = g.op("max_pool2d", [y], {"kernel_size": [2, 2]}) if pooled else g.op("mul", [y, y])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    want = torch_conv2d(x, w, attrs)
    want = F.max_pool2d(torch.from_numpy(want), 2).numpy() if pooled else want * want
    scale = w_shape[1] * w_shape[2] * w_shape[3]
    np.testing.assert_allclose(engine.run("f", [x])[0], want, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("path", PATHS)
def test_pooling_after_a_negative_scale_without_relu(path, monkeypatch):
    # The epilogue runs before the pooling: a negative scale turns each window's largest sum
    # into its smallest output, so the pooling must take the maximum after it.
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 12, 14, 18)).astype(np.float32)
    w = rng.standard_normal((20, 12, 3, 3)).astype(np.float32)
    scale = rng.uniform(-1.5, -0.5, (20, 1, 1)).astype(np.float32)
    g = _core.Graph()
    xi = g.input("x", (-1, 12, 14, 18), "float32")
    y = g.op("conv2d", [xi, g.variable("w", w.shape)], conv_attrs((1, 1), (1, 1), (1, 1), 1))
    y = g.op(
        "max_pool2d", [g.op("mul", [y, g.variable("scale", scale.shape)])], {"kernel_size": [2, 2]}
    )
    _core.set_num_threads(2)
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.set_variable("scale", scale)
    engine.define("f", inputs=[xi], outputs=[y], effects=[])
    assert any("conv2d," in s and ",max_pool2d" in s for s in engine.describe("f", 3))
    want = torch_conv2d(x, w, conv_attrs((1, 1), (1, 1), (1, 1), 1)) * scale
    want = F.max_pool2d(torch.from_numpy(want), 2).numpy()
    np.testing.assert_allclose(engine.run("f", [x])[0], want, rtol=1e-5, atol=1e-4)
