"""Checks that span several ops: gradients accumulated across a graph, a composite
log-softmax, variables without a path to the loss, the relu-before-max-pool rewrite, results
independent of the thread count, and the inputs a run refuses."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal import _core

from .cases_conv import conv_case, pool_attrs
from .domains import any_values
from .harness import Arg, OpCase, available_backends, check_op_case, cotangent

BACKENDS = available_backends()


def _op(g, name, *inputs, **attrs):
    return g.op(name, list(inputs), attrs)


def _several_uses(g, nodes, attrs):
    # x used three times: exp(x) * x + x**2 / 2
    (x,) = nodes
    first = _op(g, "mul", _op(g, "exp", x), x)
    return _op(g, "add", first, _op(g, "mul", _op(g, "square", x), g.constant(0.5)))


def _log_softmax(g, nodes, attrs):
    # From primitives: max, stop_gradient, exp, sum, log.
    (x,) = nodes
    shift = _op(g, "stop_gradient", _op(g, "max", x, axes=[1], keepdims=True))
    shifted = _op(g, "sub", x, shift)
    total = _op(g, "sum", _op(g, "exp", shifted), axes=[1], keepdims=True)
    return _op(g, "sub", shifted, _op(g, "log", total))


def _np_log_softmax(v):
    m = v.max(axis=1, keepdims=True)
    return v - m - np.log(np.exp(v - m).sum(axis=1, keepdims=True))


GRAPHS = [
    OpCase(
        "exp",
        (Arg((3, 4)),),
        lambda v: np.exp(v) * v + v**2 / 2,
        name="gradient-accumulates-over-several-uses",
        build=_several_uses,
    ),
    OpCase(
        "max",
        (Arg((4, 5), lambda rng, shape: 2 * any_values(rng, shape)),),
        _np_log_softmax,
        name="composite-log-softmax",
        build=_log_softmax,
    ),
    OpCase(
        "max",
        (Arg((-1, 5)),),
        _np_log_softmax,
        name="composite-log-softmax-over-a-batch",
        build=_log_softmax,
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", GRAPHS, ids=lambda case: case.name)
def test_gradient_through_a_graph(case, backend, rng):
    check_op_case(case, "float32", backend, rng)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_without_a_path_is_zero(backend, rng):
    g = _core.Graph()
    a = g.variable("a", (2, 3))
    b = g.variable("b", (4,))
    loss = _op(g, "sum", _op(g, "square", a), axes=[], keepdims=False)
    grad_a, grad_b = g.gradients(loss, [a, b])
    eng = _core.Engine(g, seed=0, backend=backend)
    x = any_values(rng, (2, 3)).astype(np.float32)
    eng.set_variable("a", x)
    eng.set_variable("b", np.ones(4, np.float32))
    eng.define("f", inputs=[], outputs=[grad_a, grad_b], effects=[], advance_rng=False)
    ga, gb = eng.run("f", [])
    np.testing.assert_allclose(ga, 2 * x, rtol=1e-6)
    np.testing.assert_array_equal(gb, np.zeros(4, np.float32))


def test_gradient_of_non_scalar_raises():
    g = _core.Graph()
    w = g.variable("w", (3,))
    with pytest.raises(ValueError):
        g.gradients(_op(g, "exp", w), [w])


@pytest.mark.parametrize(
    "xs,kernel,stride,padding", [((2, 3, 8, 8), 2, 2, 0), ((2, 2, 7, 9), 3, 2, 1)], ids=str
)
def test_relu_then_max_pool_masks_the_pooled_gradient(xs, kernel, stride, padding):
    # relu's mask is taken on the pooled shape: no select over the full input remains (the
    # values and gradients are the max_pool2d "after-relu" cases of cases_conv).
    attrs = pool_attrs(kernel, stride, padding)
    g = _core.Graph()
    x = g.input("x", (-1, *xs[1:]), "float32")
    pooled = _op(g, "max_pool2d", _op(g, "relu", x), **attrs)
    (grad,) = g.gradients(_op(g, "sum", pooled, axes=[]), [x])
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[x], outputs=[grad], effects=[], advance_rng=False)
    pooled_shape = (xs[0], *g.shape(pooled)[1:])
    plan = " ".join(eng.describe("f", xs[0]))
    assert "select] " + str(pooled_shape) in plan, plan
    assert "select] " + str(xs) not in plan, plan


def test_conv2d_same_result_with_one_and_two_threads(rng):
    case = conv_case((7, 6, 13, 11), (8, 3, 3), (2, 1), 1, 1, 2, True)
    inputs = [arg.values(rng, arg.shape).astype(np.float32) for arg in case.args]
    weights = cotangent(rng, (7, 8, 7, 11))

    def run():
        g = _core.Graph()
        nodes = [g.variable(f"in{i}", a.shape) for i, a in enumerate(inputs)]
        out = case.build(g, nodes, dict(case.attrs))
        loss = _op(g, "sum", _op(g, "mul", out, g.constant(weights)), axes=[])
        grads = g.gradients(loss, nodes)
        eng = _core.Engine(g, seed=0)
        for i, value in enumerate(inputs):
            eng.set_variable(f"in{i}", value)
        eng.define("f", inputs=[], outputs=[out, *grads], effects=[], advance_rng=False)
        return eng.run("f", [])

    saved = gm.get_num_threads()
    try:
        gm.set_num_threads(1)
        one = run()
        gm.set_num_threads(2)
        two = run()
    finally:
        gm.set_num_threads(saved)
    assert gm.get_num_threads() == saved
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_rejects_bad_run_inputs(backend):
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    out = _op(g, "mul", x, w)
    eng = _core.Engine(g, seed=0, backend=backend)
    eng.define("f", inputs=[x], outputs=[out], effects=[], advance_rng=False)
    with pytest.raises(ValueError, match=r"(?i)nan|finite"):
        eng.run("f", [np.array([[1.0, np.nan, 0.0]], np.float32)])
    with pytest.raises(ValueError, match=r"(?i)inf|finite"):
        eng.run("f", [np.array([[1.0, np.inf, 0.0]], np.float32)])
    with pytest.raises(ValueError):
        eng.run("f", [np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError):
        eng.set_variable("w", np.ones(4, np.float32))
    with pytest.raises((ValueError, KeyError)):
        eng.set_variable("no_such_variable", np.ones(3, np.float32))
    # Still works after the errors.
    eng.set_variable("w", np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_array_equal(
        eng.run("f", [np.ones((2, 3), np.float32)])[0], np.tile([1.0, 2.0, 3.0], (2, 1))
    )
