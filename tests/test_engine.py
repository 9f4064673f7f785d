"""Engine behaviour seen through the public API: planned memory, plan caching, batch sizes,
determinism, dropout, runtime learning rate, threads, input layouts, the functional API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal.base.arrays import as_input_batch
from helpers import assert_weights_match, gm_weights_from_torch, mlp_pair, t, torch_step


def _data(n, features=20, classes=5, seed=0):
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((n, features)).astype(np.float32)
    y = gen.integers(0, classes, n).astype(np.int32)
    return x, y


def _dropout_model(seed=0):
    return (
        gm.ModelBuilder((20,))
        .dense(32)
        .relu()
        .dropout(0.3)
        .dense(16)
        .relu()
        .dropout(0.2)
        .dense(5)
        .build(seed=seed)
    )


# -- planned memory and plan caching -------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_steady_state_training_allocates_nothing(optimizer):
    opt = gm.optim.SGD(lr=0.05, momentum=0.9) if optimizer == "sgd_momentum" else gm.optim.Adam()
    trainer = gm.Trainer(_dropout_model(), loss="cross_entropy", optimizer=opt, batch_size=32)
    x, y = _data(32 * 10)
    for i in range(3):
        trainer.train_batch(x[32 * i : 32 * (i + 1)], y[32 * i : 32 * (i + 1)])
    before = trainer.engine_stats()
    assert set(before) >= {"arena_bytes", "persistent_bytes", "allocations", "steps", "plans"}
    for i in range(100):
        rows = slice(32 * (i % 10), 32 * (i % 10 + 1))
        trainer.train_batch(x[rows], y[rows])
    after = trainer.engine_stats()
    assert after["allocations"] == before["allocations"]
    assert after["plans"] == before["plans"]
    assert after["arena_bytes"] == before["arena_bytes"]
    assert after["steps"] == before["steps"] + 100
    # Parameters and optimizer slots live in the engine.
    slots = 2 if optimizer == "adam" else 1
    params = trainer.model.count_params()
    assert after["persistent_bytes"] >= 4 * params * (1 + slots)


def test_short_last_batch_matches_torch_and_caches_plans():
    net, model = mlp_pair([20, 32, 16, 5], "relu", seed=3)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1), batch_size=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = _data(32 + 7 + 32 + 7, seed=3)
    sizes = [32, 7, 32, 7]
    plans = []
    start = 0
    for n in sizes:
        xb, yb = x[start : start + n], y[start : start + n]
        start += n
        step = trainer.train_batch(xb, yb)
        expected = torch_step(net, opt, nn.functional.cross_entropy, xb, yb)
        assert step.loss == pytest.approx(expected, rel=1e-5)
        plans.append(trainer.engine_stats()["plans"])
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)
    # One plan per batch size: the second size adds one, repeats add none.
    assert plans[1] == plans[0] + 1
    assert plans[2] == plans[1]
    assert plans[3] == plans[1]


def test_short_batch_loss_is_the_mean_of_per_sample_losses():
    model = gm.ModelBuilder((20,)).dense(16).tanh().dense(5).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.0))
    x, y = _data(7, seed=4)
    per_sample = [trainer.evaluate(x[i : i + 1], y[i : i + 1])["loss"] for i in range(7)]
    assert trainer.train_batch(x, y).loss == pytest.approx(np.mean(per_sample), rel=1e-5)
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(np.mean(per_sample), rel=1e-5)


def test_inference_plans_are_cached():
    trainer = gm.Trainer(_dropout_model(), loss="cross_entropy", batch_size=32)
    x, y = _data(40)
    trainer.evaluate(x, y)
    trainer.predict(x)
    trainer.predict_proba(x)
    plans = trainer.engine_stats()["plans"]
    allocations = trainer.engine_stats()["allocations"]
    for _ in range(5):
        trainer.evaluate(x, y)
        trainer.predict(x)
        trainer.predict_proba(x)
    assert trainer.engine_stats()["plans"] == plans
    assert trainer.engine_stats()["allocations"] == allocations


def test_evaluate_in_batches_weights_by_sample_count():
    model = gm.ModelBuilder((20,)).dense(5).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy")
    x, y = _data(50, seed=5)
    whole = trainer.evaluate(x, y)
    chunked = trainer.evaluate(x, y, batch_size=7)
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    assert chunked["accuracy"] == pytest.approx(whole["accuracy"], abs=1e-9)
    logits = model.predict(x).astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert whole["loss"] == pytest.approx(-logp[np.arange(50), y].mean(), rel=1e-5)
    assert whole["accuracy"] == pytest.approx((logits.argmax(1) == y).mean(), abs=1e-9)


# -- determinism ---------------------------------------------------------------------------------


DETERMINISM_OPTIMIZERS = {
    "adam": lambda: gm.optim.Adam(lr=5e-3),
    "adam_weight_decay": lambda: gm.optim.Adam(lr=5e-3, weight_decay=0.01),
    "sgd_nesterov_weight_decay": lambda: gm.optim.SGD(
        lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01
    ),
}


def _train_dropout(trainer_seed, steps=100, init_seed=0, optimizer="adam"):
    model = _dropout_model(seed=init_seed)
    trainer = gm.Trainer(
        model,
        loss="cross_entropy",
        optimizer=DETERMINISM_OPTIMIZERS[optimizer](),
        batch_size=32,
        seed=trainer_seed,
    )
    x, y = _data(32 * 5, seed=6)
    losses = []
    for i in range(steps):
        rows = slice(32 * (i % 5), 32 * (i % 5 + 1))
        losses.append(trainer.train_batch(x[rows], y[rows]).loss)
    return model.get_weights(), losses


@pytest.mark.parametrize("optimizer", list(DETERMINISM_OPTIMIZERS))
def test_same_seed_gives_bit_identical_training(optimizer):
    first, first_losses = _train_dropout(trainer_seed=3, optimizer=optimizer)
    second, second_losses = _train_dropout(trainer_seed=3, optimizer=optimizer)
    assert first_losses == second_losses
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_inference_between_steps_changes_nothing():
    """evaluate and predict neither update weights nor consume dropout randomness."""
    x, y = _data(64, seed=16)
    results = []
    for interleave in (False, True):
        model = _dropout_model(seed=0)
        trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(), seed=2)
        for i in range(10):
            rows = slice(16 * (i % 4), 16 * (i % 4) + 16)
            if interleave:
                before = model.get_weights()
                steps = trainer.engine_stats()["steps"]
                trainer.evaluate(x, y)
                trainer.predict(x)
                model.predict(x[:5])
                assert trainer.engine_stats()["steps"] == steps
                for name, value in model.get_weights().items():
                    np.testing.assert_array_equal(value, before[name])
            trainer.train_batch(x[rows], y[rows])
        results.append(model.get_weights())
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)


def test_different_dropout_seed_gives_different_training():
    # Same initial weights, different dropout streams.
    first, first_losses = _train_dropout(trainer_seed=3, steps=20)
    other, other_losses = _train_dropout(trainer_seed=4, steps=20)
    assert first_losses[0] != other_losses[0]
    assert any(not np.array_equal(first[n], other[n]) for n in first)


def test_model_seed_sets_initial_weights():
    a = _dropout_model(seed=0).get_weights()
    b = _dropout_model(seed=0).get_weights()
    c = _dropout_model(seed=1).get_weights()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])


# -- dropout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.3, 0.6])
def test_dropout_mask_fraction_and_scaling(rate):
    """dropout -> dense(1, no bias) with all-one weights: after one SGD step exactly the kept
    inputs' weights have moved, and the loss reveals the 1 / (1 - rate) scaling."""
    n, lr, scale = 2000, 0.1, 0.01
    model = gm.ModelBuilder((n,)).dropout(rate).dense(1, use_bias=False).build(seed=0)
    model.set_weights({"dense_0.weight": np.ones((1, n), np.float32)})
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=lr), batch_size=1, seed=5)
    x = np.full((1, n), scale, np.float32)
    step = trainer.train_batch(x, np.zeros((1, 1), np.float32))
    moved = model.get_weights()["dense_0.weight"][0] != 1.0
    kept = int(moved.sum())
    assert abs(kept / n - (1.0 - rate)) < 0.05
    prediction = scale * kept / (1.0 - rate)
    assert step.loss == pytest.approx(prediction**2, rel=1e-4)
    # d(loss)/dw_j = 2 * prediction * scale / (1 - rate) for kept inputs.
    expected_weight = 1.0 - lr * 2.0 * prediction * scale / (1.0 - rate)
    np.testing.assert_allclose(
        model.get_weights()["dense_0.weight"][0][moved], expected_weight, rtol=1e-5
    )


