"""L-BFGS (host-driven) against torch.optim.LBFGS, with and without strong-Wolfe search.

L-BFGS over many iterations amplifies rounding: two torch runs whose weights differ by
one float32 ulp part visibly within a few steps. So the algorithm itself is compared in
float64 (gometal's recursion and line search driving a torch float64 model, against
torch's optimizer on the twin model), and the trainer end to end in float32 over a few
steps of a well-conditioned problem.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from helpers import assert_weights_match, mlp_pair

SIZES = [6, 10, 3]
BATCH = 32


class _TorchFloat64Engine:
    """Stands in for the engine: a float64 torch model evaluated on (x, y)."""

    def __init__(self, net):
        self.net = net
        self.params = dict(net.named_parameters())

    def get_variable(self, name):
        return self.params[name].detach().numpy().copy()

    def set_variable(self, name, value):
        with torch.no_grad():
            self.params[name].copy_(torch.from_numpy(np.array(value, np.float64)))

    def run(self, function, inputs):
        assert function == gm.optim.HOST_GRADIENT_FUNCTION
        self.net.zero_grad()
        loss = _mse(self.net, *inputs)
        loss.backward()
        grads = [p.grad.numpy().copy() for p in self.params.values()]
        return [loss.item(), 0.0, *grads]


def _mse(net, x, y):
    dtype = next(net.parameters()).dtype
    return nn.functional.mse_loss(net(torch.from_numpy(x).to(dtype)), torch.from_numpy(y).to(dtype))


def _torch_lbfgs_step(net, optimizer, x, y):
    def closure():
        optimizer.zero_grad()
        loss = _mse(net, x, y)
        loss.backward()
        return loss

    return optimizer.step(closure).detach().item()


def _batches(steps, seed, noisy=False):
    gen = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        x = gen.standard_normal((BATCH, SIZES[0])).astype(np.float32)
        if noisy:  # targets no small network fits: a rugged problem for the line search
            y = gen.standard_normal((BATCH, SIZES[-1])).astype(np.float32)
        else:
            y = np.tanh(0.8 * x[:, : SIZES[-1]]).astype(np.float32)
        out.append((x, y))
    return out


def _func_evals(optimizer):
    return optimizer.state[optimizer.param_groups[0]["params"][0]]["func_evals"]


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"history_size": 3, "max_iter": 12},
        {"line_search_fn": "strong_wolfe"},
        {"line_search_fn": "strong_wolfe", "history_size": 2, "max_iter": 15, "max_eval": 18},
        {"line_search_fn": "strong_wolfe", "lr": 3.0, "tolerance_change": 1e-5},
        # A small first step makes the search extrapolate; a huge one makes it zoom back.
        {"line_search_fn": "strong_wolfe", "lr": 0.01},
        {"line_search_fn": "strong_wolfe", "lr": 200.0},
        {"line_search_fn": "strong_wolfe", "lr": 0.001, "max_iter": 3, "max_eval": 5},
        {"line_search_fn": "strong_wolfe", "lr": 200.0, "tolerance_change": 1e-3},
        {"tolerance_change": 1e-3},
        {"lr": 1e-4, "tolerance_change": 1e-5},
    ],
    ids=[
        "fixed_step",
        "short_history",
        "strong_wolfe",
        "wolfe_short_history",
        "wolfe_big_lr",
        "wolfe_extrapolate",
        "wolfe_zoom",
        "wolfe_out_of_evaluations",
        "wolfe_coarse_tolerance",
        "loss_change_tolerance",
        "step_change_tolerance",
    ],
)
@pytest.mark.parametrize("same_batch", [True, False], ids=["one_batch", "new_batches"])
def test_lbfgs_algorithm_matches_torch_in_float64(settings, same_batch):
    batches = _batches(4, seed=1, noisy=True)
    evaluations = _compare_in_float64(settings, [batches[0]] * 4 if same_batch else batches)
    assert evaluations > 4  # several evaluations per step, so it really iterated


def test_lbfgs_line_search_keeps_its_own_tolerance_as_torch():
    # torch's strong-Wolfe search stops zooming on a 1e-9 bracket whatever the
    # optimizer's tolerance_change; a coarse tolerance_change must not shorten the search.
    settings = {"line_search_fn": "strong_wolfe", "lr": 100.0, "tolerance_change": 1.0}
    assert _compare_in_float64(settings, _batches(4, seed=1, noisy=True)) > 4


def _compare_in_float64(settings, batches):
    """Steps gometal's L-BFGS and torch's on float64 twins; returns the evaluation count."""
    net, _ = mlp_pair(SIZES, "tanh", seed=0)
    net = net.double()
    twin = copy.deepcopy(net)
    engine = _TorchFloat64Engine(twin)
    runner = gm.optim.LBFGS(**settings).bind(engine, list(engine.params))
    reference = torch.optim.LBFGS(net.parameters(), **settings)
    for x, y in batches:
        loss, _ = runner.step([x, y], lr=settings.get("lr", 1.0))
        expected = _torch_lbfgs_step(net, reference, x, y)
        assert loss == pytest.approx(expected, rel=1e-8)
        assert runner.memory.evaluations == _func_evals(reference)
        for ours, theirs in zip(twin.parameters(), net.parameters()):
            np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), atol=1e-6)
    return runner.memory.evaluations


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize(
    ("max_iter", "history_size", "steps"), [(5, 3, 4), (10, 4, 3), (20, 100, 2)]
)
def test_lbfgs_trainer_matches_torch(line_search_fn, max_iter, history_size, steps):
    net, model = mlp_pair(SIZES, "tanh", seed=0)
    settings = {
        "line_search_fn": line_search_fn,
        "max_iter": max_iter,
        "history_size": history_size,
    }
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.LBFGS(**settings), batch_size=BATCH)
    reference = torch.optim.LBFGS(net.parameters(), **settings)
    for i, (x, y) in enumerate(_batches(steps, seed=0)):
        result = trainer.train_batch(x, y)
        expected = _torch_lbfgs_step(net, reference, x, y)
        assert result.loss == pytest.approx(expected, rel=1e-4)
        assert trainer.step == i + 1
        assert_weights_match(model, net, rtol=1e-4, atol=1e-4)
    assert _func_evals(reference) >= steps * max_iter


def test_lbfgs_learning_rate_changes_match_torch():
    net, model = mlp_pair(SIZES, "tanh", seed=3)
    settings = {"max_iter": 4, "history_size": 5}
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.LBFGS(**settings), batch_size=BATCH)
    reference = torch.optim.LBFGS(net.parameters(), **settings)
    for (x, y), lr in zip(_batches(4, seed=3), [1.0, 0.5, 0.1, 0.8]):
        trainer.set_learning_rate(lr)
        reference.param_groups[0]["lr"] = lr
        trainer.train_batch(x, y)
        _torch_lbfgs_step(net, reference, x, y)
        assert_weights_match(model, net, rtol=1e-4, atol=1e-4)


def test_lbfgs_solves_least_squares():
    # A linear model under MSE is a convex quadratic: L-BFGS with the strong-Wolfe search
    # must reach the least-squares solution.
    gen = np.random.default_rng(5)
    x = gen.standard_normal((64, 5)).astype(np.float32)
    y = (x @ gen.standard_normal((5, 2)) + 0.3 + 0.1 * gen.standard_normal((64, 2))).astype(
        np.float32
    )
    model = gm.ModelBuilder((5,)).dense(2).build(seed=0)
    optimizer = gm.optim.LBFGS(line_search_fn="strong_wolfe", max_iter=50)
    trainer = gm.Trainer(model, loss="mse", optimizer=optimizer, batch_size=64)
    for _ in range(3):
        trainer.train_batch(x, y)
    design = np.hstack([x, np.ones((64, 1), np.float32)]).astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    weights = model.get_weights()
    np.testing.assert_allclose(weights["dense_0.weight"], solution[:5].T, atol=1e-4)
    np.testing.assert_allclose(weights["dense_0.bias"], solution[5], atol=1e-4)


def test_lbfgs_reports_loss_and_accuracy_before_the_step():
    gen = np.random.default_rng(6)
    x = gen.standard_normal((40, 8)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1).astype(np.int32)
    model = gm.ModelBuilder((8,)).dense(12).tanh().dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="lbfgs", batch_size=40)
    logits = trainer.predict(x).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = -log_probs[np.arange(40), y].mean()
    expected_accuracy = (logits.argmax(axis=1) == y).mean()
    result = trainer.train_batch(x, y)
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    assert result.accuracy == pytest.approx(expected_accuracy)
    assert trainer.step == 1
    # The step did move the weights and lowered the loss on this batch.
    assert trainer.evaluate(x, y)["loss"] < expected_loss - 0.05


def test_lbfgs_stops_at_once_when_the_gradient_is_small():
    net, model = mlp_pair(SIZES, "tanh", seed=2)
    before = model.get_weights()
    trainer = gm.Trainer(
        model, loss="mse", optimizer=gm.optim.LBFGS(tolerance_grad=1e3), batch_size=BATCH
    )
    reference = torch.optim.LBFGS(net.parameters(), tolerance_grad=1e3)
    x, y = _batches(1, seed=2)[0]
    result = trainer.train_batch(x, y)
    assert result.loss == pytest.approx(_torch_lbfgs_step(net, reference, x, y), rel=1e-5)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])
    assert_weights_match(model, net)
    assert trainer.step == 1


def test_cubic_minimizer_matches_the_parabola_and_cubic_minima():
    from gometal.train.optim.line_search import cubic_minimizer

    # f(x) = (x - 1)^2 through x = 0 and 2: the minimizer is 1.
    assert cubic_minimizer(0.0, 1.0, -2.0, 2.0, 1.0, 2.0) == pytest.approx(1.0)
    # f(x) = x^3 - 3x has its local minimum at 1; from x = 0 and 2, in either order.
    for a, b in ((0.0, 2.0), (2.0, 0.0)):
        f = {0.0: 0.0, 2.0: 2.0}
        df = {0.0: -3.0, 2.0: 9.0}
        assert cubic_minimizer(a, f[a], df[a], b, f[b], df[b]) == pytest.approx(1.0)
    # Clamped to the bounds, and the middle of the bounds without a real minimizer.
    assert cubic_minimizer(0.0, 1.0, -2.0, 2.0, 1.0, 2.0, bounds=(1.5, 3.0)) == 1.5
    assert cubic_minimizer(0.0, 0.0, 1.0, 1.0, 2.0 / 3.0, 1.0, bounds=(0.0, 4.0)) == 2.0
