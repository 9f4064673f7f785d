"""The primitive test harness: runs one engine primitive (or a small graph) through
`gometal._core` directly and compares it with a NumPy formula (forward) and with central
finite differences computed in float64 on that formula (backward).

Shared by the `test_primitives_*` files; they import it as `from primitive_checks import ...`.
"""

from __future__ import annotations

import numpy as np

from gometal import _core

FWD_RTOL, FWD_ATOL = 1e-5, 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-3, 1e-4
FD_EPS = 1e-3


# -- the harness ---------------------------------------------------------------------------------


def _scalar_or_array_constant(g, value: np.ndarray) -> int:
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 0:
        return g.constant(float(value))
    return g.constant(value)


def numeric_gradient(fn, arrays, weights, index, eps=FD_EPS):
    """Central differences of sum(fn(*arrays) * weights) with respect to arrays[index],
    evaluated in float64 on the NumPy formula (the engine is not involved)."""
    args = [np.array(a, dtype=np.float64) for a in arrays]
    x = args[index]
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        original = x[idx]
        x[idx] = original + eps
        plus = np.sum(np.asarray(fn(*args)) * weights)
        x[idx] = original - eps
        minus = np.sum(np.asarray(fn(*args)) * weights)
        x[idx] = original
        grad[idx] = (plus - minus) / (2.0 * eps)
    return grad


def check_graph(build, inputs, numpy_fn, differentiable=None, check_grad=True, seed=0):
    """Builds `build(g, nodes)` over `inputs`, compares its forward value with `numpy_fn` and,
    when `check_grad`, the gradient of sum(out * R) for a fixed random R with finite differences.

    Differentiable inputs become engine variables (set with `Engine.set_variable`); the others
    become graph constants.
    """
    inputs = [np.asarray(a, dtype=np.float32) for a in inputs]
    if differentiable is None:
        differentiable = [True] * len(inputs)
    g = _core.Graph()
    nodes, variables = [], []
    for i, (value, diff) in enumerate(zip(inputs, differentiable)):
        if diff:
            node = g.variable(f"in{i}", value.shape)
            variables.append((i, f"in{i}", node))
        else:
            node = _scalar_or_array_constant(g, value)
        nodes.append(node)
    out = build(g, nodes)

    expected = np.asarray(numpy_fn(*[a.astype(np.float64) for a in inputs]), dtype=np.float64)
    assert tuple(g.shape(out)) == expected.shape
    assert g.dtype(out) == "float32"

    weights = np.random.default_rng(seed + 99).uniform(0.5, 1.5, expected.shape)
    weights *= np.random.default_rng(seed + 98).choice([-1.0, 1.0], expected.shape)
    grads = []
    if check_grad and variables:
        r = _scalar_or_array_constant(g, weights)
        loss = g.op("sum", [g.op("mul", [out, r], {})], {"axes": [], "keepdims": False})
        grads = g.gradients(loss, [node for _, _, node in variables])

    eng = _core.Engine(g, seed=0)
    for i, name, _ in variables:
        eng.set_variable(name, inputs[i])
    eng.define("forward", inputs=[], outputs=[out], effects=[], advance_rng=False)
    got = np.asarray(eng.run("forward", [])[0], dtype=np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=FWD_RTOL, atol=FWD_ATOL, err_msg="forward")

    if grads:
        eng.define("backward", inputs=[], outputs=list(grads), effects=[], advance_rng=False)
        # The weights used inside the graph are float32; use the same values for the reference.
        weights32 = weights.astype(np.float32).astype(np.float64)
        results = eng.run("backward", [])
        for (i, name, _), grad in zip(variables, results):
            grad = np.asarray(grad, dtype=np.float64)
            expected_grad = numeric_gradient(numpy_fn, inputs, weights32, i)
            assert grad.shape == inputs[i].shape, name
            np.testing.assert_allclose(
                grad, expected_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=f"d/d{name}"
            )
    return got


def check_op(name, inputs, attrs, numpy_fn, differentiable=None, check_grad=True):
    """Checks one primitive `name` with `attrs` against `numpy_fn`, forward and backward."""

    def build(g, nodes):
        out = g.op(name, nodes, attrs)
        assert g.op_name(out) == name
        return out

    return check_graph(
        build,
        inputs,
        numpy_fn,
        differentiable=differentiable,
        check_grad=check_grad,
    )


def run_forward(build, feeds):
    """Builds a graph from `build(g)` -> (input ids, output id) and runs it once on `feeds`."""
    g = _core.Graph()
    input_ids, out = build(g)
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=input_ids, outputs=[out], effects=[], advance_rng=False)
    return g, out, eng.run("f", feeds)[0]


# -- input domains -------------------------------------------------------------------------------


def _any(rng, shape):
    return rng.uniform(-2.0, 2.0, shape)


def _positive(rng, shape):
    return rng.uniform(0.5, 2.5, shape)


def _away_from_zero(rng, shape):
    return rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def _distinct(rng, shape):
    """Values at least 0.1 apart, so max/argmax have unique winners away from kinks."""
    n = int(np.prod(shape, dtype=np.int64))
    return (rng.permutation(n) * 0.1 - 0.05 * n).reshape(shape)
