"""Matrix products by packed weights (inference at batch 1 to 1024) on every instruction-set path.

In a plan that computes no weight gradient, a float32 matmul of an activation by a variable's
weights packs the weights on its first run into column panels
(GOMETAL_GEMM_PACKED_KERNEL=portable|avx2|avx512 forces a path, off never packs), and a Dense
layer's bias and ReLU join the product's epilogue. Every path computes the same products as
NumPy in float64, on its first run and on later ones; after a write to the weights
(set_variable, set_weights, a training step, loading a checkpoint) the next run packs them
again, so a predict after a weight change sees the new weights. Training steps and gradient
plans keep the unpacked products.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from cpu_paths import vector_path_available
from gometal import _core
from helpers import mlp_pair, t, torch_step
from matmul_checks import dense_engine, matmul_engine, matmul_operands

PATHS = ("portable", "avx2", "avx512", "off")
# The vector paths this CPU runs (the others are refused, as the first test checks).
AVAILABLE = [path for path in PATHS[:3] if vector_path_available(path)]

# (M, N, K): rows from 1 to 1024 and past it (the BLAS's), columns around every
# panel width (16, 24, 64) and past it, odd depths.
SHAPES = [
    (1, 17, 9),
    (2, 7, 3),
    (3, 1, 1),
    (5, 25, 31),
    (7, 65, 33),
    (8, 256, 512),
    (13, 49, 100),
    (24, 10, 256),
    (33, 130, 47),
    (64, 97, 15),
    (129, 64, 7),
    (300, 67, 33),
    (1024, 24, 5),
    (1025, 16, 3),
]


def _product(a, b, transpose_b):
    b64 = b.astype(np.float64)
    return a.astype(np.float64) @ (b64.T if transpose_b else b64)


def _assert_product(got, a, b, transpose_b):
    expected = _product(a, b, transpose_b)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(a.shape[1]))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("transpose_b", [False, True], ids=["b", "b_transposed"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_each_path_computes_the_product_as_numpy(shape, transpose_b, path, monkeypatch):
    m, n, k = shape
    a, b = matmul_operands(m, n, k, transpose_b, seed=m * 1000 + n + k)
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    engine = matmul_engine(k, b.shape, transpose_b)
    engine.set_variable("w", b)
    if path != "off" and not vector_path_available(path):
        with pytest.raises(ValueError, match=f"GOMETAL_GEMM_PACKED_KERNEL={path}: this CPU lacks"):
            engine.run("f", [a])
        return
    for _ in range(3):  # the run that packs, then runs on the packed copy
        _assert_product(engine.run("f", [a])[0], a, b, transpose_b)


@pytest.mark.parametrize("path", AVAILABLE)
@pytest.mark.parametrize("threads", [1, 2])
def test_products_split_across_threads_agree_with_numpy(path, threads, monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        # Few panels and many rows (the rows are split too), then many panels.
        for m, n, k in [(257, 65, 129), (33, 515, 257)]:
            a, b = matmul_operands(m, n, k, True, seed=m + n)
            engine = matmul_engine(k, b.shape, True)
            engine.set_variable("w", b)
            for _ in range(2):
                _assert_product(engine.run("f", [a])[0], a, b, True)
    finally:
        gm.set_num_threads(previous)


def test_an_unknown_path_name_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", "sse9")
    engine = matmul_engine(4, (3, 4), True)
    with pytest.raises(ValueError, match="GOMETAL_GEMM_PACKED_KERNEL"):
        engine.run("f", [np.ones((2, 4), np.float32)])


@pytest.mark.parametrize("path", [*AVAILABLE, "off"])
def test_a_run_after_set_variable_sees_the_new_weights(path, monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    a, b = matmul_operands(8, 40, 30, True, seed=1)
    engine = matmul_engine(30, b.shape, True)
    for step in range(4):
        b = b + np.float32(step + 1)
        engine.set_variable("w", b)
        for _ in range(3):  # packing again, then packed
            _assert_product(engine.run("f", [a])[0], a, b, True)


def _allocations_of(runs, packing, monkeypatch):
    """Engine allocations (a process-wide count, read through another engine) of `runs`."""
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", packing)
    counter = matmul_engine(4, (3, 4), True)
    before = counter.stats()["allocations"]
    runs()
    return counter.stats()["allocations"] - before


def test_the_packed_copy_is_one_allocation_reused_after_writes(monkeypatch):
    a, b = matmul_operands(16, 64, 48, True, seed=2)

    def runs():
        engine = matmul_engine(48, b.shape, True)
        for scale in (1.0, 2.0, -3.0):
            engine.set_variable("w", np.float32(scale) * b)
            for _ in range(2):
                _assert_product(engine.run("f", [a])[0], a, scale * b, True)

    packing = AVAILABLE[-1]
    assert (
        _allocations_of(runs, packing, monkeypatch) == _allocations_of(runs, "off", monkeypatch) + 1
    )


def _predict_as_torch(model, net, x):
    expected = net(t(x)).detach().numpy()
    for _ in range(3):
        np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)


def test_predict_sees_set_weights_between_predicts():
    net, model = mlp_pair([20, 48, 16, 5], "relu", seed=4)
    x = np.random.default_rng(4).standard_normal((8, 20)).astype(np.float32)
    _predict_as_torch(model, net, x)
    other_net, other = mlp_pair([20, 48, 16, 5], "relu", seed=5)
    model.set_weights(other.get_weights())
    _predict_as_torch(model, other_net, x)


def test_predict_sees_training_between_predicts():
    net, model = mlp_pair([20, 48, 16, 5], "relu", seed=6)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.2), batch_size=16)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 20)).astype(np.float32)
    y = rng.integers(0, 5, 16).astype(np.int32)
    for _ in range(3):
        _predict_as_torch(model, net, x)
        trainer.train_batch(x, y)
        torch_step(net, opt, nn.functional.cross_entropy, x, y)
    _predict_as_torch(model, net, x)


def test_predict_sees_weights_loaded_from_a_file(tmp_path):
    net, model = mlp_pair([20, 48, 16, 5], "relu", seed=7)
    saved_net, saved = mlp_pair([20, 48, 16, 5], "relu", seed=8)
    saved.save(tmp_path / "other.safetensors")
    x = np.random.default_rng(7).standard_normal((8, 20)).astype(np.float32)
    _predict_as_torch(model, net, x)
    model.load_weights(tmp_path / "other.safetensors")
    _predict_as_torch(model, saved_net, x)


def _dense(a, w, bias, relu):
    y = a.astype(np.float64) @ w.astype(np.float64).T + bias
    return np.maximum(y, 0.0) if relu else y


# (M, N, K) for the epilogue: rows around the tile heights, columns around the panel widths.
EPILOGUE_SHAPES = [(2, 7, 3), (5, 65, 31), (8, 24, 17), (13, 130, 9), (300, 37, 20)]


@pytest.mark.parametrize("path", AVAILABLE)
@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias_relu"])
@pytest.mark.parametrize(
    "shape", EPILOGUE_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in EPILOGUE_SHAPES]
)
def test_the_product_adds_the_bias_and_takes_the_relu_in_its_epilogue(
    shape, relu, path, monkeypatch
):
    m, n, k = shape
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    engine = dense_engine(k, n, relu)
    steps = "matmul,add,relu" if relu else "matmul,add"
    assert any(line.startswith(f"{steps} ({m}, {n})") for line in engine.describe("f", m)), (
        engine.describe("f", m)
    )
    engine.set_variable("w", w)
    for scale in (1.0, -2.0):  # a write, then the run that packs again and two more
        engine.set_variable("bias", np.float32(scale) * bias)
        engine.set_variable("w", np.float32(scale) * w)
        for _ in range(3):
            expected = _dense(a, scale * w, scale * bias, relu)
            np.testing.assert_allclose(
                engine.run("f", [a])[0], expected, rtol=1e-5, atol=1e-5 * np.sqrt(k)
            )


@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias_relu"])
def test_without_packing_the_bias_and_relu_stay_a_fused_step(relu, monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", "off")
    engine = dense_engine(9, 12, relu)
    plan = engine.describe("f", 8)
    assert any(line.startswith("matmul (8, 12)") for line in plan), plan
    rng = np.random.default_rng(3)
    a, w = (
        rng.standard_normal((8, 9)).astype(np.float32),
        rng.standard_normal((12, 9)).astype(np.float32),
    )
    bias = rng.standard_normal(12).astype(np.float32)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    np.testing.assert_allclose(
        engine.run("f", [a])[0], _dense(a, w, bias, relu), rtol=1e-5, atol=1e-5
    )


def _trainer(seed):
    _, model = mlp_pair([20, 48, 16, 5], "relu", seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 20)).astype(np.float32)
    y = rng.integers(0, 5, 16).astype(np.int32)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1), batch_size=16)
    return trainer, x, y


def test_training_steps_pack_no_weights(monkeypatch):
    # A plan that writes its weights reads them as stored: it allocates what it would with
    # packing off.
    def runs():
        trainer, x, y = _trainer(seed=9)
        for _ in range(3):
            trainer.train_batch(x, y)

    packing = AVAILABLE[-1]
    assert _allocations_of(runs, packing, monkeypatch) == _allocations_of(runs, "off", monkeypatch)


def test_gradients_do_not_depend_on_packing_nor_on_earlier_predicts(monkeypatch):
    # A plan computing weight gradients keeps the unpacked products: its values do not depend
    # on packing, nor on predicts that packed the weights before it.
    gradients = {}
    for packing in (AVAILABLE[-1], "off"):
        monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", packing)
        trainer, x, y = _trainer(seed=10)
        trainer.predict(x)
        trainer.train_batch(x, y)
        trainer.predict(x)
        gradients[packing] = trainer.compute_gradients(x, y)
    for name, value in gradients["off"].items():
        np.testing.assert_array_equal(gradients[AVAILABLE[-1]][name], value, err_msg=name)


@pytest.mark.parametrize("path", [*AVAILABLE, "off"])
@pytest.mark.parametrize("batch", [1, 3, 40])
def test_a_sequence_by_a_weight_takes_its_leading_axes_as_rows(batch, path, monkeypatch):
    # (batch, time, features) x (units, features)^T + bias, as a transformer's Linear.
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    g = _core.Graph()
    x = g.input("x", (-1, 5, 19), "float32")
    y = g.op("matmul", [x, g.variable("w", (33, 19))], {"transpose_b": True})
    y = g.op("add", [y, g.variable("bias", (33,))], {})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    rng = np.random.default_rng(batch)
    a = rng.standard_normal((batch, 5, 19)).astype(np.float32)
    w = rng.standard_normal((33, 19)).astype(np.float32)
    bias = rng.standard_normal(33).astype(np.float32)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    expected = a.astype(np.float64) @ w.astype(np.float64).T + bias
    for _ in range(2):
        np.testing.assert_allclose(engine.run("f", [a])[0], expected, rtol=1e-5, atol=1e-5)
    merged = path != "off" and 2 <= 5 * batch <= 1024
    plan = engine.describe("f", batch)
    assert any(line.startswith(f"matmul,add ({batch}, 5, 33)") for line in plan) == merged, plan
