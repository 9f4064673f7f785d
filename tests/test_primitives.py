"""Every engine primitive against a NumPy formula (forward) and central finite differences
computed in float64 on that formula (backward), through `gometal._core` directly."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gometal import _core

FWD_RTOL, FWD_ATOL = 1e-5, 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-3, 1e-4
FD_EPS = 1e-3

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


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


UNARY = [
    ("neg", np.negative, _any),
    ("exp", np.exp, _any),
    ("log", np.log, _positive),
    ("tanh", np.tanh, _any),
    ("sigmoid", _sigmoid, _any),
    ("relu", lambda x: np.maximum(x, 0.0), _away_from_zero),
    ("abs", np.abs, _away_from_zero),
    ("sign", np.sign, _away_from_zero),
    ("sqrt", np.sqrt, _positive),
    ("rsqrt", lambda x: 1.0 / np.sqrt(x), _positive),
    ("erf", _erf, _any),
    ("square", np.square, _any),
]
SHAPES = [(), (5,), (3, 4), (2, 3, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name,fn,domain", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, domain, shape, rng):
    check_op(name, [domain(rng, shape)], {}, fn)


def test_unary_values_at_kinks():
    x = np.array([-1.5, 0.0, 2.0], np.float32)
    for name, fn in [("relu", lambda v: np.maximum(v, 0)), ("abs", np.abs), ("sign", np.sign)]:

        def build(g, name=name):
            xi = g.input("x", (3,), "float32")
            return [xi], g.op(name, [xi], {})

        _, _, got = run_forward(build, [x])
        np.testing.assert_array_equal(got, fn(x), err_msg=name)


BROADCAST_SHAPES = [
    ((4, 3), (4, 3)),
    ((4, 3), (3,)),
    ((4, 1), (1, 5)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((2, 1, 4), (3, 1)),
]


def _separated_pair(rng, shape_a, shape_b):
    """a and b whose elements differ by at least 0.15 wherever they meet under broadcasting."""
    a = 0.5 * rng.integers(-4, 4, shape_a) + 0.25 + rng.uniform(-0.05, 0.05, shape_a)
    b = 0.5 * rng.integers(-4, 4, shape_b) + rng.uniform(-0.05, 0.05, shape_b)
    return a, b


BINARY = [
    ("add", np.add, "any"),
    ("sub", np.subtract, "any"),
    ("mul", np.multiply, "any"),
    ("div", np.divide, "denominator"),
    ("maximum", np.maximum, "separated"),
    ("minimum", np.minimum, "separated"),
    ("pow", np.power, "positive_base"),
]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("name,fn,domain", BINARY, ids=[b[0] for b in BINARY])
def test_binary(name, fn, domain, shapes, rng):
    shape_a, shape_b = shapes
    if domain == "any":
        a, b = _any(rng, shape_a), _any(rng, shape_b)
    elif domain == "denominator":
        a, b = _any(rng, shape_a), _away_from_zero(rng, shape_b) + 0.0
        b = np.where(np.abs(b) < 0.5, np.sign(b) * 0.5, b)
    elif domain == "separated":
        a, b = _separated_pair(rng, shape_a, shape_b)
    else:
        a, b = _positive(rng, shape_a), rng.uniform(-2.0, 2.0, shape_b)
    check_op(name, [a, b], {}, fn)


COMPARISONS = [
    ("greater", np.greater),
    ("greater_equal", np.greater_equal),
    ("less", np.less),
    ("equal", np.equal),
]


@pytest.mark.parametrize("shapes", [((4, 3), (4, 3)), ((4, 3), (3,)), ((4, 1), (1, 5)), ((3,), ())])
@pytest.mark.parametrize("name,fn", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparison_forward(name, fn, shapes, rng):
    # Small integers so that ties occur and the equal cases are exercised.
    a = rng.integers(-2, 3, shapes[0]).astype(np.float32)
    b = rng.integers(-2, 3, shapes[1]).astype(np.float32)
    got = check_op(name, [a, b], {}, lambda x, y: fn(x, y).astype(np.float64), check_grad=False)
    assert set(np.unique(got)) <= {0.0, 1.0}


def test_comparison_contributes_no_gradient(rng):
    # x * (x > 0) has the derivative (x > 0): the comparison itself adds nothing.
    x = _away_from_zero(rng, (4, 5))
    check_graph(
        lambda g, n: g.op("mul", [n[0], g.op("greater", [n[0], g.constant(0.0)], {})], {}),
        [x],
        lambda v: v * (v > 0),
    )


SELECT_SHAPES = [
    ((4, 3), (4, 3), (4, 3)),
    ((4, 1), (4, 3), (3,)),
    ((3,), (), (2, 3)),
]


@pytest.mark.parametrize("shapes", SELECT_SHAPES, ids=str)
def test_select(shapes, rng):
    cond = (rng.uniform(size=shapes[0]) > 0.5).astype(np.float32)
    a, b = _any(rng, shapes[1]), _any(rng, shapes[2])
    check_op(
        "select",
        [cond, a, b],
        {},
        lambda c, x, y: np.where(c != 0, x, y),
        differentiable=[False, True, True],
    )


def test_select_treats_any_nonzero_as_true(rng):
    cond = np.array([[0.0, 2.5, -1.0, 0.0]], np.float32)
    a, b = _any(rng, (1, 4)), _any(rng, (1, 4))
    check_op(
        "select",
        [cond, a, b],
        {},
        lambda c, x, y: np.where(c != 0, x, y),
        differentiable=[False, True, True],
    )


REDUCTION_CASES = [
    ((2, 3, 4), [], False),
    ((2, 3, 4), [], True),
    ((2, 3, 4), [0], False),
    ((2, 3, 4), [1], True),
    ((2, 3, 4), [2], False),
    ((2, 3, 4), [-1], True),
    ((2, 3, 4), [0, 2], False),
    ((2, 3, 4), [-2, 0], True),
    ((5, 4), [0], False),
    ((5, 4), [1], True),
    ((6,), [0], False),
]
REDUCTIONS = [("sum", np.sum), ("mean", np.mean), ("max", np.max)]


@pytest.mark.parametrize("shape,axes,keepdims", REDUCTION_CASES, ids=str)
@pytest.mark.parametrize("name,fn", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
def test_reduction(name, fn, shape, axes, keepdims, rng):
    x = _distinct(rng, shape) if name == "max" else _any(rng, shape)
    axis = tuple(axes) if axes else None
    check_op(
        name,
        [x],
        {"axes": axes, "keepdims": keepdims},
        lambda v: fn(v, axis=axis, keepdims=keepdims),
    )


def test_max_gradient_splits_ties_like_torch():
    import torch

    x = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, -1.0]], np.float32)
    g = _core.Graph()
    v = g.variable("x", x.shape)
    loss = g.op(
        "sum", [g.op("max", [v], {"axes": [1], "keepdims": False})], {"axes": [], "keepdims": False}
    )
    (grad,) = g.gradients(loss, [v])
    eng = _core.Engine(g, seed=0)
    eng.set_variable("x", x)
    eng.define("f", inputs=[], outputs=[loss, grad], effects=[], advance_rng=False)
    value, got = eng.run("f", [])
    t = torch.tensor(x, requires_grad=True)
    torch.amax(t, dim=1).sum().backward()
    assert value == pytest.approx(5.0)
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("shape,axis", [((4, 5), 1), ((4, 5), 0), ((4, 5), -1), ((2, 3, 4), 1)])
def test_argmax_forward(shape, axis, rng):
    x = _distinct(rng, shape)
    got = check_op(
        "argmax",
        [x],
        {"axis": axis},
        lambda v: np.argmax(v, axis=axis).astype(np.float64),
        check_grad=False,
    )
    assert np.all(got == np.round(got))


@pytest.mark.parametrize(
    "shape,target",
    [((2, 3, 4), (6, 4)), ((4, 6), (2, 2, 6)), ((3, 4), (12,)), ((12,), (3, 4)), ((2, 6), (2, 6))],
    ids=str,
)
def test_reshape(shape, target, rng):
    check_op("reshape", [_any(rng, shape)], {"shape": list(target)}, lambda v: v.reshape(target))


@pytest.mark.parametrize(
    "shape,perm",
    [((3, 4), [1, 0]), ((2, 3, 4), [2, 0, 1]), ((2, 3, 4), [1, 2, 0]), ((2, 3, 4), [0, 2, 1])],
    ids=str,
)
def test_transpose(shape, perm, rng):
    check_op("transpose", [_any(rng, shape)], {"perm": perm}, lambda v: np.transpose(v, perm))


@pytest.mark.parametrize(
    "shape,target",
    [((3,), (4, 3)), ((4, 1), (4, 5)), ((), (2, 3)), ((1, 3), (2, 4, 3)), ((2, 1, 3), (2, 4, 3))],
    ids=str,
)
def test_broadcast_to(shape, target, rng):
    check_op(
        "broadcast_to",
        [_any(rng, shape)],
        {"shape": list(target)},
        lambda v: np.broadcast_to(v, target),
    )


@pytest.mark.parametrize(
    "shape,axis,start,end",
    [
        ((5, 4), 0, 1, 4),
        ((5, 4), 1, 0, 2),
        ((2, 3, 4), 2, 1, 3),
        ((2, 3, 4), 1, 2, 3),
        ((6,), 0, 0, 6),
    ],
    ids=str,
)
def test_slice(shape, axis, start, end, rng):
    index = [slice(None)] * len(shape)
    index[axis] = slice(start, end)
    check_op(
        "slice",
        [_any(rng, shape)],
        {"axis": axis, "start": start, "end": end},
        lambda v: v[tuple(index)],
    )


@pytest.mark.parametrize(
    "shapes,axis",
    [
        ([(2, 3), (4, 3)], 0),
        ([(2, 3), (2, 1), (2, 2)], 1),
        ([(2, 3, 4), (2, 1, 4)], 1),
        ([(2, 3), (2, 2)], -1),
        ([(3,), (2,)], 0),
    ],
    ids=str,
)
def test_concat(shapes, axis, rng):
    arrays = [_any(rng, s) for s in shapes]
    check_op("concat", arrays, {"axis": axis}, lambda *vs: np.concatenate(vs, axis=axis))


@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("transpose_a", [False, True])
def test_matmul(transpose_a, transpose_b, rng):
    m, k, n = 3, 4, 5
    a = _any(rng, (k, m) if transpose_a else (m, k))
    b = _any(rng, (n, k) if transpose_b else (k, n))

    def reference(x, y):
        return (x.T if transpose_a else x) @ (y.T if transpose_b else y)

    check_op("matmul", [a, b], {"transpose_a": transpose_a, "transpose_b": transpose_b}, reference)


def test_matmul_larger_than_a_block(rng):
    # Big enough that a blocked or threaded GEMM path is taken.
    a, b = (
        _any(
            rng,
            (67, 129),
        ),
        _any(rng, (129, 33)),
    )
    check_graph(lambda g, n: g.op("matmul", n, {}), [a, b], lambda x, y: x @ y, check_grad=False)


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


# -- dtype ops -----------------------------------------------------------------------------------


def test_cast_round_trip_and_dtypes():
    values = np.array([[-3.0, 0.0, 2.0], [7.0, -1.0, 5.0]], np.float32)
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    as_int = g.op("cast", [x], {"dtype": "int32"})
    back = g.op("cast", [as_int], {"dtype": "float32"})
    assert g.dtype(as_int) == "int32"
    assert g.dtype(back) == "float32"
    assert tuple(g.shape(back)) == (-1, 3)
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[x], outputs=[back], effects=[], advance_rng=False)
    np.testing.assert_array_equal(eng.run("f", [values])[0], values)


def test_cast_int_labels_to_float():
    labels = np.array([4, 0, 2, 9, 1], np.int32)
    g = _core.Graph()
    y = g.input("y", (-1,), "int32")
    out = g.op("cast", [y], {"dtype": "float32"})
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[y], outputs=[out], effects=[], advance_rng=False)
    np.testing.assert_array_equal(eng.run("f", [labels])[0], labels.astype(np.float32))


@pytest.mark.parametrize("depth", [3, 10])
def test_one_hot(depth, rng):
    g = _core.Graph()
    y = g.input("y", (-1,), "int32")
    out = g.op("one_hot", [y], {"depth": depth})
    assert g.dtype(out) == "float32"
    assert tuple(g.shape(out)) == (-1, depth)
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[y], outputs=[out], effects=[], advance_rng=False)
    for n in (6, 2, 6):  # a second batch size, then the first again
        labels = rng.integers(0, depth, n).astype(np.int32)
        np.testing.assert_array_equal(eng.run("f", [labels])[0], np.eye(depth)[labels])


def test_batch_dimension_is_fixed_per_run(rng):
    g = _core.Graph()
    x = g.input("x", (-1, 6), "float32")
    out = g.op("reshape", [g.op("tanh", [x], {})], {"shape": [-1, 2, 3]})
    assert tuple(g.shape(out)) == (-1, 2, 3)
    total = g.op("sum", [out], {"axes": [0], "keepdims": False})
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[x], outputs=[out, total], effects=[], advance_rng=False)
    for n in (4, 9, 1, 4):
        v = rng.standard_normal((n, 6)).astype(np.float32)
        got, got_total = eng.run("f", [v])
        np.testing.assert_allclose(got, np.tanh(v).reshape(n, 2, 3), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            got_total, np.tanh(v).reshape(n, 2, 3).sum(0), rtol=1e-5, atol=1e-5
        )


def test_mean_over_the_batch_dimension_gradient(rng):
    # The count of a mean over the batch axis is only known when the plan is compiled.
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    loss = g.op(
        "mean", [g.op("square", [g.op("mul", [x, w], {})], {})], {"axes": [], "keepdims": False}
    )
    (grad,) = g.gradients(loss, [w])
    eng = _core.Engine(g, seed=0)
    wv = np.array([0.5, -1.0, 2.0], np.float32)
    eng.set_variable("w", wv)
    eng.define("f", inputs=[x], outputs=[loss, grad], effects=[], advance_rng=False)
    for n in (5, 8):
        v = rng.standard_normal((n, 3)).astype(np.float32)
        value, got = eng.run("f", [v])
        ref = (v.astype(np.float64) * wv) ** 2
        assert value == pytest.approx(ref.mean(), rel=1e-5)
        np.testing.assert_allclose(got, (2 * v * v * wv).sum(0) / (n * 3), rtol=1e-5, atol=1e-6)


# -- random_uniform ------------------------------------------------------------------------------


def _uniform_engine(seed, shape=(200, 100)):
    g = _core.Graph()
    z = g.variable("z", shape)
    r = g.op("random_uniform", [z], {})
    assert tuple(g.shape(r)) == shape
    eng = _core.Engine(g, seed=seed)
    eng.define("draw", inputs=[], outputs=[r], effects=[], advance_rng=True)
    eng.define("peek", inputs=[], outputs=[r], effects=[], advance_rng=False)
    return eng


def _check_uniform_statistics(u):
    u = np.asarray(u, dtype=np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(u.var() - 1.0 / 12.0) < 0.005
    counts, _ = np.histogram(u, bins=10, range=(0.0, 1.0))
    np.testing.assert_allclose(counts / u.size, 0.1, atol=0.01)


def test_random_uniform_statistics():
    eng = _uniform_engine(seed=3)
    _check_uniform_statistics(eng.run("draw", [])[0])


def test_random_uniform_advances_between_steps():
    eng = _uniform_engine(seed=3)
    first = np.asarray(eng.run("draw", [])[0])
    second = np.asarray(eng.run("draw", [])[0])
    assert not np.array_equal(first, second)
    # Successive draws are uncorrelated.
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.03


def test_random_uniform_without_advancing_repeats():
    eng = _uniform_engine(seed=3)
    first = np.asarray(eng.run("peek", [])[0])
    np.testing.assert_array_equal(eng.run("peek", [])[0], first)


def test_random_uniform_is_deterministic_per_seed():
    a, b, c = _uniform_engine(seed=11), _uniform_engine(seed=11), _uniform_engine(seed=12)
    for _ in range(3):
        da, db, dc = (np.asarray(e.run("draw", [])[0]) for e in (a, b, c))
        np.testing.assert_array_equal(da, db)
        assert not np.array_equal(da, dc)


def test_core_random_uniform_streams():
    first = np.asarray(_core.random_uniform(5, 0, (200, 100)))
    assert first.shape == (200, 100)
    _check_uniform_statistics(first)
    np.testing.assert_array_equal(_core.random_uniform(5, 0, (200, 100)), first)
    assert not np.array_equal(_core.random_uniform(5, 1, (200, 100)), first)
    assert not np.array_equal(_core.random_uniform(6, 0, (200, 100)), first)


# -- variables, scalars, assign ------------------------------------------------------------------


def test_assign_updates_variables_and_scalars_do_not_recompile(rng):
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    lr = g.scalar("lr", 0.5)
    loss = g.op("sum", [g.op("mul", [x, w], {})], {"axes": [], "keepdims": False})
    (grad,) = g.gradients(loss, [w])
    update = g.op("assign", [w, g.op("sub", [w, g.op("mul", [grad, lr], {})], {})], {})
    eng = _core.Engine(g, seed=0)
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


# -- verifier errors -----------------------------------------------------------------------------


def _shape_pattern(shape):
    return r"\(" + r",\s*".join(str(d) for d in shape) + r",?\)"


def test_matmul_shape_error_names_op_and_shapes():
    g = _core.Graph()
    a = g.variable("a", (2, 3))
    b = g.variable("b", (4, 5))
    with pytest.raises(ValueError) as err:
        g.op("matmul", [a, b], {})
    message = str(err.value)
    assert "matmul" in message
    assert re.search(_shape_pattern((2, 3)), message), message
    assert re.search(_shape_pattern((4, 5)), message), message


@pytest.mark.parametrize(
    "name,shapes,attrs",
    [
        ("add", [(4, 3), (5,)], {}),
        ("mul", [(2, 3), (3, 2)], {}),
        ("select", [(4, 3), (4, 3), (2, 3)], {}),
        ("concat", [(2, 3), (3, 4)], {"axis": 0}),
        ("reshape", [(2, 3)], {"shape": [4, 2]}),
        ("broadcast_to", [(3, 2)], {"shape": [3, 4]}),
        ("matmul", [(2, 3), (2, 3)], {"transpose_a": False, "transpose_b": False}),
        ("matmul", [(2, 3, 4), (4, 5)], {}),
    ],
    ids=lambda v: str(v),
)
def test_shape_errors_name_op_and_shapes(name, shapes, attrs):
    g = _core.Graph()
    nodes = [g.variable(f"v{i}", s) for i, s in enumerate(shapes)]
    with pytest.raises(ValueError) as err:
        g.op(name, nodes, attrs)
    message = str(err.value)
    assert name in message, message
    assert re.search(_shape_pattern(shapes[0]), message), message


@pytest.mark.parametrize(
    "name,shape,attrs",
    [
        ("sum", (2, 3), {"axes": [2]}),
        ("mean", (2, 3), {"axes": [-3]}),
        ("argmax", (2, 3), {"axis": 5}),
        ("transpose", (2, 3), {"perm": [0, 0]}),
        ("transpose", (2, 3, 4), {"perm": [1, 0]}),
        ("slice", (5, 4), {"axis": 0, "start": 3, "end": 7}),
        ("slice", (5, 4), {"axis": 2, "start": 0, "end": 1}),
    ],
    ids=lambda v: str(v),
)
def test_bad_attributes_raise(name, shape, attrs):
    g = _core.Graph()
    x = g.variable("x", shape)
    with pytest.raises(ValueError, match=name):
        g.op(name, [x], attrs)


def test_unknown_op_and_wrong_arity_raise():
    g = _core.Graph()
    x = g.variable("x", (2, 3))
    with pytest.raises(ValueError, match="frobnicate"):
        g.op("frobnicate", [x], {})
    with pytest.raises(ValueError, match="add"):
        g.op("add", [x], {})
    with pytest.raises(ValueError, match="exp"):
        g.op("exp", [x, x], {})
    # The graph is still usable afterwards.
    y = g.op("add", [x, x], {})
    assert tuple(g.shape(y)) == (2, 3)


def test_dtype_errors_raise():
    g = _core.Graph()
    labels = g.input("y", (-1,), "int32")
    x = g.variable("x", (4,))
    with pytest.raises(ValueError, match="one_hot"):
        g.op("one_hot", [x], {"depth": 3})
    with pytest.raises(ValueError, match="one_hot"):
        g.op("one_hot", [labels], {"depth": 0})
    with pytest.raises(ValueError, match="exp"):
        g.op("exp", [labels], {})


def test_assign_checks_target_and_shape():
    g = _core.Graph()
    w = g.variable("w", (3,))
    other = g.op("exp", [w], {})
    with pytest.raises(ValueError, match="assign"):
        g.op("assign", [w, g.variable("v", (4,))], {})
    with pytest.raises(ValueError, match="assign"):
        g.op("assign", [other, w], {})


def test_engine_rejects_bad_run_inputs():
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    out = g.op("mul", [x, w], {})
    eng = _core.Engine(g, seed=0)
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


def test_gradient_of_non_scalar_raises():
    g = _core.Graph()
    w = g.variable("w", (3,))
    with pytest.raises(ValueError):
        g.gradients(g.op("exp", [w], {}), [w])