def test_dropout_is_active_in_training_and_identity_in_inference():
    n = 200
    model = gm.ModelBuilder((n,)).dropout(0.5).dense(1, use_bias=False).build(seed=0)
    weight = np.random.default_rng(0).standard_normal((1, n)).astype(np.float32)
    model.set_weights({"dense_0.weight": weight})
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.0), batch_size=4)
    x = np.random.default_rng(1).standard_normal((4, n)).astype(np.float32)
    y = np.zeros((4, 1), np.float32)
    train_losses = [trainer.train_batch(x, y).loss for _ in range(4)]
    assert len(set(train_losses)) == 4  # a new mask every step
    np.testing.assert_array_equal(model.get_weights()["dense_0.weight"], weight)  # lr = 0

    expected = x.astype(np.float64) @ weight[0].astype(np.float64)
    np.testing.assert_allclose(model.predict(x)[:, 0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.predict(x), model.predict(x))
    evaluated = [trainer.evaluate(x, y)["loss"] for _ in range(3)]
    assert evaluated[0] == evaluated[1] == evaluated[2]
    assert evaluated[0] == pytest.approx(np.mean(expected**2), rel=1e-5)
    assert all(loss != evaluated[0] for loss in train_losses)


def test_dropout_rate_zero_is_identity_in_training():
    net, _ = mlp_pair([20, 8, 5], "relu", seed=0)
    model = gm.ModelBuilder((20,)).dense(8).relu().dropout(0.0).dense(5).build(seed=0)
    model.set_weights(gm_weights_from_torch(net))
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.0))
    x, y = _data(16, seed=7)
    expected = nn.functional.cross_entropy(net(t(x)), t(y)).item()
    assert trainer.train_batch(x, y).loss == pytest.approx(expected, rel=1e-5)


