"""Ops whose behaviour is not a function of their inputs, each checked by a scenario: the
effects (assign, adam_update), check_range, and random_uniform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gometal import _core

from .harness import ScenarioCase

# -- assign ----------------------------------------------------------------------------------


def assign_writes_after_reads_without_recompiling(backend, rng):
    """An SGD step by assign: the loss reads the weight from before the call, the update
    lands after it, and a new learning rate (a runtime scalar) compiles no new plan."""
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    lr = g.scalar("lr", 0.5)
    loss = g.op("sum", [g.op("mul", [x, w], {})], {"axes": [], "keepdims": False})
    (grad,) = g.gradients(loss, [w])
    update = g.op("assign", [w, g.op("sub", [w, g.op("mul", [grad, lr], {})], {})], {})
    eng = _core.Engine(g, seed=0, backend=backend)
    assert "w" in eng.variable_names()
    np.testing.assert_array_equal(eng.get_variable("w"), np.zeros(3, np.float32))
    w0 = np.array([1.0, 2.0, 3.0], np.float32)
    eng.set_variable("w", w0)
    eng.define("step", inputs=[x], outputs=[loss], effects=[update], advance_rng=False)
    v = rng.standard_normal((4, 3)).astype(np.float32)

    value = eng.run("step", [v])[0]
    assert value == pytest.approx(float((v.astype(np.float64) @ w0).sum()), rel=1e-5)
    w1 = w0 - 0.5 * v.sum(0)
    np.testing.assert_allclose(eng.get_variable("w"), w1, rtol=1e-5)
    plans = eng.stats()["plans"]

    assert eng.get_scalar("lr") == pytest.approx(0.5)
    eng.set_scalar("lr", 0.25)
    assert eng.get_scalar("lr") == pytest.approx(0.25)
    eng.run("step", [v])
    np.testing.assert_allclose(eng.get_variable("w"), w1 - 0.25 * v.sum(0), rtol=1e-5)
    stats = eng.stats()
    assert stats["plans"] == plans
    assert stats["steps"] == 2
    # get_variable returns a copy.
    copy = eng.get_variable("w")
    copy[...] = 123.0
    assert not np.any(np.asarray(eng.get_variable("w")) == 123.0)


# -- adam_update -----------------------------------------------------------------------------


def adam_update_matches_torch_adam(weight_decay, decoupled=False):
    """Three steps of adam_update against torch.optim.Adam (weight decay as an L2 term), or
    with ``decoupled_weight_decay`` and the learning rate as an input against
    torch.optim.AdamW (the rate changes between steps, as a scheduler's does)."""

    def check(backend, rng):
        beta1, beta2, eps = 0.8, 0.99, 1e-6
        rates = [0.01, 0.03, 0.02]
        shape = (4, 5)
        g = _core.Graph()
        p, m, v, grad = (g.variable(name, shape) for name in ("p", "m", "v", "g"))
        step_size, bc2_sqrt = g.scalar("step_size", 0.0), g.scalar("bc2_sqrt", 1.0)
        hyper = {"beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay}
        inputs = [p, m, v, grad, step_size, bc2_sqrt]
        if decoupled:
            hyper["decoupled_weight_decay"] = True
            inputs.append(g.scalar("lr", 0.0))
        update = g.op("adam_update", inputs, hyper)
        eng = _core.Engine(g, seed=0, backend=backend)
        eng.define("step", inputs=[], outputs=[], effects=[update], advance_rng=False)

        start = rng.standard_normal(shape).astype(np.float32)
        eng.set_variable("p", start)
        param = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        reference = torch.optim.AdamW if decoupled else torch.optim.Adam
        adam = reference(
            [param], lr=rates[0], betas=(beta1, beta2), eps=eps, weight_decay=weight_decay
        )
        for t, lr in enumerate(rates, start=1):
            adam.param_groups[0]["lr"] = lr
            if decoupled:
                eng.set_scalar("lr", lr)
            gradient = rng.standard_normal(shape).astype(np.float32)
            eng.set_variable("g", gradient)
            eng.set_scalar("step_size", lr / (1 - beta1**t))
            eng.set_scalar("bc2_sqrt", float(np.sqrt(1 - beta2**t)))
            eng.run("step", [])
            param.grad = torch.tensor(gradient, dtype=torch.float64)
            adam.step()
            state = adam.state[param]
            slots = {"p": param, "m": state["exp_avg"], "v": state["exp_avg_sq"]}
            for name, want in slots.items():
                got = eng.get_variable(name)
                message = f"{name} after step {t}"
                np.testing.assert_allclose(got, want.detach().numpy(), 1e-5, 1e-7, err_msg=message)

    return check


def adam_update_kernel_matches_its_decomposition(with_flag, decoupled=False):
    """The fused kernel against the registry's decomposition (what a backend without the
    kernel runs): five steps, the flag (loss scaling's all-finite test) off on the third;
    with ``decoupled``, AdamW's form and its learning-rate input before the flag."""

    def check(backend, rng):
        shape = (3, 7)
        flags = [1.0, 1.0, 0.0, 1.0, 1.0] if with_flag else [1.0] * 5
        results = []
        for options in ({}, {"without_kernels": ["adam_update"]}):
            g = _core.Graph()
            p, m, v, grad = (g.variable(name, shape) for name in ("p", "m", "v", "g"))
            step_size, bc2, finite = (g.scalar(n, 1.0) for n in ("step_size", "bc2", "finite"))
            inputs = [p, m, v, grad, step_size, bc2]
            hyper = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
            if decoupled:
                hyper.update(weight_decay=0.3, decoupled_weight_decay=True)
                inputs.append(g.scalar("lr", 0.05))
            inputs += [finite] if with_flag else []
            update = g.op("adam_update", inputs, hyper)
            eng = _core.Engine(g, seed=0, backend=backend, options=options)
            eng.define("step", inputs=[], outputs=[], effects=[update], advance_rng=False)
            plan = eng.describe("step", 1)
            fused = any(line.startswith("adam_update") for line in plan)
            assert fused == (not options), plan  # the option really removed the kernel
            draw = np.random.default_rng(7)
            eng.set_variable("p", draw.standard_normal(shape).astype(np.float32))
            history = []
            for t, flag in enumerate(flags, start=1):
                eng.set_variable("g", draw.standard_normal(shape).astype(np.float32))
                eng.set_scalar("step_size", 1e-2 / (1 - 0.9**t))
                eng.set_scalar("bc2", float(np.sqrt(1 - 0.999**t)))
                eng.set_scalar("finite", flag)
                before = eng.get_variable("p")
                eng.run("step", [])
                after = eng.get_variable("p")
                if flag == 0.0:
                    np.testing.assert_array_equal(after, before)  # a skipped step writes nothing
                history.append([eng.get_variable(n) for n in ("p", "m", "v")])
            results.append(history)
        for step, (kernel, composed) in enumerate(zip(*results), start=1):
            for name, a, b in zip("pmv", kernel, composed):
                np.testing.assert_allclose(
                    a, b, rtol=2e-6, atol=1e-9, err_msg=f"{name} step {step}"
                )

    return check


# -- check_range -----------------------------------------------------------------------------

RANGE = {"low": -1.0, "high": 2.0, "label": "my_op", "message": "values must lie in [-1, 2]"}


def check_range_passes_values_inside_and_is_zero(backend, rng):
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    check = g.op("check_range", [x], RANGE)
    assert tuple(g.shape(check)) == ()
    eng = _core.Engine(g, seed=0, backend=backend)
    eng.define("f", inputs=[x], outputs=[check], effects=[], advance_rng=False)
    for batch in (1, 4):
        inside = rng.uniform(-1.0, 2.0, (batch, 3)).astype(np.float32)
        inside[0] = [-1.0, 2.0, 0.5]  # the bounds are inside
        assert eng.run("f", [inside]) == [0.0]


def check_range_names_the_first_value_outside(backend, rng):
    # NaN enters through a weight (inputs refuse it); the check names the first bad value.
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    check = g.op("check_range", [g.op("mul", [x, w])], RANGE)
    eng = _core.Engine(g, seed=0, backend=backend)
    eng.define("f", inputs=[x], outputs=[check], effects=[], advance_rng=False)
    cases = [([1.0, 1.0, 1.0], (1, 2), 2.5, "2.5"), ([1.0, np.nan, 1.0], (0, 1), 0.5, "nan")]
    for weight, index, bad, shown in cases:
        eng.set_variable("w", np.array(weight, np.float32))
        values = np.full((2, 3), 0.5, np.float32)
        values[index] = bad
        with pytest.raises(ValueError) as caught:
            eng.run("f", [values])
        expected = f"[my_op] values must lie in [-1, 2], got {shown} at index {index}"
        assert str(caught.value) == f"{expected} of shape (2, 3)"


# -- random_uniform --------------------------------------------------------------------------


def _uniform_engine(backend, seed, shape=(200, 100)):
    g = _core.Graph()
    z = g.variable("z", shape)
    r = g.op("random_uniform", [z], {})
    assert tuple(g.shape(r)) == shape
    eng = _core.Engine(g, seed=seed, backend=backend)
    eng.define("draw", inputs=[], outputs=[r], effects=[], advance_rng=True)
    eng.define("peek", inputs=[], outputs=[r], effects=[], advance_rng=False)
    return eng


def check_uniform_statistics(u: np.ndarray) -> None:
    """Values in [0, 1) with the mean, variance and histogram of U[0, 1)."""
    u = np.asarray(u, dtype=np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(u.var() - 1.0 / 12.0) < 0.005
    counts, _ = np.histogram(u, bins=10, range=(0.0, 1.0))
    np.testing.assert_allclose(counts / u.size, 0.1, atol=0.01)


def random_uniform_statistics(backend, rng):
    check_uniform_statistics(_uniform_engine(backend, seed=3).run("draw", [])[0])


def random_uniform_advances_between_steps(backend, rng):
    eng = _uniform_engine(backend, seed=3)
    first = np.asarray(eng.run("draw", [])[0])
    second = np.asarray(eng.run("draw", [])[0])
    assert not np.array_equal(first, second)
    # Successive draws are uncorrelated.
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.03


def random_uniform_without_advancing_repeats(backend, rng):
    eng = _uniform_engine(backend, seed=3)
    first = np.asarray(eng.run("peek", [])[0])
    np.testing.assert_array_equal(eng.run("peek", [])[0], first)


def random_uniform_is_deterministic_per_seed(backend, rng):
    engines = [_uniform_engine(backend, seed) for seed in (11, 11, 12)]
    for _ in range(3):
        a, b, c = (np.asarray(e.run("draw", [])[0]) for e in engines)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def core_random_uniform_streams(backend, rng):
    # _core.random_uniform is the same Philox outside a graph, per (seed, stream).
    first = np.asarray(_core.random_uniform(5, 0, (200, 100)))
    assert first.shape == (200, 100)
    check_uniform_statistics(first)
    np.testing.assert_array_equal(_core.random_uniform(5, 0, (200, 100)), first)
    assert not np.array_equal(_core.random_uniform(5, 1, (200, 100)), first)
    assert not np.array_equal(_core.random_uniform(6, 0, (200, 100)), first)


SCENARIOS = [
    ScenarioCase("assign", "sgd-step", assign_writes_after_reads_without_recompiling),
    ScenarioCase("adam_update", "torch-adam", adam_update_matches_torch_adam(0.0)),
    ScenarioCase("adam_update", "torch-adam-weight-decay", adam_update_matches_torch_adam(0.05)),
    ScenarioCase(
        "adam_update", "decomposition", adam_update_kernel_matches_its_decomposition(False)
    ),
    ScenarioCase(
        "adam_update", "decomposition-flag", adam_update_kernel_matches_its_decomposition(True)
    ),
    ScenarioCase(
        "adam_update", "torch-adamw", adam_update_matches_torch_adam(0.05, decoupled=True)
    ),
    ScenarioCase(
        "adam_update",
        "decomposition-decoupled-flag",
        adam_update_kernel_matches_its_decomposition(True, decoupled=True),
    ),
    ScenarioCase("check_range", "inside", check_range_passes_values_inside_and_is_zero),
    ScenarioCase("check_range", "outside", check_range_names_the_first_value_outside),
    ScenarioCase("random_uniform", "statistics", random_uniform_statistics),
    ScenarioCase("random_uniform", "advances", random_uniform_advances_between_steps),
    ScenarioCase("random_uniform", "peek-repeats", random_uniform_without_advancing_repeats),
    ScenarioCase("random_uniform", "per-seed", random_uniform_is_deterministic_per_seed),
    ScenarioCase("random_uniform", "core-streams", core_random_uniform_streams),
]
