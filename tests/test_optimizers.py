"""Every graph optimizer and gradient clipping against torch.optim / torch.nn.utils.

Both sides start from the same weights and see the same batches; after 50 steps the
weights must agree. Models use tanh, so no unit sits on a ReLU kink where rounding alone
could flip its gradient. L-BFGS has its own file, test_optimizers_lbfgs.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from helpers import assert_weights_match, mlp_pair, t

SIZES = [12, 24, 16, 4]
STEPS = 50
BATCH = 16

# name -> (gometal optimizer, torch optimizer on params); clipping is read from the
# gometal optimizer and applied on the torch side with torch.nn.utils.
CASES = {
    "sgd_dampening": (
        lambda: gm.optim.SGD(0.05, momentum=0.9, dampening=0.3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3),
    ),
    "sgd_dampening_weight_decay": (
        lambda: gm.optim.SGD(0.05, momentum=0.5, dampening=0.5, weight_decay=0.02),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.5, weight_decay=0.02),
    ),
    "sgd_nesterov_weight_decay": (
        lambda: gm.optim.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "sgd_maximize": (
        lambda: gm.optim.SGD(0.01, momentum=0.5, maximize=True),
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5, maximize=True),
    ),
    "adam_amsgrad_weight_decay": (
        lambda: gm.optim.Adam(5e-3, amsgrad=True, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=5e-3, amsgrad=True, weight_decay=0.01),
    ),
    "adam_maximize": (
        lambda: gm.optim.Adam(1e-3, maximize=True),
        lambda p: torch.optim.Adam(p, lr=1e-3, maximize=True),
    ),
    "adamw": (
        lambda: gm.optim.AdamW(5e-3),
        lambda p: torch.optim.AdamW(p, lr=5e-3),
    ),
    "adamw_strong_decay_betas": (
        lambda: gm.optim.AdamW(5e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.5),
        lambda p: torch.optim.AdamW(p, lr=5e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.5),
    ),
    "adamw_amsgrad": (
        lambda: gm.optim.AdamW(5e-3, weight_decay=0.1, amsgrad=True),
        lambda p: torch.optim.AdamW(p, lr=5e-3, weight_decay=0.1, amsgrad=True),
    ),
    "adamw_no_decay": (
        lambda: gm.optim.AdamW(5e-3, weight_decay=0.0),
        lambda p: torch.optim.AdamW(p, lr=5e-3, weight_decay=0.0),
    ),
    "rmsprop": (
        lambda: gm.optim.RMSprop(1e-3),
        lambda p: torch.optim.RMSprop(p, lr=1e-3),
    ),
    "rmsprop_momentum_weight_decay": (
        lambda: gm.optim.RMSprop(1e-3, alpha=0.9, momentum=0.9, weight_decay=0.01),
        lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, momentum=0.9, weight_decay=0.01),
    ),
    "rmsprop_centered": (
        lambda: gm.optim.RMSprop(1e-3, centered=True, eps=1e-6),
        lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True, eps=1e-6),
    ),
    "rmsprop_centered_momentum": (
        lambda: gm.optim.RMSprop(5e-4, alpha=0.95, centered=True, momentum=0.5),
        lambda p: torch.optim.RMSprop(p, lr=5e-4, alpha=0.95, centered=True, momentum=0.5),
    ),
    "adagrad": (
        lambda: gm.optim.Adagrad(0.05),
        lambda p: torch.optim.Adagrad(p, lr=0.05),
    ),
    "adagrad_lr_decay_accumulator_weight_decay": (
        lambda: gm.optim.Adagrad(
            0.05, lr_decay=0.02, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-8
        ),
        lambda p: torch.optim.Adagrad(
            p, lr=0.05, lr_decay=0.02, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-8
        ),
    ),
    "adadelta": (
        lambda: gm.optim.Adadelta(),
        lambda p: torch.optim.Adadelta(p),
    ),
    "adadelta_rho_eps_weight_decay": (
        lambda: gm.optim.Adadelta(0.5, rho=0.95, eps=1e-5, weight_decay=0.01),
        lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.95, eps=1e-5, weight_decay=0.01),
    ),
    "nadam": (
        lambda: gm.optim.NAdam(5e-3),
        lambda p: torch.optim.NAdam(p, lr=5e-3),
    ),
    "nadam_weight_decay_momentum_decay": (
        lambda: gm.optim.NAdam(5e-3, weight_decay=0.01, momentum_decay=0.05),
        lambda p: torch.optim.NAdam(p, lr=5e-3, weight_decay=0.01, momentum_decay=0.05),
    ),
    "nadam_decoupled": (
        lambda: gm.optim.NAdam(5e-3, weight_decay=0.2, decoupled_weight_decay=True),
        lambda p: torch.optim.NAdam(p, lr=5e-3, weight_decay=0.2, decoupled_weight_decay=True),
    ),
    # Clipping: the thresholds sit below the gradients' size so that clipping acts.
    "sgd_clip_norm": (
        lambda: gm.optim.SGD(0.1, momentum=0.9, clip_grad_norm=0.3),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ),
    "adam_clip_value": (
        lambda: gm.optim.Adam(5e-3, clip_grad_value=0.02),
        lambda p: torch.optim.Adam(p, lr=5e-3),
    ),
    "adamw_clip_norm": (
        lambda: gm.optim.AdamW(5e-3, clip_grad_norm=0.2),
        lambda p: torch.optim.AdamW(p, lr=5e-3),
    ),
    "rmsprop_clip_norm_and_value": (
        lambda: gm.optim.RMSprop(1e-3, clip_grad_norm=0.5, clip_grad_value=0.03),
        lambda p: torch.optim.RMSprop(p, lr=1e-3),
    ),
    "adagrad_clip_value": (
        lambda: gm.optim.Adagrad(0.05, clip_grad_value=0.01),
        lambda p: torch.optim.Adagrad(p, lr=0.05),
    ),
    "adadelta_clip_norm": (
        lambda: gm.optim.Adadelta(clip_grad_norm=0.2),
        lambda p: torch.optim.Adadelta(p),
    ),
    "nadam_clip_value": (
        lambda: gm.optim.NAdam(5e-3, clip_grad_value=0.02),
        lambda p: torch.optim.NAdam(p, lr=5e-3),
    ),
}


def _batches(steps=STEPS, batch=BATCH, features=SIZES[0], classes=SIZES[-1], seed=0):
    gen = np.random.default_rng(seed)
    teacher = gen.standard_normal((features, classes))
    out = []
    for _ in range(steps):
        x = gen.standard_normal((batch, features)).astype(np.float32)
        y = np.argmax(x @ teacher + 0.5 * gen.standard_normal((batch, classes)), axis=1)
        out.append((x, y.astype(np.int32)))
    return out


class _TorchTwin:
    """Runs torch's step with the same clipping the gometal optimizer was given."""

    def __init__(self, net, optimizer, clip_norm, clip_value):
        self.net, self.optimizer = net, optimizer
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.norm_clipped = self.value_clipped = False

    def step(self, x, y):
        self.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(self.net(t(x)), t(y))
        loss.backward()
        params = list(self.net.parameters())
        if self.clip_norm is not None:
            total = nn.utils.clip_grad_norm_(params, self.clip_norm)
            self.norm_clipped |= bool(total > self.clip_norm)
        if self.clip_value is not None:
            largest = max(float(p.grad.abs().max()) for p in params)
            self.value_clipped |= largest > self.clip_value
            nn.utils.clip_grad_value_(params, self.clip_value)
        self.optimizer.step()
        return loss.item()