def test_predict_with_dropout_matches_torch_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 5)).eval()
    model = gm.ModelBuilder((20,)).dense(32).relu().dropout(0.5).dense(5).build(seed=0)
    model.set_weights(gm_weights_from_torch(net))
    x, _ = _data(10, seed=8)
    np.testing.assert_allclose(model.predict(x), net(t(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


# -- learning rate -------------------------------------------------------------------------------


def test_set_learning_rate_scales_the_update_without_new_plans():
    model = gm.ModelBuilder((20,)).dense(16).tanh().dense(5).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    x, y = _data(16, seed=9)
    w0 = model.get_weights()

    trainer.set_learning_rate(0.0)
    trainer.train_batch(x, y)
    plans = trainer.engine_stats()["plans"]
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, w0[name], err_msg=name)

    trainer.set_learning_rate(0.05)
    trainer.train_batch(x, y)
    delta_small = {k: v - w0[k] for k, v in model.get_weights().items()}

    model.set_weights(w0)
    trainer.set_learning_rate(0.1)
    trainer.train_batch(x, y)
    delta_large = {k: v - w0[k] for k, v in model.get_weights().items()}

    for name in w0:
        assert np.abs(delta_small[name]).max() > 1e-4, name
        np.testing.assert_allclose(
            delta_large[name], 2.0 * delta_small[name], rtol=1e-3, atol=1e-7, err_msg=name
        )
    assert trainer.engine_stats()["plans"] == plans


def test_set_learning_rate_matches_torch_schedule():
    net, model = mlp_pair([20, 16, 5], "relu", seed=1)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = _data(64, seed=10)
    for i, lr in enumerate([1e-2, 5e-3, 5e-3, 1e-3, 2e-2, 0.0, 1e-3]):
        trainer.set_learning_rate(lr)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = slice(8 * i, 8 * i + 8)
        step = trainer.train_batch(x[rows], y[rows])
        expected = torch_step(net, opt, nn.functional.cross_entropy, x[rows], y[rows])
        assert step.loss == pytest.approx(expected, rel=1e-5)
    assert_weights_match(model, net, rtol=1e-4, atol=1e-6)


# -- threads -------------------------------------------------------------------------------------


def _train_wide(optimizer, steps=20, batch=100):
    model = gm.ModelBuilder((64,)).dense(256).tanh().dense(128).gelu().dense(10).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=DETERMINISM_OPTIMIZERS[optimizer]())
    x, y = _data(batch * steps, features=64, classes=10, seed=11)
    losses = [
        trainer.train_batch(x[batch * i : batch * (i + 1)], y[batch * i : batch * (i + 1)]).loss
        for i in range(steps)
    ]
    return np.array(losses), model.get_weights(), model.predict(x[:300])


@pytest.mark.parametrize("optimizer", list(DETERMINISM_OPTIMIZERS))
def test_thread_count_does_not_change_results(optimizer):
    original = gm.get_num_threads()
    try:
        gm.set_num_threads(1)
        assert gm.get_num_threads() == 1
        losses1, weights1, out1 = _train_wide(optimizer)
        gm.set_num_threads(2)
        assert gm.get_num_threads() == 2
        losses2, weights2, out2 = _train_wide(optimizer)
        # Two threads, twice: the same result both times.
        losses3, weights3, _ = _train_wide(optimizer)
    finally:
        gm.set_num_threads(original)
    np.testing.assert_array_equal(losses2, losses3)
    for name in weights2:
        np.testing.assert_array_equal(weights2[name], weights3[name], err_msg=name)
    np.testing.assert_allclose(losses1, losses2, rtol=1e-5, atol=1e-5)
    # Adam divides by sqrt(v) + eps: for a gradient near eps (~1e-8) a change in summation
    # order alone moves that step by up to ~1 % of lr. SGD has no such amplification.
    weight_atol = 1e-4 if optimizer.startswith("adam") else 1e-5
    for name in weights1:
        np.testing.assert_allclose(
            weights1[name], weights2[name], rtol=1e-5, atol=weight_atol, err_msg=name
        )
    np.testing.assert_allclose(out1, out2, rtol=1e-4, atol=1e-5)


# -- input layouts -------------------------------------------------------------------------------


def test_c_contiguous_float32_passes_through_without_copy():
    x, _ = _data(8)
    assert as_input_batch(x, (20,)) is x
    converted = as_input_batch(np.asfortranarray(x), (20,))
    assert converted.flags.c_contiguous and converted.dtype == np.float32
    np.testing.assert_array_equal(converted, x)


def test_input_layouts_and_dtypes_give_the_same_results():
    x, y = _data(24, seed=12)
    x_copy = x.copy()
    padded = np.zeros((24, 40), np.float32)
    padded[:, ::2] = x
    variants = {
        "fortran": np.asfortranarray(x),
        "float64": x.astype(np.float64),
        "strided": padded[:, ::2],
        "list": x.tolist(),
    }
    model = gm.ModelBuilder((20,)).dense(16).relu().dense(5).build(seed=0)
    reference = model.predict(x)
    for name, variant in variants.items():
        np.testing.assert_allclose(
            model.predict(variant), reference, rtol=1e-6, atol=1e-7, err_msg=name
        )
    np.testing.assert_array_equal(x, x_copy)  # the caller's array is not modified

    results = {}
    for name, (xv, yv) in {
        "c_float32": (x, y),
        "fortran_float64": (np.asfortranarray(x.astype(np.float64)), y.astype(np.int64)),
        "strided_int_list": (padded[:, ::2], y.tolist()),
    }.items():
        model = gm.ModelBuilder((20,)).dense(16).relu().dense(5).build(seed=0)
        trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
        losses = [trainer.train_batch(xv, yv).loss for _ in range(3)]
        results[name] = (losses, model.get_weights())
    ref_losses, ref_weights = results["c_float32"]
    for name, (losses, weights) in results.items():
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-6, err_msg=name)
        for w in weights:
            np.testing.assert_allclose(
                weights[w], ref_weights[w], rtol=1e-6, atol=1e-7, err_msg=f"{name} {w}"
            )
    np.testing.assert_array_equal(x, x_copy)


