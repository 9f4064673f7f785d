"""Learning-rate schedulers against ``torch.optim.lr_scheduler``: the same settings give the
same rates, the rates reach the trainer's weight update, and state/config round-trip.
Bad arguments are in test_schedulers_arguments.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as tls

import gometal as gm
from helpers import mlp_pair, t

S = gm.schedulers
BASE_LR = 0.1
RTOL = 1e-9  # torch's own float64 arithmetic is reproduced, so far tighter than 1e-6


def make_trainer(lr: float = BASE_LR) -> gm.Trainer:
    model = gm.ModelBuilder((3,)).dense(2).build(seed=0)
    return gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=lr), batch_size=4)


def torch_rates(make, steps, lr=BASE_LR, metrics=None):
    """Rates of a torch scheduler on SGD over one parameter: initial, then after each step."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = make(opt)
    rates = [opt.param_groups[0]["lr"]]
    for i in range(steps):
        opt.step()  # the order torch expects; a no-op without gradients
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
        rates.append(opt.param_groups[0]["lr"])
    return np.array(rates)


def gm_rates(sched, trainer, steps, metrics=None):
    """Rates of an attached gometal scheduler; checks the trainer holds each one."""
    rates = [sched.last_lr]
    assert trainer.learning_rate == np.float32(sched.last_lr)
    for i in range(steps):
        lr = sched.step() if metrics is None else sched.step(metrics[i])
        assert lr == sched.last_lr == sched.get_last_lr()[0]
        assert trainer.learning_rate == np.float32(lr)
        rates.append(lr)
    assert sched.last_epoch == steps
    return np.array(rates)


def assert_rates_equal(got, expected):
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0.0)


# (gometal factory, torch factory, steps)
MATCHING_TORCH = {
    "constant": (lambda: S.Constant(), lambda o: tls.LambdaLR(o, lambda _: 1.0), 50),
    "constant_lr_default": (lambda: S.ConstantLR(), lambda o: tls.ConstantLR(o), 50),
    "constant_lr": (
        lambda: S.ConstantLR(factor=0.25, total_iters=12),
        lambda o: tls.ConstantLR(o, factor=0.25, total_iters=12),
        50,
    ),
    "step_7_half": (
        lambda: S.StepLR(step_size=7, gamma=0.5),
        lambda o: tls.StepLR(o, step_size=7, gamma=0.5),
        200,
    ),
    "step_30_default": (lambda: S.StepLR(step_size=30), lambda o: tls.StepLR(o, 30), 200),
    "step_growing": (
        lambda: S.StepLR(step_size=3, gamma=1.5),
        lambda o: tls.StepLR(o, step_size=3, gamma=1.5),
        60,
    ),
    "multistep": (
        lambda: S.MultiStepLR(milestones=[10, 25, 60], gamma=0.1),
        lambda o: tls.MultiStepLR(o, milestones=[10, 25, 60], gamma=0.1),
        100,
    ),
    "multistep_repeated": (
        lambda: S.MultiStepLR(milestones=[5, 5, 40], gamma=0.5),
        lambda o: tls.MultiStepLR(o, milestones=[5, 5, 40], gamma=0.5),
        100,
    ),
    "multistep_at_zero": (
        lambda: S.MultiStepLR(milestones=[0, 3], gamma=0.3),
        lambda o: tls.MultiStepLR(o, milestones=[0, 3], gamma=0.3),
        20,
    ),
    "exponential_095": (
        lambda: S.ExponentialLR(gamma=0.95),
        lambda o: tls.ExponentialLR(o, gamma=0.95),
        200,
    ),
    "exponential_101": (
        lambda: S.ExponentialLR(gamma=1.01),
        lambda o: tls.ExponentialLR(o, gamma=1.01),
        200,
    ),
    "cosine_10": (
        lambda: S.CosineAnnealingLR(T_max=10),
        lambda o: tls.CosineAnnealingLR(o, T_max=10),
        200,
    ),
    "cosine_50_eta": (
        lambda: S.CosineAnnealingLR(T_max=50, eta_min=1e-3),
        lambda o: tls.CosineAnnealingLR(o, T_max=50, eta_min=1e-3),
        200,
    ),
    "cosine_7_eta": (
        lambda: S.CosineAnnealingLR(T_max=7, eta_min=0.02),
        lambda o: tls.CosineAnnealingLR(o, T_max=7, eta_min=0.02),
        200,
    ),
    "cosine_200": (
        lambda: S.CosineAnnealingLR(T_max=200),
        lambda o: tls.CosineAnnealingLR(o, T_max=200),
        200,
    ),
    "cosine_1": (
        lambda: S.CosineAnnealingLR(T_max=1),
        lambda o: tls.CosineAnnealingLR(o, T_max=1),
        50,
    ),
    "one_cycle_cos": (
        lambda: S.OneCycleLR(max_lr=0.5, total_steps=100),
        lambda o: tls.OneCycleLR(o, max_lr=0.5, total_steps=100, cycle_momentum=False),
        100,
    ),
    "one_cycle_linear_epochs": (
        lambda: S.OneCycleLR(
            max_lr=1.0, epochs=5, steps_per_epoch=20, pct_start=0.25, anneal_strategy="linear"
        ),
        lambda o: tls.OneCycleLR(
            o,
            max_lr=1.0,
            epochs=5,
            steps_per_epoch=20,
            pct_start=0.25,
            anneal_strategy="linear",
            cycle_momentum=False,
        ),
        100,
    ),
    "one_cycle_three_phase": (
        lambda: S.OneCycleLR(
            max_lr=0.3, total_steps=150, div_factor=10.0, final_div_factor=100.0, three_phase=True
        ),
        lambda o: tls.OneCycleLR(
            o,
            max_lr=0.3,
            total_steps=150,
            div_factor=10.0,
            final_div_factor=100.0,
            three_phase=True,
            cycle_momentum=False,
        ),
        150,
    ),
}


