"""Engines used from several Python threads at once give the same results as one by one
(the engine releases the GIL while it runs, and all engines share one thread pool)."""

import threading

import numpy as np

import gometal as gm


def _train(seed, x, y, steps=30):
    model = gm.ModelBuilder((16,)).dense(64).relu().dropout(0.2).dense(4).build(seed=seed)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-2), batch_size=32)
    losses = [trainer.train_batch(x, y).loss for _ in range(steps)]
    return losses, model.get_weights()


def test_two_trainers_on_two_threads_match_sequential_runs(rng):
    x = rng.standard_normal((32, 16)).astype(np.float32)
    y = rng.integers(0, 4, 32).astype(np.int32)
    expected = [_train(seed, x, y) for seed in (0, 1)]

    results = [None, None]

    def work(i):
        results[i] = _train(i, x, y)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (losses, weights), (exp_losses, exp_weights) in zip(results, expected):
        assert losses == exp_losses
        for name, value in exp_weights.items():
            np.testing.assert_array_equal(weights[name], value, err_msg=name)


def test_one_trainer_shared_by_two_threads_stays_consistent(rng):
    x = rng.standard_normal((32, 16)).astype(np.float32)
    y = rng.integers(0, 4, 32).astype(np.int32)
    model = gm.ModelBuilder((16,)).dense(32).relu().dense(4).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(0.0), batch_size=32)
    reference = trainer.evaluate(x, y)["loss"]
    seen = []

    def work():
        for _ in range(50):
            seen.append(trainer.train_batch(x, y).loss)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # lr = 0: every step sees the same weights, so every loss equals the reference.
    np.testing.assert_allclose(seen, reference, rtol=1e-6)
    assert len(seen) == 100
