"""Reductions (sum, mean, max, argmax) and channel_moments, including reductions over a batch
dimension whose size is only known when a plan is compiled."""

from __future__ import annotations

import numpy as np
import torch

from .domains import any_values, distinct, fixed, near, with_nan
from .harness import NO_GRADIENT, TORCH, Arg, OpCase, Tolerance
from .references import channel_moments

REDUCTION_SHAPES = [
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
    ((-1, 3), [0], False),
    ((-1, 3), [], False),
    ((-1, 3, 2), [1], True),
    ((-1, 4), [0, 1], True),
]
REDUCTIONS = [("sum", np.sum), ("mean", np.mean), ("max", np.max)]


def _reduction(fn, axes, keepdims):
    axis = tuple(axes) if axes else None
    return lambda v: fn(v, axis=axis, keepdims=keepdims)


REDUCTION_CASES = [
    OpCase(
        op,
        (Arg(shape, distinct if op == "max" else any_values),),
        _reduction(fn, axes, keepdims),
        attrs={"axes": axes, "keepdims": keepdims},
    )
    for op, fn in REDUCTIONS
    for shape, axes, keepdims in REDUCTION_SHAPES
]

# Ties in a max share its gradient evenly, as torch.amax's does.
MAX_TIE_CASE = OpCase(
    "max",
    (Arg((2, 4), fixed([[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, -1.0]])),),
    lambda v: v.max(axis=1),
    attrs={"axes": [1], "keepdims": False},
    name="ties",
    gradient=TORCH,
    torch_reference=lambda t: torch.amax(t, dim=1),
    grad_tol=Tolerance(1e-6, 0.0),
)


def _mean_of_squares(g, nodes, attrs):
    return g.op("mean", [g.op("square", [g.op("mul", nodes)])], attrs)


# The count of a mean over the batch axis is only known when the plan is compiled.
MEAN_OVER_BATCH_CASE = OpCase(
    "mean",
    (Arg((-1, 3), grad=False), Arg((3,))),
    lambda x, w: np.mean((x * w) ** 2),
    attrs={"axes": [], "keepdims": False},
    name="of-squares-over-the-batch",
    build=_mean_of_squares,
    batches=(5, 8),
    grad_tol=Tolerance(1e-5, 1e-6),  # a quadratic: central differences are exact
)

REDUCTION_NAN_CASES = [
    OpCase(
        op,
        (Arg((2, 3), with_nan(any_values, every=4)),),
        _reduction(fn, [1], False),
        attrs={"axes": [1], "keepdims": False},
        name="nan",
        gradient=NO_GRADIENT,
    )
    for op, fn in REDUCTIONS
]

# argmax of a row holding NaN is the first NaN's index, as np.argmax and torch.argmax give.
ARGMAX_NAN_CASE = OpCase(
    "argmax",
    (Arg((3, 5), with_nan(distinct, every=4)),),
    lambda v: np.argmax(v, axis=1).astype(np.float64),
    attrs={"axis": 1},
    name="nan",
    gradient=NO_GRADIENT,
    exact=True,
)

ARGMAX_CASES = [
    OpCase(
        "argmax",
        (Arg(shape, distinct),),
        lambda v, axis=axis: np.argmax(v, axis=axis).astype(np.float64),
        attrs={"axis": axis},
        gradient=NO_GRADIENT,
        exact=True,
    )
    for shape, axis in [((4, 5), 1), ((4, 5), 0), ((4, 5), -1), ((2, 3, 4), 1), ((-1, 5), 1)]
]

CHANNEL_MOMENTS_CASES = [
    OpCase("channel_moments", (Arg(shape),), channel_moments)
    for shape in [(4, 3), (3, 2, 5), (2, 3, 4, 5), (5, 2, 1, 40), (-1, 2, 3)]
] + [
    # A one-pass sum of squares in float32 would lose the variance of values near 1000.
    OpCase(
        "channel_moments",
        (Arg((-1, 3, 8, 8), near(1000.0)),),
        channel_moments,
        name="large-mean",
        gradient=NO_GRADIENT,
        batches=(64,),
        forward_tol=Tolerance(2e-4, 0.0),
    ),
    # The number of values per channel includes the batch, known only when the plan compiles.
    OpCase(
        "channel_moments",
        (Arg((-1, 2, 3), grad=False), Arg((2, 3))),
        lambda x, w: channel_moments(x * w),
        name="of-a-product-over-the-batch",
        build=lambda g, nodes, attrs: g.op("channel_moments", [g.op("mul", nodes)], attrs),
        batches=(3, 7),
    ),
]

CASES = [
    *REDUCTION_CASES,
    MAX_TIE_CASE,
    MEAN_OVER_BATCH_CASE,
    *REDUCTION_NAN_CASES,
    *ARGMAX_CASES,
    ARGMAX_NAN_CASE,
    *CHANNEL_MOMENTS_CASES,
]