@pytest.mark.parametrize("case", list(MATCHING_TORCH))
def test_rates_match_torch(case):
    make_gm, make_torch, steps = MATCHING_TORCH[case]
    trainer = make_trainer()
    sched = make_gm().attach(trainer)
    expected = torch_rates(make_torch, steps)
    if case == "one_cycle_linear_epochs":
        # The last allowed step is one past the cycle, where torch's linear anneal
        # overshoots below zero; a learning rate stops at 0.
        assert expected[-1] < 0
        expected[-1] = 0.0
    assert_rates_equal(gm_rates(sched, trainer, steps), expected)


def test_cosine_follows_torch_recursion_not_closed_form():
    # The closed form drifts from torch's recursion by rounding (~1e-14 here); the
    # recursion itself is reproduced, so the rates are equal bit for bit.
    steps = 200
    trainer = make_trainer(lr=0.37)
    got = gm_rates(S.CosineAnnealingLR(trainer, T_max=13), trainer, steps)
    expected = torch_rates(lambda o: tls.CosineAnnealingLR(o, T_max=13), steps, lr=0.37)
    np.testing.assert_array_equal(got, expected)


def test_constant_with_a_given_rate_and_passed_trainer():
    trainer = make_trainer()
    sched = S.Constant(trainer, lr=0.05)
    assert sched.trainer is trainer
    assert_rates_equal(gm_rates(sched, trainer, 10), np.full(11, 0.05))


def test_base_lr_is_the_trainers_rate_even_after_a_manual_change():
    trainer = make_trainer()
    trainer.set_learning_rate(0.03)
    sched = S.ExponentialLR(trainer, gamma=0.5)
    assert sched.base_lr == 0.03  # the float32 engine value maps back to what was set
    assert_rates_equal(gm_rates(sched, trainer, 5), 0.03 * 0.5 ** np.arange(6))