def test_regression_targets_of_shape_n_are_accepted_for_one_output():
    x, _ = _data(16, seed=13)
    target = np.random.default_rng(13).standard_normal(16).astype(np.float32)
    losses = []
    for y in (target, target[:, None]):
        model = gm.ModelBuilder((20,)).dense(1).build(seed=0)
        trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1))
        losses.append([trainer.train_batch(x, y).loss for _ in range(2)])
    assert losses[0] == losses[1]
    pred = gm.ModelBuilder((20,)).dense(1).build(seed=0).predict(x)[:, 0]
    assert losses[0][0] == pytest.approx(np.mean((pred - target) ** 2), rel=1e-5)


# -- functional API ------------------------------------------------------------------------------


class _TorchSkipNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.h = nn.Linear(10, 16)
        self.s = nn.Linear(16, 16)
        self.g = nn.Linear(10, 16)
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        h = torch.relu(self.h(x))
        s = self.s(h)
        gate = torch.sigmoid(self.g(x))
        residual = h + s
        product = s * gate
        return self.out(torch.cat([residual, product], dim=-1))


def _functional_model():
    x = gm.Input((10,))
    h = gm.layers.ReLU()(gm.layers.Dense(16, name="h")(x))
    s = gm.layers.Dense(16, name="s")(h)
    gate = gm.layers.Sigmoid()(gm.layers.Dense(16, name="g")(x))
    joined = gm.ops.concat([h + s, s * gate], axis=-1)
    assert joined.shape == (None, 32)
    out = gm.layers.Dense(3, name="out")(joined)
    return gm.Model(x, out)