def _train_both(case, batches, seed=0, learning_rates=None):
    make_gm, make_torch = CASES[case]
    net, model = mlp_pair(SIZES, "tanh", seed=seed)
    optimizer = make_gm()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=BATCH)
    twin = _TorchTwin(
        net, make_torch(net.parameters()), optimizer.clip_grad_norm, optimizer.clip_grad_value
    )
    gm_losses, torch_losses = [], []
    for i, (x, y) in enumerate(batches):
        if learning_rates is not None:
            trainer.set_learning_rate(learning_rates[i])
            for group in twin.optimizer.param_groups:
                group["lr"] = learning_rates[i]
        gm_losses.append(trainer.train_batch(x, y).loss)
        torch_losses.append(twin.step(x, y))
    return model, net, twin, np.array(gm_losses), np.array(torch_losses)


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_torch_over_50_steps(case):
    model, net, twin, gm_losses, torch_losses = _train_both(case, _batches())
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=1e-4)
    assert_weights_match(model, net, rtol=1e-4, atol=1e-5)
    # The weights must have moved, or agreeing on them proves little.
    start = mlp_pair(SIZES, "tanh", seed=0)[1].get_weights()
    moved = max(np.abs(value - start[name]).max() for name, value in model.get_weights().items())
    assert moved > 1e-2
    if twin.clip_norm is not None:
        assert twin.norm_clipped, "the norm bound never acted; lower it"
    if twin.clip_value is not None:
        assert twin.value_clipped, "the value bound never acted; lower it"