def test_one_cycle_ignores_the_trainers_rate_and_defaults_to_batches():
    trainer = make_trainer(lr=0.7)
    sched = S.OneCycleLR(trainer, max_lr=0.5, total_steps=10)
    assert sched.interval == "batch"
    assert sched.base_lr == pytest.approx(0.5 / 25.0, rel=1e-15)
    assert trainer.learning_rate == np.float32(0.02)
    assert S.StepLR(step_size=1).interval == "epoch"
    assert S.StepLR(step_size=1, interval="batch").interval == "batch"


def test_one_cycle_past_total_steps_raises_like_torch():
    total = 20
    trainer = make_trainer()
    sched = S.OneCycleLR(trainer, max_lr=0.5, total_steps=total)
    for _ in range(total):  # torch allows exactly total_steps steps
        sched.step()
    last = sched.last_lr
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    torch_sched = tls.OneCycleLR(opt, max_lr=0.5, total_steps=total, cycle_momentum=False)
    for _ in range(total):
        opt.step()
        torch_sched.step()
    with pytest.raises(ValueError, match="Tried to step 21 times"):
        torch_sched.step()
    with pytest.raises(ValueError, match=r"tried to step 21 times.*total_steps=20"):
        sched.step()
    assert sched.last_lr == last and sched.last_epoch == total  # unchanged by the failure
    assert trainer.learning_rate == np.float32(last)


# -- ReduceLROnPlateau ------------------------------------------------------------------------
def plateau_metrics(steps=120, seed=3):
    """A loss curve with improvements, long plateaus, exact ties and a late drop."""
    gen = np.random.default_rng(seed)
    curve = np.concatenate(
        [
            np.linspace(2.0, 1.0, 15),
            np.full(12, 1.0),
            np.linspace(1.0, 0.8, 6),
            0.8 + 0.02 * gen.standard_normal(25),
            np.full(20, 0.75),
            np.linspace(0.75, 0.3, 10),
            0.3 + 0.001 * gen.standard_normal(steps),
        ]
    )[:steps]
    return [float(v) for v in np.round(curve, 4)]


PLATEAU_SETTINGS = [
    {"patience": 3},
    {"patience": 0},
    {"mode": "min", "factor": 0.5, "patience": 2, "cooldown": 3, "min_lr": 0.01},
    {"mode": "min", "threshold": 0.05, "threshold_mode": "abs", "patience": 1, "cooldown": 1},
    {"mode": "min", "threshold": 0.1, "threshold_mode": "rel", "patience": 2},
    {"factor": 0.9, "patience": 1, "eps": 0.002},
    {"mode": "max", "patience": 2, "cooldown": 2},
    {"mode": "max", "threshold": 0.01, "threshold_mode": "abs", "patience": 1, "factor": 0.3},
]


@pytest.mark.parametrize("settings", PLATEAU_SETTINGS, ids=lambda s: json.dumps(s))
def test_plateau_matches_torch(settings):
    metrics = plateau_metrics()
    if settings.get("mode") == "max":
        metrics = [-m for m in metrics]
    trainer = make_trainer()
    sched = S.ReduceLROnPlateau(trainer, **settings)
    got = gm_rates(sched, trainer, len(metrics), metrics)
    expected = torch_rates(
        lambda o: tls.ReduceLROnPlateau(o, **settings), len(metrics), metrics=metrics
    )
    assert_rates_equal(got, expected)
    assert len(set(got.tolist())) > 2  # the sequence really reduces, more than once


def test_plateau_counters_match_torch_step_by_step():
    metrics = plateau_metrics(60)
    settings = {"factor": 0.5, "patience": 2, "cooldown": 2, "threshold": 0.01}
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=BASE_LR)
    ref = tls.ReduceLROnPlateau(opt, **settings)
    sched = S.ReduceLROnPlateau(make_trainer(), **settings)
    for i, value in enumerate(metrics):
        value = np.float32(value) if i % 2 else value  # NumPy scalars work too
        opt.step()
        ref.step(value)
        sched.step(value)
        assert sched.best == ref.best
        assert sched.num_bad_epochs == ref.num_bad_epochs
        assert sched.cooldown_counter == ref.cooldown_counter


