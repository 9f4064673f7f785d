"""all_reduce_mean, and its non-blocking halves all_reduce_mean_start and all_reduce_mean_wait,
in one process: a job of one rank, whose mean over the ranks is the value itself
(tests/test_distributed*.py run them across ranks under mpirun)."""

from __future__ import annotations

import numpy as np

from gometal import _core

from .harness import BATCH, EXACT, NO_GRADIENT, Arg, ErrorCase, OpCase, ScenarioCase


def _identity(x: np.ndarray) -> np.ndarray:
    return x


CASES = [
    OpCase("all_reduce_mean", (Arg((BATCH, 3)),), _identity, name="batch"),
    OpCase("all_reduce_mean", (Arg((2, 3, 4)),), _identity, name="variable"),
    # In one process the started sum is the value (across ranks only its wait may read it).
    OpCase(
        "all_reduce_mean_start",
        (Arg((BATCH, 3)),),
        _identity,
        gradient=NO_GRADIENT,
        forward_tol=EXACT,
    ),
    OpCase(
        "all_reduce_mean_wait",
        (Arg((BATCH, 3)),),
        _identity,
        build=lambda g, nodes, attrs: g.op(
            "all_reduce_mean_wait", [g.op("all_reduce_mean_start", [nodes[0]]), nodes[0]]
        ),
        gradient=NO_GRADIENT,
        forward_tol=EXACT,
    ),
    # A job of one rank gathers its own part.
    OpCase(
        "all_gather",
        (Arg((4, 3)),),
        _identity,
        attrs={"parts": 1},
        gradient=NO_GRADIENT,
        forward_tol=EXACT,
    ),
]


def a_step_averages_its_gradient_over_one_rank(backend, rng):
    """SGD on w through the all-reduced gradient matches the NumPy step of the local one."""
    g = _core.Graph()
    x = g.input("x", (-1, 3))
    w = g.variable("w", (3,))
    loss = g.op("sum", [g.op("square", [g.op("mul", [x, w])])], {"axes": []})
    (grad,) = g.gradients(loss, [w])
    averaged = g.op("all_reduce_mean", [grad])
    update = g.op("assign", [w, g.op("sub", [w, g.op("mul", [averaged, g.constant(0.1)])])])
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("step", inputs=[x], outputs=[averaged], effects=[update])
    weights = rng.standard_normal(3).astype(np.float32)
    values = rng.standard_normal((4, 3)).astype(np.float32)
    engine.set_variable("w", weights)
    (got,) = engine.run("step", [values])
    expected = (2 * values**2 * weights).sum(axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(engine.get_variable("w"), weights - 0.1 * got, rtol=1e-6)


SCENARIOS = [
    ScenarioCase("all_reduce_mean", "one-rank-step", a_step_averages_its_gradient_over_one_rank),
]

ERROR_CASES = [
    ErrorCase(
        "all_reduce_mean",
        (Arg((2, 3), dtype="int32", leaf="input"),),
        patterns=("expects input of dtype float32, got int32",),
        name="int32",
    ),
    ErrorCase(
        "all_reduce_mean_wait",
        (Arg((2, 3)), Arg((2, 3))),
        patterns=(r"expects \(all_reduce_mean_start\(x\), x\), got a 'variable' node",),
        name="not-a-start",
    ),
    ErrorCase(
        "all_gather",
        (Arg((BATCH, 3)),),
        {"parts": 1},
        patterns=("expects an input with a fixed first axis",),
        name="batch",
    ),
    ErrorCase(
        "all_gather",
        (Arg((4,)),),
        {"parts": 0},
        patterns=("expects parts >= 1, got 0",),
        name="no-parts",
    ),
]
