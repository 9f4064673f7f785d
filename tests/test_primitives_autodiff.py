"""Gradients through graphs of several primitives: stop_gradient, a node used more than
once, a composite log-softmax, and variables the loss does not depend on."""

from __future__ import annotations

import numpy as np

from gometal import _core
from primitive_checks import _any, check_graph


def test_stop_gradient_is_identity_with_zero_gradient(rng):
    x = _any(rng, (3, 4)).astype(np.float32)
    r = rng.uniform(0.5, 1.5, (3, 4)).astype(np.float32)
    g = _core.Graph()
    v = g.variable("x", x.shape)
    stopped = g.op("stop_gradient", [v], {})
    # loss = sum(r * stop_gradient(x) * x): only the second factor carries a gradient.
    prod = g.op("mul", [g.op("mul", [stopped, v], {}), g.constant(r)], {})
    loss = g.op("sum", [prod], {"axes": [], "keepdims": False})
    (grad,) = g.gradients(loss, [v])
    only_stopped = g.op(
        "sum", [g.op("mul", [stopped, g.constant(r)], {})], {"axes": [], "keepdims": False}
    )
    (zero_grad,) = g.gradients(only_stopped, [v])
    eng = _core.Engine(g, seed=0)
    eng.set_variable("x", x)
    eng.define("f", inputs=[], outputs=[stopped, grad, zero_grad], effects=[], advance_rng=False)
    value, got, zero = eng.run("f", [])
    np.testing.assert_array_equal(value, x)
    np.testing.assert_allclose(got, r * x, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(zero), np.zeros_like(x))


def test_gradient_accumulates_over_several_uses(rng):
    # x used three times: exp(x) * x + x**2 / 2
    check_graph(
        lambda g, n: g.op(
            "add",
            [
                g.op("mul", [g.op("exp", [n[0]], {}), n[0]], {}),
                g.op("mul", [g.op("square", [n[0]], {}), g.constant(0.5)], {}),
            ],
            {},
        ),
        [_any(rng, (3, 4))],
        lambda v: np.exp(v) * v + v**2 / 2,
    )


def test_composite_softmax_cross_entropy_gradient(rng):
    # log-softmax built from primitives (max, stop_gradient, exp, sum, log) and its gradient.
    z = _any(rng, (4, 5)) * 2

    def build(g, n):
        x = n[0]
        shift = g.op("stop_gradient", [g.op("max", [x], {"axes": [1], "keepdims": True})], {})
        shifted = g.op("sub", [x, shift], {})
        total = g.op("sum", [g.op("exp", [shifted], {})], {"axes": [1], "keepdims": True})
        return g.op("sub", [shifted, g.op("log", [total], {})], {})

    def reference(v):
        m = v.max(axis=1, keepdims=True)
        return v - m - np.log(np.exp(v - m).sum(axis=1, keepdims=True))

    check_graph(build, [z], reference)


def test_gradient_without_a_path_is_zero(rng):
    g = _core.Graph()
    a = g.variable("a", (2, 3))
    b = g.variable("b", (4,))
    loss = g.op("sum", [g.op("square", [a], {})], {"axes": [], "keepdims": False})
    grad_a, grad_b = g.gradients(loss, [a, b])
    eng = _core.Engine(g, seed=0)
    x = _any(rng, (2, 3)).astype(np.float32)
    eng.set_variable("a", x)
    eng.set_variable("b", np.ones(4, np.float32))
    eng.define("f", inputs=[], outputs=[grad_a, grad_b], effects=[], advance_rng=False)
    ga, gb = eng.run("f", [])
    np.testing.assert_allclose(ga, 2 * x, rtol=1e-6)
    np.testing.assert_array_equal(gb, np.zeros(4, np.float32))