def test_plateau_needs_the_metric():
    sched = S.ReduceLROnPlateau(make_trainer())
    assert sched.requires_metric and not S.StepLR(step_size=1).requires_metric
    with pytest.raises(ValueError, match=r"needs the monitored metric.*got None"):
        sched.step()
    with pytest.raises(TypeError, match="metric must be a number, got 'low'"):
        sched.step("low")
    with pytest.raises(TypeError, match="metric must be a number"):
        sched.step(np.array([1.0, 2.0]))
    assert sched.last_epoch == 0


# -- LinearWarmup ------------------------------------------------------------------------------
WARMUP_INNER = {
    "step": (lambda: S.StepLR(step_size=3, gamma=0.5), lambda o: tls.StepLR(o, 3, 0.5), 60),
    "multistep": (
        lambda: S.MultiStepLR(milestones=[4, 12], gamma=0.2),
        lambda o: tls.MultiStepLR(o, [4, 12], 0.2),
        40,
    ),
    "exponential": (
        lambda: S.ExponentialLR(gamma=0.97),
        lambda o: tls.ExponentialLR(o, 0.97),
        80,
    ),
    "cosine": (
        lambda: S.CosineAnnealingLR(T_max=40, eta_min=1e-3),
        lambda o: tls.CosineAnnealingLR(o, T_max=40, eta_min=1e-3),
        120,
    ),
    "constant_lr": (
        lambda: S.ConstantLR(factor=0.5, total_iters=4),
        lambda o: tls.ConstantLR(o, factor=0.5, total_iters=4),
        30,
    ),
    "one_cycle": (
        lambda: S.OneCycleLR(max_lr=0.4, total_steps=60),
        lambda o: tls.OneCycleLR(o, max_lr=0.4, total_steps=60, cycle_momentum=False),
        60,
    ),
}


@pytest.mark.parametrize("inner", list(WARMUP_INNER))
@pytest.mark.parametrize(("warmup_steps", "start_factor"), [(5, 1.0 / 3), (1, 0.1), (8, 0.01)])
def test_warmup_matches_torch_sequential_lr(inner, warmup_steps, start_factor):
    make_gm, make_torch, inner_steps = WARMUP_INNER[inner]
    steps = warmup_steps + inner_steps
    trainer = make_trainer()
    sched = S.LinearWarmup(make_gm(), warmup_steps, start_factor, trainer=trainer)

    def torch_sequential(opt):
        warm = tls.LinearLR(
            opt, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps
        )
        return tls.SequentialLR(opt, [warm, make_torch(opt)], milestones=[warmup_steps])

    assert_rates_equal(gm_rates(sched, trainer, steps), torch_rates(torch_sequential, steps))