def _torch_state_for_gm(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def test_functional_skip_product_concat_matches_torch():
    torch.manual_seed(0)
    net = _TorchSkipNet()
    model = _functional_model()
    assert set(model.get_weights()) == set(net.state_dict())
    assert model.count_params() == sum(p.numel() for p in net.parameters())
    model.set_weights(_torch_state_for_gm(net))
    gen = np.random.default_rng(14)
    x = gen.standard_normal((40, 10)).astype(np.float32)
    y = gen.integers(0, 3, 40).astype(np.int32)
    np.testing.assert_allclose(model.predict(x), net(t(x)).detach().numpy(), rtol=1e-5, atol=1e-6)

    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1, momentum=0.9), batch_size=8
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gm_losses, torch_losses = [], []
    for epoch in range(4):
        for i in range(5):
            rows = slice(8 * i, 8 * i + 8)
            gm_losses.append(trainer.train_batch(x[rows], y[rows]).loss)
            torch_losses.append(torch_step(net, opt, nn.functional.cross_entropy, x[rows], y[rows]))
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=1e-4)
    assert np.mean(torch_losses[-5:]) < np.mean(torch_losses[:5])
    got = model.get_weights()
    for name, value in _torch_state_for_gm(net).items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(model.predict(x), net(t(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_functional_auto_names_and_shared_layer():
    x = gm.Input((6,))
    shared = gm.layers.Dense(6)
    y = gm.layers.Dense(2)(shared(shared(x)) + x)
    model = gm.Model(x, y)
    names = set(model.get_weights())
    assert names == {"dense_0.weight", "dense_0.bias", "dense_1.weight", "dense_1.bias"}
    weights = model.get_weights()
    a, b = weights["dense_0.weight"], weights["dense_0.bias"]
    c, d = weights["dense_1.weight"], weights["dense_1.bias"]
    v = np.random.default_rng(15).standard_normal((3, 6)).astype(np.float32)
    inner = (v @ a.T + b) @ a.T + b
    np.testing.assert_allclose(model.predict(v), (inner + v) @ c.T + d, rtol=1e-5, atol=1e-6)


def test_arena_bytes_count_the_working_memory_and_not_the_weights():
    """Before any plan the arena is empty whatever the weights; a training step of a
    1024 x 1024 dense layer holds at least its weight gradient (4 MiB) in the arena."""
    model = gm.ModelBuilder((1024,)).dense(1024).dense(2).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    stats = trainer.engine_stats()
    assert stats["arena_bytes"] == 0 and stats["persistent_bytes"] >= 4 * 1024 * 1024
    trainer.train_batch(np.zeros((1, 1024), np.float32), np.zeros(1, np.int32))
    assert trainer.engine_stats()["arena_bytes"] >= 4 * 1024 * 1024
