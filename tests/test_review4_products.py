"""Adversarial checks of the product kernels changed together: the dot-product tile's row and
depth thresholds (24/25/64/65 rows, K 1023/1024), the A^T B split over K at 255/256 steps a
thread on 2 to 4 threads, non-finite weights that must stay in their columns, engines compiled at
one thread count and run after set_num_threads changes, one engine driven from several Python
threads at once, batch sizes that change between calls, and a Dense stack of 768 rows trained for
several SGD steps against torch in float64."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cpu_paths import vector_path_available
from gometal import _core
from matmul_checks import check_product, matmul_engine
from threaded import run_on_threads

pytestmark = pytest.mark.usefixtures("restore_threads")


@pytest.mark.parametrize("threads", (1, 2, 3, 4))
@pytest.mark.parametrize("m", (24, 25, 64, 65))
@pytest.mark.parametrize("k", (1023, 1024))
def test_dot_tile_row_and_depth_edges_match_numpy(m, k, threads):
    # N = 9 leaves one column past two whole 4-column tiles on every thread split.
    check_product(False, True, m, 9, k, threads, seed=m * k)


@pytest.mark.parametrize(
    "threads, k",
    [(2, 511), (2, 512), (3, 767), (3, 768), (4, 1023), (4, 1024), (4, 1025), (3, 3073)],
)
def test_depth_split_at_256_steps_a_thread_matches_numpy(threads, k):
    # 255 and 256 steps a thread on either side of the split; 3073 on 3 threads: chunks of K
    # within each part (1024 steps a chunk) and one part a step longer.
    check_product(True, False, 64, 128, k, threads, seed=k)


@pytest.mark.parametrize("n", (1, 2, 3, 5, 8))
@pytest.mark.parametrize("threads", (3, 4))
def test_dot_tile_with_fewer_column_tiles_than_threads_matches_numpy(n, threads):
    # 1 to 2 tiles of 4 columns of C shared among 3 or 4 threads.
    check_product(False, True, 25, n, 1024, threads, seed=n)
    check_product(False, True, 64, n, 1024, threads, seed=n + 1)


@pytest.mark.parametrize("m", (639, 640, 641))
def test_depth_split_at_the_tiles_most_rows_matches_numpy(m):
    # 640 rows of C are the A^T B tile's most; 641 go to the BLAS.
    check_product(True, False, m, 64, 512, 2, seed=m)


def _weight_with(rows: int, k: int, column: int, value: float) -> np.ndarray:
    rng = np.random.default_rng(rows + k)
    w = rng.standard_normal((rows, k)).astype(np.float32)
    w[column, k // 3] = value
    return w


@pytest.mark.parametrize("value", (np.nan, np.inf, -np.inf))
@pytest.mark.parametrize("threads", (1, 2))
def test_a_non_finite_weight_row_stays_in_its_column_of_the_dot_tile(value, threads):
    # x (32, 2048) w^T with w (70, 2048): one weight row holds a NaN or an infinity; only
    # C's column of that row may be non-finite, with torch's sign pattern there.
    _core.set_num_threads(threads)
    m, n, k, column = 32, 70, 2048, 66
    w = _weight_with(n, k, column, value)
    x = np.random.default_rng(5).standard_normal((m, k)).astype(np.float32)
    engine = matmul_engine(k, w.shape, True)
    engine.set_variable("w", w)
    got = engine.run("f", [x])[0]
    want = x.astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    finite = np.isfinite(want)
    assert finite[:, :column].all() and finite[:, column + 1 :].all()
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=2e-6 * k)


def _numpy_forward(x, w):
    return x.astype(np.float64) @ w.astype(np.float64).T


def test_one_engine_runs_on_each_thread_count_it_meets_after_compiling():
    # Compiled at 1 thread, then run after every change of the count, back and forth: the dot
    # tile (32 rows, K 4096) and the BLAS (65 rows) at each count.
    _core.set_num_threads(1)
    rng = np.random.default_rng(11)
    w = rng.standard_normal((128, 4096)).astype(np.float32)
    engine = matmul_engine(4096, w.shape, True)
    engine.set_variable("w", w)
    inputs = {m: rng.standard_normal((m, 4096)).astype(np.float32) for m in (32, 65)}
    for threads in (1, 2, 4, 3, 1, 2):
        _core.set_num_threads(threads)
        for x in inputs.values():
            got = engine.run("f", [x])[0]
            np.testing.assert_allclose(got, _numpy_forward(x, w), rtol=1e-5, atol=1e-2)


def _weight_gradient_engine(k_in: int, n_out: int) -> _core.Engine:
    # dW = dy^T x of y = x W^T: an A^T B over the batch rows, the split over K where the batch
    # gives each thread 256 steps or more.
    g = _core.Graph()
    x = g.input("x", (-1, k_in), "float32")
    dy = g.input("dy", (-1, n_out), "float32")
    w = g.variable("w", (n_out, k_in))
    y = g.op("matmul", [x, w], {"transpose_b": True})
    loss = g.op("sum", [g.op("mul", [y, dy])], {"axes": []})
    (grad,) = g.gradients(loss, [w])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", np.zeros((n_out, k_in), np.float32))
    engine.define("step", inputs=[x, dy], outputs=[grad], effects=[])
    return engine


def test_weight_gradients_as_the_batch_and_thread_count_change_between_calls():
    # Batches of 511, 512, 768, 1 and 513 rows on 2, 3 and 4 threads, in an order that grows
    # and shrinks the calling thread's partials between calls.
    engine = _weight_gradient_engine(128, 64)
    rng = np.random.default_rng(3)
    for threads, batch in [(2, 511), (2, 512), (4, 1024), (3, 768), (2, 1), (3, 513), (2, 768)]:
        _core.set_num_threads(threads)
        x = rng.standard_normal((batch, 128)).astype(np.float32)
        dy = rng.standard_normal((batch, 64)).astype(np.float32)
        got = engine.run("step", [x, dy])[0]
        want = dy.astype(np.float64).T @ x.astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * batch)


@pytest.mark.parametrize("threads", (2, 3))
def test_one_engine_driven_from_several_python_threads_at_once(threads):
    # Four Python threads run the same engine's dot-tile forward and A^T B weight gradient with
    # their own inputs and batch sizes; every answer is checked against NumPy.
    _core.set_num_threads(threads)
    forward = matmul_engine(2048, (40, 2048), True)
    w = np.random.default_rng(1).standard_normal((40, 2048)).astype(np.float32)
    forward.set_variable("w", w)
    grad = _weight_gradient_engine(128, 64)

    def drive(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for i in range(12):
            m = (25, 32, 64, 48)[(seed + i) % 4]
            x = rng.standard_normal((m, 2048)).astype(np.float32)
            got = forward.run("f", [x])[0]
            np.testing.assert_allclose(got, _numpy_forward(x, w), rtol=1e-5, atol=1e-2)
            batch = (512, 600, 768)[(seed + i) % 3]
            a = rng.standard_normal((batch, 128)).astype(np.float32)
            dy = rng.standard_normal((batch, 64)).astype(np.float32)
            got = grad.run("step", [a, dy])[0]
            want = dy.astype(np.float64).T @ a.astype(np.float64)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * batch)

    run_on_threads(drive, 4)


def train_against_torch(engine, values, lr, batches, torch_loss):
    """Runs the engine's SGD "step" on each tuple of float32 arrays in `batches` and the same
    step on torch float64 copies of the variables `values`, whose loss is torch_loss(params,
    *float64 tensors); asserts each step's loss and the variables after the last step."""
    params = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()
    }
    for arrays in batches:
        got = engine.run("step", list(arrays))[0]
        want = torch_loss(params, *(torch.from_numpy(a).double() for a in arrays))
        for p in params.values():
            p.grad = None
        want.backward()
        with torch.no_grad():
            for p in params.values():
                p -= lr * p.grad
        np.testing.assert_allclose(got, want.item(), rtol=1e-4)
    for name, p in params.items():
        ref = p.detach().numpy()
        np.testing.assert_allclose(np.asarray(engine.get_variable(name)), ref, rtol=1e-4,
                                   atol=1e-4 * np.abs(ref).max(), err_msg=name)  # fmt: skip