def test_warmup_from_zero_follows_the_formula():
    trainer = make_trainer()
    sched = S.LinearWarmup(S.Constant(), warmup_steps=4, start_factor=0.0, trainer=trainer)
    expected = [0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    assert_rates_equal(gm_rates(sched, trainer, 6), np.array(expected))


def test_warmup_wrapping_plateau():
    warmup_steps, metrics = 6, plateau_metrics(80)
    settings = {"factor": 0.5, "patience": 2, "cooldown": 1}
    trainer = make_trainer()
    sched = S.LinearWarmup(S.ReduceLROnPlateau(**settings), warmup_steps, 0.2, trainer=trainer)
    assert sched.requires_metric
    got = gm_rates(sched, trainer, len(metrics), metrics)
    # Reference: LinearLR during the warmup, then a plateau scheduler that starts at
    # BASE_LR and sees the metrics measured after the warmup (from step warmup_steps + 1).
    warm = torch_rates(
        lambda o: tls.LinearLR(o, start_factor=0.2, total_iters=warmup_steps), warmup_steps - 1
    )
    plateau = torch_rates(
        lambda o: tls.ReduceLROnPlateau(o, **settings),
        len(metrics) - warmup_steps,
        metrics=metrics[warmup_steps:],
    )
    assert_rates_equal(got, np.concatenate([warm, plateau]))
    with pytest.raises(ValueError, match="needs the monitored metric"):
        sched.step()


def test_warmup_interval_comes_from_the_wrapped_scheduler():
    assert S.LinearWarmup(S.OneCycleLR(max_lr=1.0, total_steps=10), 2).interval == "batch"
    assert S.LinearWarmup(S.StepLR(step_size=2), 2, interval="epoch").interval == "epoch"
    with pytest.raises(ValueError, match="interval='batch' differs"):
        S.LinearWarmup(S.StepLR(step_size=2), 2, interval="batch")


# -- the rate reaches the weight update --------------------------------------------------------
def test_scheduled_rate_reaches_the_weight_update():
    net, model = mlp_pair([6, 3], seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1), batch_size=8)
    sched = S.StepLR(trainer, step_size=1, gamma=0.1)
    torch_opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch_sched = tls.StepLR(torch_opt, step_size=1, gamma=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = np.random.default_rng(0)
    for epoch in range(3):
        x = gen.standard_normal((8, 6)).astype(np.float32)
        y = gen.integers(0, 3, size=8).astype(np.int32)
        if epoch > 0:
            assert sched.step() == pytest.approx(0.1 * 0.1**epoch, rel=1e-12)
            torch_sched.step()
        before = model.get_weights()
        torch_opt.zero_grad()
        loss_fn(net(t(x)), t(y)).backward()
        grads = {
            "dense_0.weight": net[0].weight.grad.numpy().copy(),
            "dense_0.bias": net[0].bias.grad.numpy().copy(),
        }
        torch_opt.step()
        trainer.train_batch(x, y)
        after = model.get_weights()
        lr = 0.1 * 0.1**epoch
        for name, grad in grads.items():
            delta = before[name] - after[name]
            # The update is lr * grad at the scheduled rate, as torch's step; atol covers
            # float32 rounding of the weights (about 3e-8 at their magnitude).
            np.testing.assert_allclose(delta, lr * grad, rtol=1e-3, atol=1e-7, err_msg=name)
            if epoch > 0:  # and not the update at the constructor's rate
                assert not np.allclose(delta, 0.1 * grad, rtol=0.5), name
        np.testing.assert_allclose(
            after["dense_0.weight"], net[0].weight.detach().numpy(), rtol=1e-6, atol=1e-7
        )


# -- state and config --------------------------------------------------------------------------
ROUND_TRIP = {
    "constant": (lambda: S.Constant(lr=0.02), None),
    "constant_lr": (lambda: S.ConstantLR(factor=0.5, total_iters=9), None),
    "step": (lambda: S.StepLR(step_size=4, gamma=0.5), None),
    "multistep": (lambda: S.MultiStepLR(milestones=[3, 9, 14], gamma=0.3), None),
    "exponential": (lambda: S.ExponentialLR(gamma=0.9), None),
    "cosine": (lambda: S.CosineAnnealingLR(T_max=9, eta_min=0.001), None),
    "one_cycle": (lambda: S.OneCycleLR(max_lr=0.3, epochs=3, steps_per_epoch=10), None),
    "plateau": (
        lambda: S.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2, mode="max"),
        [-m for m in plateau_metrics(30)],
    ),
    "warmup_cosine": (lambda: S.LinearWarmup(S.CosineAnnealingLR(T_max=20), 6, 0.1), None),
    "warmup_plateau": (
        lambda: S.LinearWarmup(S.ReduceLROnPlateau(patience=1, cooldown=1), 4, 0.5),
        plateau_metrics(30),
    ),
}


