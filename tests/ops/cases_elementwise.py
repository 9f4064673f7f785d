"""Elementwise ops: unary math, binary math under broadcasting, comparisons, select, the
bfloat16 rounding ops, GELU and its gradient op, and NaN propagation."""

from __future__ import annotations

import numpy as np

from .domains import (
    any_values,
    away_from_zero,
    conditions,
    denominators,
    fixed,
    half_steps,
    positive,
    small_integers,
    with_nan,
)
from .harness import EXACT, NO_GRADIENT, VJP, Arg, OpCase
from .references import erf, round_to_bfloat16, sigmoid, sign_like_torch

UNARY = [
    ("neg", np.negative, any_values),
    ("exp", np.exp, any_values),
    ("log", np.log, positive),
    ("tanh", np.tanh, any_values),
    ("sigmoid", sigmoid, any_values),
    ("relu", lambda x: np.maximum(x, 0.0), away_from_zero),
    ("abs", np.abs, away_from_zero),
    ("sign", np.sign, away_from_zero),
    ("sqrt", np.sqrt, positive),
    ("rsqrt", lambda x: 1.0 / np.sqrt(x), positive),
    ("erf", erf, any_values),
    ("square", np.square, any_values),
]
UNARY_SHAPES = [(), (5,), (3, 4), (2, 3, 4), (-1, 3)]

UNARY_CASES = [
    OpCase(op, (Arg(shape, domain),), fn) for op, fn, domain in UNARY for shape in UNARY_SHAPES
]

# Values at the kinks, fed as graph inputs: relu(0), abs(0) and sign(0) are exactly 0.
KINKS = [-1.5, 0.0, 2.0]
KINK_CASES = [
    OpCase(
        op,
        (Arg((3,), fixed(KINKS), leaf="input"),),
        fn,
        name="kinks",
        gradient=NO_GRADIENT,
        exact=True,
    )
    for op, fn in [("relu", lambda v: np.maximum(v, 0)), ("abs", np.abs), ("sign", np.sign)]
]