def _dense_stack_training(widths, steps, lr, threads, seed=0):
    """SGD on mean squared error through Dense-ReLU layers of `widths` for batches of 768 and
    769 rows, against torch float64."""
    _core.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    g = _core.Graph()
    x = g.input("x", (-1, widths[0]), "float32")
    y = g.input("y", (-1, widths[-1]), "float32")
    rate = g.scalar("lr", lr)
    h, params, values = x, [], {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        w = g.variable(f"w{i}", (n_out, n_in))
        b = g.variable(f"b{i}", (n_out,))
        values[f"w{i}"] = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        values[f"b{i}"] = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
        h = g.op("add", [g.op("matmul", [h, w], {"transpose_b": True}), b])
        if i < len(widths) - 2:
            h = g.op("relu", [h])
        params += [w, b]
    diff = g.op("sub", [h, y])
    loss = g.op("mean", [g.op("mul", [diff, diff])], {"axes": []})
    grads = g.gradients(loss, params)
    effects = [g.op("assign", [node, g.op("sub", [node, g.op("mul", [grad, rate])])])
               for node, grad in zip(params, grads)]  # fmt: skip
    engine = _core.Engine(g, seed=0)
    for name, value in values.items():
        engine.set_variable(name, value)
    engine.define("step", inputs=[x, y], outputs=[loss], effects=effects)
    layers = len(widths) - 1

    def torch_loss(p, xs, ys):
        for i in range(layers):
            xs = xs @ p[f"w{i}"].T + p[f"b{i}"]
            xs = torch.relu(xs) if i < layers - 1 else xs
        return ((xs - ys) ** 2).mean()

    batches = [
        tuple(
            rng.standard_normal((768 if step % 3 else 769, n)).astype(np.float32)
            for n in (widths[0], widths[-1])
        )
        for step in range(steps)
    ]  # the batch changes between calls
    train_against_torch(engine, values, lr, batches, torch_loss)


@pytest.mark.parametrize("threads", (1, 2, 3))
def test_a_dense_stack_of_768_rows_trains_as_torch_over_several_steps(threads):
    # 768 rows give 384 (2 threads) or 256 (3 threads) steps of K a thread in every weight
    # gradient: the split over K in each step; 512 -> 128 uses the packed row split.
    _dense_stack_training((512, 256, 128, 10), steps=5, lr=0.05, threads=threads)


PACKED_PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]