LR_CASES = [
    "sgd_dampening",
    "adam_amsgrad_weight_decay",
    "adamw",
    "adamw_no_decay",
    "rmsprop_centered_momentum",
    "adagrad_lr_decay_accumulator_weight_decay",
    "adadelta",
    "nadam_decoupled",
    "sgd_clip_norm",
]


@pytest.mark.parametrize("case", LR_CASES)
def test_learning_rate_changes_between_steps_match_torch(case):
    # A schedule that drops and rises: each optimizer must read the runtime rate, also
    # where it enters derived quantities (decoupled decay, Adagrad's decayed rate).
    base = CASES[case][0]().lr
    rates = [base * factor for factor in (1.0, 1.0, 0.5, 0.25, 2.0, 0.1, 1.5, 0.0, 1.0, 3.0)]
    schedule = [rates[i // 3] for i in range(30)]
    model, net, _, gm_losses, torch_losses = _train_both(
        case, _batches(steps=30, seed=4), seed=4, learning_rates=schedule
    )
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=1e-4)
    assert_weights_match(model, net, rtol=1e-4, atol=1e-5)


def test_sgd_dampening_first_step_is_undamped():
    # One step from a fresh buffer: torch copies the gradient, so dampening has no effect
    # yet, and the update equals plain SGD's.
    batches = _batches(steps=1, seed=2)
    weights = []
    for optimizer in (gm.optim.SGD(0.1, momentum=0.9, dampening=0.9), gm.optim.SGD(0.1)):
        _, model = mlp_pair(SIZES, "tanh", seed=2)
        trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=BATCH)
        trainer.train_batch(*batches[0])
        weights.append(model.get_weights())
    for name, value in weights[0].items():
        np.testing.assert_allclose(value, weights[1][name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_clip_by_norm_matches_formula():
    # The scale is min(1, max_norm / (norm + 1e-6)) over all gradients as one vector.
    gen = np.random.default_rng(3)
    arrays = {"a": gen.standard_normal((3, 4)), "b": gen.standard_normal(5) * 3}
    g = gm._core.Graph()
    nodes = {name: g.constant(value.astype(np.float32)) for name, value in arrays.items()}
    clipped = gm.optim.clip_gradients(g, nodes, max_norm=2.0, max_value=None)
    norm = gm.optim.global_norm(g, nodes)
    engine = gm._core.Engine(g)
    engine.define("f", inputs=[], outputs=[norm, *clipped.values()], effects=[])
    got_norm, got_a, got_b = engine.run("f", [])
    expected_norm = np.sqrt(sum((value**2).sum() for value in arrays.values()))
    scale = min(1.0, 2.0 / (expected_norm + 1e-6))
    assert got_norm == pytest.approx(expected_norm, rel=1e-6)
    np.testing.assert_allclose(got_a, arrays["a"] * scale, rtol=1e-6)
    np.testing.assert_allclose(got_b, arrays["b"] * scale, rtol=1e-6)


def test_clip_by_value_matches_numpy_clip():
    gen = np.random.default_rng(4)
    value = gen.standard_normal((6, 5)).astype(np.float32)
    g = gm._core.Graph()
    node = g.constant(value)
    (clipped,) = gm.optim.clip_by_value(g, {"w": node}, 0.5).values()
    engine = gm._core.Engine(g)
    engine.define("f", inputs=[], outputs=[clipped], effects=[])
    (got,) = engine.run("f", [])
    np.testing.assert_array_equal(got, np.clip(value, -0.5, 0.5))


def test_adam_and_adamw_with_or_without_decay_run_the_fused_update():
    model = gm.ModelBuilder((12,)).dense(8).tanh().dense(4).build(seed=0)
    optimizers = (gm.optim.Adam(), gm.optim.AdamW(weight_decay=0.0), gm.optim.AdamW())
    for optimizer in optimizers:
        trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=8)
        plan = trainer._engine.describe("train", 8)
        assert sum(line.startswith("adam_update") for line in plan) == 4, (optimizer, plan)
    # AMSGrad's running maximum is no part of the fused kernel.
    amsgrad = gm.optim.AdamW(amsgrad=True)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=amsgrad, batch_size=8)
    assert not any(line.startswith("adam_update") for line in trainer._engine.describe("train", 8))


