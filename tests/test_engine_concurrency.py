"""The engine under threads and many batch sizes: the thread count changes while a step
runs, weights and checkpoints are read while another thread trains, and the plan cache
stays bounded when every batch size comes by.

Threaded cases that could crash the interpreter (a freed thread pool) run in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import gometal as gm

TIMEOUT = 180


def _run_script(code: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


TRAIN_WHILE_THREADS_CHANGE = """
    import json, sys, threading
    import numpy as np
    import gometal as gm

    flip = sys.argv[1] == "flip" if len(sys.argv) > 1 else {flip}
    gm.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    model = (gm.ModelBuilder((1, 16, 16)).conv2d(8, 3, padding=1).batch_norm().relu()
             .max_pool2d(2).flatten().dense(3).build(seed=0))
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="adam", batch_size=64)
    done = threading.Event()

    def change_threads():
        counts = [1, 3, 2, 4]
        i = 0
        while not done.is_set():
            gm.set_num_threads(counts[i % len(counts)])
            i += 1

    changer = threading.Thread(target=change_threads)
    if flip:
        changer.start()
    losses = [trainer.train_batch(x, y).loss for _ in range(60)]
    done.set()
    if flip:
        changer.join()
    weights = {{k: v.tolist() for k, v in model.get_weights().items()}}
    print(json.dumps({{"losses": losses, "weights": weights}}))
"""


def test_changing_the_thread_count_during_training_is_safe_and_changes_no_result():
    # Results do not depend on the thread count (fixed-order reductions), so a run whose
    # thread count keeps changing under it must match a run that never changes it.
    steady = _run_script(TRAIN_WHILE_THREADS_CHANGE.format(flip=False))
    flipping = _run_script(TRAIN_WHILE_THREADS_CHANGE.format(flip=True))
    assert flipping["losses"] == steady["losses"]
    assert flipping["weights"] == steady["weights"]


def _two_head_trainer():
    # Zero inputs and targets far above the outputs: every step adds exactly 1 to both
    # heads' biases (MAE gradient -1/4 per element, lr 4), so a consistent snapshot has
    # equal biases in both heads, and their value is the step count.
    x_in = gm.Input((3,))
    a, b = gm.layers.Dense(2, name="a"), gm.layers.Dense(2, name="b")
    model = gm.Model(x_in, gm.layers.Concatenate()([a(x_in), b(x_in)]))
    model.set_weights({"a.bias": np.zeros(2), "b.bias": np.zeros(2)})
    trainer = gm.Trainer(model, loss="mae", optimizer=gm.optim.SGD(lr=4.0))
    return model, trainer, np.zeros((4, 3), np.float32), np.full((4, 4), 1e6, np.float32)


def _train_in_background(trainer, x, y, steps, pause=0.0):
    def train():
        for _ in range(steps):
            trainer.train_batch(x, y)
            if pause:
                time.sleep(pause)  # locks are not fair: leave a reader a moment between steps

    thread = threading.Thread(target=train)
    thread.start()
    return thread


def test_weights_read_during_training_are_always_from_one_step():
    model, trainer, x, y = _two_head_trainer()
    steps = 400
    thread = _train_in_background(trainer, x, y, steps, pause=0.0002)
    torn, seen = [], set()
    while thread.is_alive():
        weights = model.get_weights()
        if not np.array_equal(weights["a.bias"], weights["b.bias"]):
            torn.append((weights["a.bias"], weights["b.bias"]))
        seen.add(float(weights["a.bias"][0]))
    thread.join(TIMEOUT)
    assert not torn, torn[:3]
    assert min(seen) < steps  # some reads really happened while training ran
    np.testing.assert_array_equal(model.get_weights()["a.bias"], [steps, steps])


def test_a_checkpoint_saved_during_training_is_one_steps_state(tmp_path):
    _, trainer, x, y = _two_head_trainer()
    steps = 30000
    thread = _train_in_background(trainer, x, y, steps)
    paths = []
    while thread.is_alive() and len(paths) < 40:
        path = tmp_path / f"ckpt{len(paths)}.safetensors"
        trainer.save(path)
        paths.append(path)
    thread.join(TIMEOUT)
    assert paths
    steps_seen = []
    for path in paths:
        loaded = gm.Trainer.load(path)
        weights = loaded.model.get_weights()
        np.testing.assert_array_equal(weights["a.bias"], weights["b.bias"])
        # The optimizer's step counter is saved with the same step's weights.
        assert weights["a.bias"][0] == loaded.step
        steps_seen.append(loaded.step)
    assert min(steps_seen) < steps  # some saves really happened while training ran


def test_the_plan_cache_is_bounded_and_plans_share_one_workspace():
    model = gm.ModelBuilder((64,)).dense(256).relu().dense(10).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="sgd")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 64)).astype(np.float32)
    y = rng.integers(0, 10, 96).astype(np.int32)
    for batch in range(1, 97):
        trainer.train_batch(x[:batch], y[:batch])
    stats = trainer.engine_stats()
    assert stats["plans"] <= 8

    only_largest = gm.Trainer(
        gm.ModelBuilder((64,)).dense(256).relu().dense(10).build(seed=0),
        loss="cross_entropy",
        optimizer="sgd",
    )
    only_largest.train_batch(x, y)
    # 96 batch sizes need no more memory than the largest alone.
    assert stats["arena_bytes"] == only_largest.engine_stats()["arena_bytes"]
    # An evicted batch size compiles again, in the same workspace, and steps exactly as a
    # plan in a fresh trainer does (plain SGD keeps no state between steps).
    twin_model = gm.ModelBuilder((64,)).dense(256).relu().dense(10).build(seed=0)
    twin_model.set_weights(model.get_weights())
    twin = gm.Trainer(twin_model, loss="cross_entropy", optimizer="sgd")
    assert trainer.train_batch(x[:1], y[:1]).loss == twin.train_batch(x[:1], y[:1]).loss
    for name, value in twin_model.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[name], value)
    assert trainer.engine_stats()["arena_bytes"] == stats["arena_bytes"]
    assert trainer.engine_stats()["plans"] <= 8


PEAK_RSS = """
    import json, resource, sys
    import numpy as np
    import gometal as gm

    sizes = {sizes}
    model = gm.ModelBuilder((784,)).dense(1024).relu().dense(10).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="adam")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    y = rng.integers(0, 10, 256).astype(np.int32)
    for batch in sizes:
        trainer.train_batch(x[:batch], y[:batch])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    print(json.dumps({{"peak_mb": peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)}}))