@pytest.mark.parametrize("path", PACKED_PATHS)
@pytest.mark.parametrize("n", (128, 129))  # 512 x 128 is the row-only split's largest weight
@pytest.mark.parametrize("threads, m", [(2, 42), (2, 63), (2, 64), (2, 96), (2, 97), (3, 143),
                                        (3, 144), (4, 192), (4, 191)])  # fmt: skip
def test_packed_row_split_edges_match_numpy(path, n, threads, m, monkeypatch):
    # 8 row tiles a thread (6 rows a tile on AVX-512, 4 elsewhere) on either side, for weights
    # at and one column past 256 KB; a batch of 1 and one of 70 rows after each, same engine.
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    _core.set_num_threads(threads)
    rng = np.random.default_rng(m * n)
    w = rng.standard_normal((n, 512)).astype(np.float32)
    engine = matmul_engine(512, w.shape, True)
    engine.set_variable("w", w)
    for rows in (m, 1, 70):
        x = rng.standard_normal((rows, 512)).astype(np.float32)
        got = engine.run("f", [x])[0]
        np.testing.assert_allclose(got, _numpy_forward(x, w), rtol=1e-5, atol=1e-3)


SET_THREADS_WHILE_RUNNING = """
import json, sys, threading, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from gometal import _core
from matmul_checks import matmul_engine, product_engine

rng = np.random.default_rng(0)
w = rng.standard_normal((40, 2048)).astype(np.float32)
forward = matmul_engine(2048, w.shape, True)
forward.set_variable("w", w)
grad = product_engine(True, False, (768, 64), (768, 128))
grad.set_variable("shift", np.zeros((768, 64), np.float32))
stop, worst, calls = threading.Event(), [0.0], [0]

def drive():
    local = np.random.default_rng(1)
    while not stop.is_set():
        x = local.standard_normal((32, 2048)).astype(np.float32)
        want = x.astype(np.float64) @ w.T.astype(np.float64)
        err = np.abs(forward.run("f", [x])[0] - want).max() / np.abs(want).max()
        a = local.standard_normal((768, 64)).astype(np.float32)
        b = local.standard_normal((768, 128)).astype(np.float32)
        want = a.T.astype(np.float64) @ b.astype(np.float64)
        err = max(err, np.abs(grad.run("f", [a, b])[0] - want).max() / np.abs(want).max())
        worst[0] = max(worst[0], float(err))
        calls[0] += 1

runner = threading.Thread(target=drive)
runner.start()
end = time.monotonic() + 2.0
while time.monotonic() < end:
    for threads in (1, 2, 4, 3):
        _core.set_num_threads(threads)
        time.sleep(0.003)
stop.set()
runner.join(60)
print(json.dumps({"calls": calls[0], "worst": worst[0], "alive": runner.is_alive()}))
"""


def test_set_num_threads_while_another_python_thread_runs_the_new_products():
    # A subprocess: a pool freed under a running plan would end the interpreter.
    tests = str(Path(__file__).resolve().parent)
    result = subprocess.run([sys.executable, "-c", SET_THREADS_WHILE_RUNNING, tests],
                            check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["alive"] and report["calls"] > 0
    assert report["worst"] < 1e-5, report