# -- names, defaults and configurations -------------------------------------------------------

TORCH_CLASSES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "nadam": torch.optim.NAdam,
    "lbfgs": torch.optim.LBFGS,
}


@pytest.mark.parametrize("name", list(TORCH_CLASSES))
def test_get_by_name_uses_torch_defaults(name):
    optimizer = gm.optim.get(name)
    assert optimizer.name == name
    assert gm.optim.get(name.upper()).get_config() == optimizer.get_config()
    config = optimizer.get_config()["config"]
    defaults = TORCH_CLASSES[name]([nn.Parameter(torch.zeros(2))]).defaults
    shared = set(config) & set(defaults)
    assert {"lr"} < shared
    for key in shared:
        expected = defaults[key]
        if key == "lr" and name == "sgd":
            expected = 0.01  # gometal's historical default for "sgd" by name
        if isinstance(expected, tuple):
            expected = list(expected)
        assert config[key] == expected, key


def test_available_lists_every_name():
    assert sorted(gm.optim.available()) == sorted(TORCH_CLASSES)


@pytest.mark.parametrize("case", list(CASES))
def test_config_round_trips_through_json(case):
    optimizer = CASES[case][0]()
    config = optimizer.get_config()
    rebuilt = gm.optim.from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(optimizer)
    assert rebuilt.get_config() == config
    assert rebuilt.slot_names == optimizer.slot_names


def test_lbfgs_config_round_trips():
    optimizer = gm.optim.LBFGS(lr=0.5, max_iter=7, history_size=4, line_search_fn="strong_wolfe")
    config = json.loads(json.dumps(optimizer.get_config()))
    assert config["config"]["max_eval"] == 7 * 5 // 4
    rebuilt = gm.optim.from_config(config)
    assert isinstance(rebuilt, gm.optim.LBFGS)
    assert rebuilt.get_config() == optimizer.get_config()


@pytest.mark.parametrize(
    ("config", "error", "pattern"),
    [
        ({"class_name": "Adamax", "config": {}}, ValueError, r"Adamax.*valid.*AdamW"),
        ({"class_name": "SGD", "config": {"lr": 0.1, "betas": [0.9, 0.9]}}, ValueError, "betas"),
        ({"class_name": "SGD"}, TypeError, "config"),
        ("adam", TypeError, "config"),
    ],
)
def test_from_config_rejects_bad_input(config, error, pattern):
    with pytest.raises(error, match=pattern):
        gm.optim.from_config(config)