def run_steps(sched, count, metrics, start):
    return [sched.step(None if metrics is None else metrics[start + i]) for i in range(count)]


@pytest.mark.parametrize("case", list(ROUND_TRIP))
@pytest.mark.parametrize("split", [0, 5, 12])
@pytest.mark.parametrize("attach_first", [True, False])
def test_state_round_trip_continues_identically(case, split, attach_first):
    make, metrics = ROUND_TRIP[case]
    total = 30
    original = make().attach(make_trainer())
    run_steps(original, split, metrics, 0)
    config = json.loads(json.dumps(original.get_config(), allow_nan=False))
    state = json.loads(json.dumps(original.state_dict(), allow_nan=False))

    trainer = make_trainer(lr=0.5)  # a different rate: the restored state must win
    restored = S.from_config(config)
    if attach_first:
        restored.attach(trainer)
        restored.load_state_dict(state)
    else:
        restored.load_state_dict(state)
        restored.attach(trainer)
    assert restored.last_lr == original.last_lr and restored.last_epoch == split
    assert trainer.learning_rate == np.float32(original.last_lr)
    expected = run_steps(original, total - split, metrics, split)
    assert run_steps(restored, total - split, metrics, split) == expected
    assert restored.state_dict() == original.state_dict()


@pytest.mark.parametrize("case", list(ROUND_TRIP))
def test_from_config_rebuilds_an_equal_scheduler(case):
    make, metrics = ROUND_TRIP[case]
    original = make()
    config = original.get_config()
    rebuilt = S.from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(original)
    assert rebuilt.get_config() == config
    assert repr(rebuilt) == repr(original)
    a, b = original.attach(make_trainer()), rebuilt.attach(make_trainer())
    assert run_steps(a, 25, metrics, 0) == run_steps(b, 25, metrics, 0)


def test_config_and_state_contents():
    sched = S.StepLR(step_size=2, gamma=0.5)
    assert sched.get_config() == {
        "class_name": "StepLR",
        "config": {"step_size": 2, "gamma": 0.5, "interval": "epoch"},
    }
    plateau = S.ReduceLROnPlateau(make_trainer())
    state = plateau.state_dict()
    assert state["best"] == "inf" and state["last_lr"] == BASE_LR
    json.dumps(state, allow_nan=False)
    warm = S.LinearWarmup(S.StepLR(step_size=2), 3).get_config()
    assert warm["config"]["scheduler"] == {
        "class_name": "StepLR",
        "config": {"step_size": 2, "gamma": 0.1, "interval": "epoch"},
    }


def test_bad_states_and_configs_are_rejected():
    sched = S.StepLR(make_trainer(), step_size=2)
    good = sched.state_dict()
    with pytest.raises(ValueError, match="state is of 'ExponentialLR', expected 'StepLR'"):
        sched.load_state_dict({**good, "class_name": "ExponentialLR"})
    with pytest.raises(ValueError, match="missing key 'last_lr'"):
        sched.load_state_dict({k: v for k, v in good.items() if k != "last_lr"})
    with pytest.raises(TypeError, match="last_epoch must be an integer, got 1.5"):
        sched.load_state_dict({**good, "last_epoch": 1.5})
    with pytest.raises(ValueError, match="missing key 'num_bad_epochs'"):
        plateau = S.ReduceLROnPlateau(make_trainer())
        state = plateau.state_dict()
        del state["num_bad_epochs"]
        plateau.load_state_dict(state)
    with pytest.raises(ValueError, match="unknown scheduler class_name 'NoSuchLR'"):
        S.from_config({"class_name": "NoSuchLR", "config": {}})
    with pytest.raises(ValueError, match="bad config for StepLR"):
        S.from_config({"class_name": "StepLR", "config": {"step_size": 2, "gammma": 0.1}})
    with pytest.raises(TypeError, match="must be a dict"):
        S.from_config(["StepLR"])
    assert sched.state_dict() == good  # failed loads changed nothing