"""


@pytest.mark.parametrize("count", [256])
def test_training_at_every_batch_size_keeps_memory_flat(count):
    every = _run_script(PEAK_RSS.format(sizes=f"range(1, {count + 1})"))["peak_mb"]
    largest = _run_script(PEAK_RSS.format(sizes=f"[{count}]"))["peak_mb"]
    # Before plans shared one workspace, 256 batch sizes held ~1 GB of arenas.
    assert every < largest * 1.25 + 20, (every, largest)


def _peak_traced_mb(fn) -> float:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_predict_and_evaluate_convert_large_inputs_a_chunk_at_a_time():
    # One real row seen 200,000 times (a broadcast view: 3 KB of data) used to be copied
    # whole to contiguous float32 first: 627 MB here.
    model = gm.ModelBuilder((784,)).dense(2).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="sgd")
    row = np.random.default_rng(0).standard_normal(784)  # float64: needs converting
    x = np.broadcast_to(row, (200_000, 784))
    y = np.zeros(200_000, np.int32)
    expected = row.astype(np.float32) @ model.get_weights()["dense_0.weight"].T
    expected += model.get_weights()["dense_0.bias"]

    predictions: list[np.ndarray] = []
    assert _peak_traced_mb(lambda: predictions.append(model.predict(x))) < 64
    np.testing.assert_allclose(predictions[0][[0, -1]], [expected, expected], rtol=1e-5)
    results: list[dict] = []
    assert _peak_traced_mb(lambda: results.append(trainer.evaluate(x, y))) < 64
    logits = expected - expected.max()
    assert results[0]["loss"] == pytest.approx(-(logits[0] - np.log(np.exp(logits).sum())), 1e-4)