BROADCAST_SHAPES = [
    ((4, 3), (4, 3)),
    ((4, 3), (3,)),
    ((4, 1), (1, 5)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((2, 1, 4), (3, 1)),
    ((-1, 4), (4,)),
    ((-1, 1, 3), (2, 1)),
]

# (op, reference, domain of a, domain of b)
BINARY = [
    ("add", np.add, any_values, any_values),
    ("sub", np.subtract, any_values, any_values),
    ("mul", np.multiply, any_values, any_values),
    ("div", np.divide, any_values, denominators),
    ("maximum", np.maximum, half_steps(0.25), half_steps(0.0)),
    ("minimum", np.minimum, half_steps(0.25), half_steps(0.0)),
    ("pow", np.power, positive, any_values),
]

BINARY_CASES = [
    OpCase(op, (Arg(shape_a, domain_a), Arg(shape_b, domain_b)), fn)
    for op, fn, domain_a, domain_b in BINARY
    for shape_a, shape_b in BROADCAST_SHAPES
]

COMPARISONS = [
    ("greater", np.greater),
    ("greater_equal", np.greater_equal),
    ("less", np.less),
    ("equal", np.equal),
]
COMPARISON_SHAPES = [
    ((4, 3), (4, 3)),
    ((4, 3), (3,)),
    ((4, 1), (1, 5)),
    ((3,), ()),
    ((-1, 3), (3,)),
]


def _as_float(fn):
    return lambda x, y: fn(x, y).astype(np.float64)


# Small integers, so that ties occur and the equal cases are exercised; the output is 0/1.
COMPARISON_CASES = [
    OpCase(
        op,
        (Arg(shape_a, small_integers), Arg(shape_b, small_integers)),
        _as_float(fn),
        gradient=NO_GRADIENT,
        exact=True,
    )
    for op, fn in COMPARISONS
    for shape_a, shape_b in COMPARISON_SHAPES
] + [
    # x * (x > 0) has the derivative (x > 0): the comparison itself adds nothing.
    OpCase(
        "greater",
        (Arg((4, 5), away_from_zero),),
        lambda v: v * (v > 0),
        name="adds-no-gradient",
        build=lambda g, n, attrs: g.op("mul", [n[0], g.op("greater", [n[0], g.constant(0.0)])]),
    )
]


def _select(c, x, y):
    return np.where(c != 0, x, y)


SELECT_SHAPES = [
    ((4, 3), (4, 3), (4, 3)),
    ((4, 1), (4, 3), (3,)),
    ((3,), (), (2, 3)),
    ((-1, 3), (3,), (-1, 1)),
]
SELECT_CASES = [
    OpCase(
        "select",
        (
            Arg(shape_c, conditions, grad=False, leaf=None if -1 in shape_c else "constant"),
            Arg(shape_a),
            Arg(shape_b),
        ),
        _select,
    )
    for shape_c, shape_a, shape_b in SELECT_SHAPES
] + [
    OpCase(
        "select",
        (
            Arg((1, 4), fixed([[0.0, 2.5, -1.0, 0.0]]), grad=False, leaf="constant"),
            Arg((1, 4)),
            Arg((1, 4)),
        ),
        _select,
        name="any-nonzero-is-true",
    )
]

# round_bf16's gradient passes unchanged; round_bf16_grad is the identity whose gradient is
# rounded to bfloat16. Both are defined, not derived: their VJPs are written out.
BF16_CASES = [
    OpCase(
        "round_bf16",
        (Arg(shape, lambda rng, s: rng.standard_normal(s) * 10.0 ** rng.integers(-30, 30, s)),),
        round_to_bfloat16,
        gradient=VJP,
        vjp=lambda x, cot: [cot],
        exact=True,
        grad_tol=EXACT,
    )
    for shape in [(5, 7), (-1, 33)]
] + [
    OpCase(
        "round_bf16_grad",
        (Arg(shape),),
        lambda x: x,
        gradient=VJP,
        vjp=lambda x, cot: [round_to_bfloat16(cot)],
        exact=True,
        grad_tol=EXACT,
    )
    for shape in [(5, 7), (-1, 33)]
]


def _normal_cdf(x):
    return 0.5 * (1.0 + erf(x / np.sqrt(2.0)))


def _gelu(x):
    return x * _normal_cdf(x)


def _gelu_grad(x, g):
    density = np.exp(-0.5 * np.square(x)) / np.sqrt(2.0 * np.pi)
    return g * (_normal_cdf(x) + x * density)


def _wide(rng: np.random.Generator, shape) -> np.ndarray:
    """Values over [-12, 12], so both tails of erf and the underflowing density are met."""
    return rng.uniform(-12.0, 12.0, shape)


# gelu and gelu_grad (x, g): the exact GELU and g times its derivative, against the erf
# formula; the gradients (gelu_grad's own is the second derivative) by finite differences.
GELU_CASES = (
    [OpCase("gelu", (Arg(shape),), _gelu) for shape in UNARY_SHAPES]
    + [OpCase("gelu", (Arg((7, 33), _wide),), _gelu, name="tails", gradient=NO_GRADIENT)]
    + [
        OpCase("gelu_grad", (Arg(shape_x), Arg(shape_g)), _gelu_grad)
        for shape_x, shape_g in BROADCAST_SHAPES
    ]
    + [
        OpCase(
            "gelu_grad",
            (Arg((7, 33), _wide), Arg((7, 33))),
            _gelu_grad,
            name="tails",
            gradient=NO_GRADIENT,
        )
    ]
    + [
        OpCase(
            "gelu", (Arg((2, 3), with_nan(any_values)),), _gelu, name="nan", gradient=NO_GRADIENT
        ),
        OpCase(
            "gelu_grad",
            (Arg((2, 3), with_nan(any_values)), Arg((3,), with_nan(any_values, every=2))),
            _gelu_grad,
            name="nan",
            gradient=NO_GRADIENT,
        ),
    ]
)

# NaN held in a variable (inputs refuse it) propagates as in NumPy and torch: sign(NaN) is 0
# as in torch, comparisons with NaN are false.
NAN_UNARY_CASES = [
    OpCase(op, (Arg((2, 3), with_nan(domain)),), fn, name="nan", gradient=NO_GRADIENT)
    for op, fn, domain in UNARY
    if op != "sign"
] + [
    OpCase(
        "sign",
        (Arg((2, 3), with_nan(away_from_zero)),),
        sign_like_torch,
        name="nan",
        gradient=NO_GRADIENT,
    )
]
NAN_BINARY_CASES = (
    [
        OpCase(
            op,
            (Arg((2, 3), with_nan(domain_a)), Arg((3,), with_nan(domain_b, every=2))),
            fn,
            name="nan",
            gradient=NO_GRADIENT,
        )
        for op, fn, domain_a, domain_b in BINARY
    ]
    + [
        OpCase(
            op,
            (Arg((2, 3), with_nan(small_integers)), Arg((3,), with_nan(small_integers, every=2))),
            _as_float(fn),
            name="nan",
            gradient=NO_GRADIENT,
            exact=True,
        )
        for op, fn in COMPARISONS
    ]
    + [
        OpCase(
            "select",
            (
                Arg((2, 3), conditions, grad=False, leaf="constant"),
                Arg((2, 3), with_nan(any_values)),
                Arg((2, 3), with_nan(any_values, every=2)),
            ),
            _select,
            name="nan",
            gradient=NO_GRADIENT,
        )
    ]
)

CASES = [
    *UNARY_CASES,
    *KINK_CASES,
    *BINARY_CASES,
    *COMPARISON_CASES,
    *SELECT_CASES,
    *BF16_CASES,
    *GELU_CASES,
    *NAN_UNARY_CASES,
    *NAN_BINARY_CASES,
]
