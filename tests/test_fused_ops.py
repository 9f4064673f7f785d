"""Fused kernels: the adam_update primitive against NumPy's formula, and the plans that
show elementwise chains and optimizer updates running as single passes."""

import numpy as np
import pytest

import gometal as gm
from gometal import _core


def _adam_graph(n, hyper):
    g = _core.Graph()
    p, m, v, grad = (g.variable(name, (n,)) for name in ("p", "m", "v", "g"))
    step_size, bc2_sqrt = g.scalar("step_size", 0.0), g.scalar("bc2_sqrt", 1.0)
    update = g.op("adam_update", [p, m, v, grad, step_size, bc2_sqrt], hyper)
    engine = _core.Engine(g)
    engine.define("step", inputs=[], outputs=[], effects=[update])
    return engine


@pytest.mark.parametrize("n", [37, 50_001])  # one thread, then split across the pool
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_update_matches_numpy(n, weight_decay, rng):
    b1, b2, eps, lr = 0.8, 0.99, 1e-6, 0.01
    engine = _adam_graph(n, {"beta1": b1, "beta2": b2, "eps": eps, "weight_decay": weight_decay})
    p = rng.standard_normal(n).astype(np.float32)
    m = np.zeros(n, np.float32)
    v = np.zeros(n, np.float32)
    engine.set_variable("p", p)
    for t in range(1, 4):
        grad = rng.standard_normal(n).astype(np.float32)
        engine.set_variable("g", grad)
        step_size, bc2_sqrt = lr / (1 - b1**t), np.sqrt(1 - b2**t)
        engine.set_scalar("step_size", step_size)
        engine.set_scalar("bc2_sqrt", bc2_sqrt)
        engine.run("step", [])
        d = grad.astype(np.float64) + weight_decay * p
        m = m + (1 - b1) * (d - m)
        v = b2 * v + (1 - b2) * d * d
        p = p - step_size * m / (np.sqrt(v) / bc2_sqrt + eps)
        np.testing.assert_allclose(engine.get_variable("m"), m, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(engine.get_variable("v"), v, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(engine.get_variable("p"), p, rtol=1e-5, atol=1e-6)


def test_adam_update_rejects_mismatched_slots():
    g = _core.Graph()
    p, m = g.variable("p", (4, 3)), g.variable("m", (4, 3))
    v, grad = g.variable("v", (3, 4)), g.variable("g", (4, 3))
    s = g.scalar("s", 1.0)
    with pytest.raises(ValueError, match=r"\[adam_update\].*'v'.*\(3, 4\).*'p'.*\(4, 3\)"):
        g.op("adam_update", [p, m, v, grad, s, s], {"beta1": 0.9, "beta2": 0.999})


def test_a_variable_written_twice_is_rejected():
    g = _core.Graph()
    p, m, v, grad = (g.variable(name, (3,)) for name in ("p", "m", "v", "g"))
    s = g.scalar("s", 1.0)
    update = g.op("adam_update", [p, m, v, grad, s, s], {"beta1": 0.9, "beta2": 0.999})
    overwrite = g.op("assign", [m, grad])
    engine = _core.Engine(g)
    with pytest.raises(ValueError, match="writes variable 'm' twice"):
        engine.define("step", inputs=[], outputs=[], effects=[update, overwrite])


def test_training_plan_fuses_bias_activation_and_updates():
    model = gm.ModelBuilder((30,)).dense(64).relu().dense(10).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(), batch_size=8)
    plan = trainer._engine.describe("train", 8)
    # Bias add and relu: one pass after the matmul. The mask the backward pass needs is
    # recomputed from the stored relu output where it is read, not stored in between.
    assert "fused[add,relu] (8, 64)" in plan
    assert "fused[greater_equal,select] (8, 64)" in plan
    # One update kernel per parameter, nothing else touching the parameters.
    assert sum(line.startswith("adam_update") for line in plan) == 4
    # SGD with momentum composes primitives; each parameter's update is still one pass.
    sgd = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(0.1, momentum=0.9))
    updates = [line for line in sgd._engine.describe("train", 8) if "assign" in line]
    assert len(updates) == 5  # four parameters and the step counter
    assert all(line.count("assign") <= 2 for line in updates)
