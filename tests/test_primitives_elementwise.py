"""Elementwise primitives against NumPy, forward and backward: unary ops, binary ops under
broadcasting, comparisons and select."""

from __future__ import annotations

import math

import numpy as np
import pytest

from primitive_checks import (
    _any,
    _away_from_zero,
    _positive,
    check_graph,
    check_op,
    run_forward,
)

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


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