# -- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "parts"),
    [
        (lambda: gm.optim.SGD(0.1, dampening=1.5), ValueError, ["dampening", "1.5"]),
        (
            lambda: gm.optim.SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True),
            ValueError,
            ["(?i)nesterov", "dampening"],
        ),
        (lambda: gm.optim.SGD(0.1, nesterov=True), ValueError, ["(?i)nesterov", "momentum"]),
        (lambda: gm.optim.SGD(0.1, nesterov="yes"), TypeError, ["nesterov", "yes"]),
        (lambda: gm.optim.SGD(0.1, momentum="0.9"), TypeError, ["momentum", "0.9"]),
        (lambda: gm.optim.Adam(betas=(0.9,)), ValueError, ["betas", r"0\.9"]),
        (lambda: gm.optim.Adam(betas=(0.9, 1.0)), ValueError, [r"betas\[1\]", "1.0"]),
        (lambda: gm.optim.Adam(amsgrad=1), TypeError, ["amsgrad"]),
        (lambda: gm.optim.AdamW(weight_decay=-0.1), ValueError, ["weight_decay", "-0.1"]),
        (lambda: gm.optim.AdamW(lr=float("nan")), ValueError, ["(?i)learning rate", "nan"]),
        (lambda: gm.optim.RMSprop(alpha=1.5), ValueError, ["alpha", "1.5"]),
        (lambda: gm.optim.RMSprop(momentum=-0.5), ValueError, ["momentum", "-0.5"]),
        (lambda: gm.optim.RMSprop(eps=float("inf")), ValueError, ["eps", "inf"]),
        (lambda: gm.optim.Adagrad(lr_decay=-1), ValueError, ["lr_decay", "-1"]),
        (
            lambda: gm.optim.Adagrad(initial_accumulator_value=-0.1),
            ValueError,
            ["initial_accumulator_value", "-0.1"],
        ),
        (lambda: gm.optim.Adadelta(rho=1.1), ValueError, ["rho", "1.1"]),
        (lambda: gm.optim.Adadelta(lr=-1.0), ValueError, ["(?i)learning rate", "-1"]),
        (lambda: gm.optim.NAdam(momentum_decay=-0.004), ValueError, ["momentum_decay", "-0.004"]),
        (lambda: gm.optim.NAdam(betas=(1.2, 0.999)), ValueError, [r"betas\[0\]", "1.2"]),
        (lambda: gm.optim.SGD(0.1, clip_grad_norm=0.0), ValueError, ["clip_grad_norm", "0.0"]),
        (lambda: gm.optim.Adam(clip_grad_norm=-1.0), ValueError, ["clip_grad_norm", "-1.0"]),
        (
            lambda: gm.optim.Adam(clip_grad_value=float("nan")),
            ValueError,
            ["clip_grad_value", "nan"],
        ),
        (lambda: gm.optim.RMSprop(clip_grad_value="big"), TypeError, ["clip_grad_value", "big"]),
        (lambda: gm.optim.LBFGS(max_iter=0), ValueError, ["max_iter", "0"]),
        (lambda: gm.optim.LBFGS(max_iter=2.5), TypeError, ["max_iter", "2.5"]),
        (lambda: gm.optim.LBFGS(max_eval=0), ValueError, ["max_eval", "0"]),
        (lambda: gm.optim.LBFGS(history_size=0), ValueError, ["history_size", "0"]),
        (lambda: gm.optim.LBFGS(tolerance_grad=-1.0), ValueError, ["tolerance_grad", "-1.0"]),
        (
            lambda: gm.optim.LBFGS(line_search_fn="armijo"),
            ValueError,
            ["line_search_fn", "strong_wolfe", "armijo"],
        ),
        (lambda: gm.optim.LBFGS(clip_grad_norm=1.0), TypeError, ["clip_grad_norm"]),
    ],
)
def test_bad_arguments_raise_clear_errors(make, error, parts):
    with pytest.raises(error) as err:
        make()
    for part in parts:
        assert re.search(part, str(err.value)), f"{part!r} not in {err.value}"


def test_unknown_name_lists_every_optimizer():
    with pytest.raises(ValueError) as err:
        gm.optim.get("adamax")
    for name in TORCH_CLASSES:
        assert name in str(err.value)
    with pytest.raises(TypeError, match="optimizer"):
        gm.optim.get(3)
