"""Layout ops (reshape, transpose, broadcast_to, slice, concat, pad), matmul, dtype ops (cast,
one_hot) and stop_gradient."""

from __future__ import annotations

import numpy as np

from .domains import any_values, labels
from .harness import EXACT, NO_GRADIENT, VJP, Arg, OpCase, Tolerance

RESHAPE_CASES = [
    OpCase("reshape", (Arg(shape),), lambda v, t=target: v.reshape(t), attrs={"shape": target})
    for shape, target in [
        ((2, 3, 4), [6, 4]),
        ((4, 6), [2, 2, 6]),
        ((3, 4), [12]),
        ((12,), [3, 4]),
        ((2, 6), [2, 6]),
    ]
] + [
    # The batch dimension is fixed per run: a plan per size, the first size again at the end.
    OpCase(
        "reshape",
        (Arg((-1, 6)),),
        lambda v: np.tanh(v).reshape(-1, 2, 3),
        attrs={"shape": [-1, 2, 3]},
        name="of-tanh",
        build=lambda g, nodes, attrs: g.op("reshape", [g.op("tanh", nodes)], attrs),
        batches=(4, 9, 1, 4),
        forward_tol=Tolerance(1e-5, 1e-6),
    )
]

TRANSPOSE_CASES = [
    OpCase("transpose", (Arg(shape),), lambda v, p=perm: np.transpose(v, p), attrs={"perm": perm})
    for shape, perm in [
        ((3, 4), [1, 0]),
        ((2, 3, 4), [2, 0, 1]),
        ((2, 3, 4), [1, 2, 0]),
        ((2, 3, 4), [0, 2, 1]),
        ((-1, 2, 3), [0, 2, 1]),
        ((-1, 3), [1, 0]),
    ]
]

BROADCAST_CASES = [
    OpCase(
        "broadcast_to",
        (Arg(shape),),
        lambda v, t=target: np.broadcast_to(v, t),
        attrs={"shape": list(target)},
    )
    for shape, target in [
        ((3,), (4, 3)),
        ((4, 1), (4, 5)),
        ((), (2, 3)),
        ((1, 3), (2, 4, 3)),
        ((2, 1, 3), (2, 4, 3)),
    ]
] + [
    OpCase(
        "broadcast_to",
        (Arg((-1, 1)),),
        lambda v: np.broadcast_to(v, (v.shape[0], 4)),
        attrs={"shape": [-1, 4]},
    )
]


def _slice(axis, start, end):
    def reference(v):
        index = [slice(None)] * v.ndim
        index[axis] = slice(start, end)
        return v[tuple(index)]

    return reference


SLICE_CASES = [
    OpCase(
        "slice",
        (Arg(shape),),
        _slice(axis, start, end),
        attrs={"axis": axis, "start": start, "end": end},
    )
    for shape, axis, start, end in [
        ((5, 4), 0, 1, 4),
        ((5, 4), 1, 0, 2),
        ((2, 3, 4), 2, 1, 3),
        ((2, 3, 4), 1, 2, 3),
        ((6,), 0, 0, 6),
        ((-1, 5), 1, 1, 3),
        ((-1, 5), -1, 3, 5),
    ]
]

CONCAT_CASES = [
    OpCase(
        "concat",
        tuple(Arg(s) for s in shapes),
        lambda *vs, axis=axis: np.concatenate(vs, axis=axis),
        attrs={"axis": axis},
    )
    for shapes, axis in [
        ([(2, 3), (4, 3)], 0),
        ([(2, 3), (2, 1), (2, 2)], 1),
        ([(2, 3, 4), (2, 1, 4)], 1),
        ([(2, 3), (2, 2)], -1),
        ([(3,), (2,)], 0),
        ([(-1, 2), (-1, 3)], 1),
    ]
]


def _pad(axis, before, after):
    def reference(v):
        widths = [(0, 0)] * v.ndim
        widths[axis] = (before, after)
        return np.pad(v, widths)

    return reference


PAD_CASES = [
    OpCase(
        "pad",
        (Arg(shape),),
        _pad(axis, before, after),
        attrs={"axis": axis, "before": before, "after": after},
    )
    for shape, axis, before, after in [
        ((2, 3), 1, 1, 2),
        ((4, 3), 0, 2, 0),
        ((2, 3, 4), -1, 0, 3),
        ((2, 3, 4), 1, 1, 1),
        ((5,), 0, 0, 0),
        ((-1, 3), 1, 2, 1),
    ]
]


# Products summing hundreds of terms in float32, in order: rounding grows with the outputs' size.
DEEP_SUM_TOLERANCE = Tolerance(1e-5, 1e-5, scaled=True)


def _matmul(transpose_a, transpose_b):
    def reference(x, y):
        return (x.T if transpose_a else x) @ (y.T if transpose_b else y)

    return reference


def _matmul_case(shape_a, shape_b, transpose_a=False, transpose_b=False, **kwargs):
    return OpCase(
        "matmul",
        (Arg(shape_a), Arg(shape_b)),
        _matmul(transpose_a, transpose_b),
        attrs={"transpose_a": transpose_a, "transpose_b": transpose_b},
        **kwargs,
    )


MATMUL_CASES = [
    _matmul_case((4, 3) if ta else (3, 4), (5, 4) if tb else (4, 5), ta, tb)
    for ta in (False, True)
    for tb in (False, True)
] + [
    _matmul_case((-1, 4), (4, 3)),
    _matmul_case((-1, 4), (3, 4), transpose_b=True),
    # Contracting over the batch: the pattern of a dense layer's weight gradient.
    _matmul_case((-1, 4), (-1, 3), transpose_a=True),
    # Big enough that a blocked or threaded GEMM path is taken.
    _matmul_case((67, 129), (129, 33), name="larger-than-a-block", gradient=NO_GRADIENT),
    # Past gemm_small's rows, at most 128 columns: B packed on each call (AVX-512), rows not
    # a multiple of the register tile's, one panel and two, B stored either way.
    *[
        _matmul_case(a, b, transpose_b=tb, name=name, gradient=NO_GRADIENT)
        for a, b, tb, name in [
            ((50, 128), (128, 128), False, "packed-per-call"),
            ((37, 200), (200, 64), False, "packed-per-call-one-panel"),
            ((29, 96), (80, 96), True, "packed-per-call-b-transposed"),
        ]
    ],
    # A weight gradient's A^T B on the AVX-512 tile (K of 256 rows and more, N a multiple of
    # 64): rows not a multiple of the tile's, one and two panels of columns, K in two chunks. Each sum runs over K in
    # order, so its rounding grows with K and the outputs' size: atol scales with them.
    *[
        _matmul_case(
            a, b, transpose_a=True, name=name, gradient=NO_GRADIENT, forward_tol=DEEP_SUM_TOLERANCE
        )
        for a, b, name in [
            ((300, 40), (300, 64), "a-transposed-tile"),
            ((257, 71), (257, 128), "a-transposed-tile-2"),
            ((1100, 30), (1100, 64), "a-transposed-tile-chunks-of-k"),
        ]
    ],
]

CAST_CASES = [
    # Float to int32 truncates toward zero.
    OpCase(
        "cast",
        (Arg((2, 3), lambda rng, s: rng.uniform(-50.0, 50.0, s)),),
        lambda v: v.astype(np.int32),
        attrs={"dtype": "int32"},
        out_dtype="int32",
        gradient=NO_GRADIENT,
        exact=True,
    ),
    OpCase(
        "cast",
        (Arg((-1,), labels(10), dtype="int32"),),
        lambda v: v.astype(np.float64),
        attrs={"dtype": "float32"},
        name="labels",
        gradient=NO_GRADIENT,
        exact=True,
    ),
    OpCase(
        "cast",
        (Arg((-1, 3), lambda rng, s: rng.integers(-9, 9, s).astype(np.float64)),),
        lambda v: v,
        attrs={"dtype": "float32"},
        name="round-trip-through-int32",
        build=lambda g, nodes, attrs: g.op(
            "cast", [g.op("cast", nodes, {"dtype": "int32"})], attrs
        ),
        gradient=NO_GRADIENT,
        exact=True,
    ),
    OpCase("cast", (Arg((3, 4)),), lambda v: v, attrs={"dtype": "float32"}, name="identity"),
]

ONE_HOT_CASES = [
    OpCase(
        "one_hot",
        (Arg((-1,), labels(depth), dtype="int32"),),
        lambda y, depth=depth: np.eye(depth)[y],
        attrs={"depth": depth},
        batches=(6, 2, 6),  # a second batch size, then the first again
        gradient=NO_GRADIENT,
        exact=True,
    )
    for depth in (3, 10)
] + [
    OpCase(
        "one_hot",
        (Arg((2, 3), labels(4), dtype="int32"),),
        lambda y: np.eye(4)[y],
        attrs={"depth": 4},
        gradient=NO_GRADIENT,
        exact=True,
    )
]

# stop_gradient is the identity with a zero gradient: its VJP is written out.
STOP_GRADIENT_CASES = [
    OpCase(
        "stop_gradient",
        (Arg(shape),),
        lambda v: v,
        gradient=VJP,
        vjp=lambda v, cot: [np.zeros_like(v)],
        exact=True,
        grad_tol=EXACT,
    )
    for shape in [(3, 4), (-1, 2)]
] + [
    # sum(R * stop_gradient(x) * x): only the second factor carries a gradient, R * x.
    OpCase(
        "stop_gradient",
        (Arg((3, 4), any_values),),
        lambda v: v * v,
        name="times-its-input",
        build=lambda g, nodes, attrs: g.op("mul", [g.op("stop_gradient", nodes), nodes[0]]),
        gradient=VJP,
        vjp=lambda v, cot: [cot * v],
        grad_tol=Tolerance(1e-6, 0.0),
    )
]

CASES = [
    *RESHAPE_CASES,
    *TRANSPOSE_CASES,
    *BROADCAST_CASES,
    *SLICE_CASES,
    *CONCAT_CASES,
    *PAD_CASES,
    *MATMUL_CASES,
    *CAST_CASES,
    *ONE_HOT_CASES,
    *STOP_GRADIENT_CASES,
]
