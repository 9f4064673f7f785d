"""Bad inputs and attributes: each case builds an op that the graph must refuse with a
ValueError naming the op and, where the patterns say so, the shapes and values at fault."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

from .harness import Arg, ErrorCase, ScenarioCase, shape_pattern


def _args(*shapes, dtype=None) -> tuple[Arg, ...]:
    return tuple(Arg(shape, dtype=dtype) for shape in shapes)


def _conv(padding=0, dilation=(1, 1), groups=1, **extra) -> dict:
    pairs = {"stride": [1, 1], "padding": [padding, padding], "dilation": list(dilation)}
    return {**pairs, "groups": groups, **extra}


POOL = {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}

SHAPE_CASES = (
    [
        ErrorCase(
            "matmul",
            _args((2, 3), (4, 5)),
            patterns=(shape_pattern((2, 3)), shape_pattern((4, 5))),
        ),
    ]
    + [
        # The message names the op and the first shape it received.
        ErrorCase(op, _args(*shapes), attrs, patterns=(shape_pattern(shapes[0]),))
        for op, shapes, attrs in [
            ("add", [(4, 3), (5,)], {}),
            ("mul", [(2, 3), (3, 2)], {}),
            ("select", [(4, 3), (4, 3), (2, 3)], {}),
            ("concat", [(2, 3), (3, 4)], {"axis": 0}),
            ("reshape", [(2, 3)], {"shape": [4, 2]}),
            ("broadcast_to", [(3, 2)], {"shape": [3, 4]}),
            ("matmul", [(2, 3), (2, 3)], {"transpose_a": False, "transpose_b": False}),
            ("matmul", [(2, 3, 4), (3, 4, 5)], {}),  # batch dims 2 and 3 do not broadcast
        ]
    ]
    + [
        ErrorCase(
            "channel_moments",
            _args((-1,)),
            patterns=(r"\[channel_moments\] .* at least 2 dims, got shape \(batch,\)",),
        ),
    ]
)

ATTRIBUTE_CASES = [
    ErrorCase(op, _args(shape), attrs)
    for op, shape, attrs in [
        ("sum", (2, 3), {"axes": [2]}),
        ("mean", (2, 3), {"axes": [-3]}),
        ("argmax", (2, 3), {"axis": 5}),
        ("transpose", (2, 3), {"perm": [0, 0]}),
        ("transpose", (2, 3, 4), {"perm": [1, 0]}),
        ("slice", (5, 4), {"axis": 0, "start": 3, "end": 7}),
        ("slice", (5, 4), {"axis": 2, "start": 0, "end": 1}),
    ]
] + [
    ErrorCase("pad", _args((2, 3)), {"axis": 1, "before": -1, "after": 0}, patterns=(">= 0",)),
    ErrorCase("pad", _args((-1, 3)), {"axis": 0, "before": 1, "after": 0}, patterns=("batch",)),
    ErrorCase("exp", _args((2, 3)), {"axis": 1}, patterns=("axis",), name="irrelevant-attr"),
    ErrorCase("argmax", _args((2, 3)), {"axis": "one"}, patterns=("axis",), name="wrong-type"),
]

ARITY_AND_DTYPE_CASES = [
    ErrorCase("frobnicate", _args((2, 3))),
    ErrorCase("add", _args((2, 3)), name="one-input"),
    ErrorCase("exp", _args((2, 3), (2, 3)), name="two-inputs"),
    ErrorCase("one_hot", _args((4,)), {"depth": 3}, name="float-labels"),
    ErrorCase("one_hot", _args((-1,), dtype="int32"), {"depth": 0}, name="depth-0"),
    ErrorCase("exp", _args((-1,), dtype="int32"), name="int-input"),
    ErrorCase("assign", _args((3,), (4,)), name="value-of-another-shape"),
    ErrorCase(
        "assign",
        _args((3,)),
        name="to-a-computed-node",
        prepare=lambda g, nodes: [g.op("exp", nodes), nodes[0]],
    ),
]

CONV_CASES = [
    ErrorCase("conv2d", _args((3, 8, 8), (4, 3, 3, 3)), _conv(), (shape_pattern((3, 8, 8)),)),
    ErrorCase(
        "conv2d",
        _args((2, 2, 8, 8), (4, 3, 3, 3)),
        _conv(),
        (shape_pattern((2, 2, 8, 8)), shape_pattern((4, 3, 3, 3))),
    ),
    ErrorCase(
        "conv2d", _args((2, 6, 8, 8), (4, 2, 3, 3)), _conv(groups=4), (r"groups\D*4", r"\b6\b")
    ),
    # A kernel of 7 over 4 rows padded to 6.
    ErrorCase(
        "conv2d",
        _args((1, 2, 4, 4), (3, 2, 7, 7)),
        _conv(padding=1),
        (r"\b7\b", r"\b6\b", shape_pattern((1, 2, 4, 4))),
    ),
    # A 3x3 kernel dilated by 5 spans 11 rows of 8.
    ErrorCase(
        "conv2d", _args((2, 2, 8, 8), (3, 2, 3, 3)), _conv(dilation=(5, 1)), (r"\b11\b", r"\b8\b")
    ),
]

POOL_CASES = [
    ErrorCase(
        op,
        _args((2, 3, 6, 6)),
        {"kernel_size": kernel, "stride": [1, 1], "padding": padding},
        patterns,
    )
    for op in ("max_pool2d", "avg_pool2d")
    for kernel, padding, patterns in [
        ([3, 3], [2, 2], (r"\b2\b", r"\b3\b")),  # padding more than half the kernel
        ([2, 4], [0, 3], (r"\b3\b", r"\b4\b")),
        ([7, 2], [0, 0], (r"\b7\b", shape_pattern((2, 3, 6, 6)))),  # kernel larger than input
    ]
] + [
    ErrorCase(op, _args((3, 6, 6)), {"kernel_size": [2, 2]}, (shape_pattern((3, 6, 6)),))
    for op in ("max_pool2d", "avg_pool2d")
]

# A gradient of the wrong shape names the shape it got and the shape the output has.
GRADIENT_SHAPE_CASES = [
    ErrorCase(
        "conv2d_input_grad",
        _args((2, 4, 7, 8), (4, 3, 3, 3)),
        _conv(padding=1, shape=[2, 3, 8, 8]),
        (shape_pattern((2, 4, 7, 8)), shape_pattern((2, 4, 8, 8))),
    ),
    ErrorCase(
        "conv2d_weight_grad",
        _args((2, 3, 8, 8), (2, 4, 7, 8)),
        _conv(padding=1, shape=[4, 3, 3, 3]),
        (shape_pattern((2, 4, 7, 8)), shape_pattern((2, 4, 8, 8))),
    ),
    ErrorCase(
        "max_pool2d_grad",
        _args((2, 3, 8, 8), (2, 3, 5, 4)),
        POOL,
        (shape_pattern((2, 3, 5, 4)), shape_pattern((2, 3, 4, 4))),
    ),
    ErrorCase(
        "avg_pool2d_grad",
        _args((2, 3, 5, 4)),
        {**POOL, "shape": [2, 3, 8, 8]},
        (shape_pattern((2, 3, 5, 4)), shape_pattern((2, 3, 4, 4))),
    ),
]

CASES = [
    *SHAPE_CASES,
    *ATTRIBUTE_CASES,
    *ARITY_AND_DTYPE_CASES,
    *CONV_CASES,
    *POOL_CASES,
    *GRADIENT_SHAPE_CASES,
]


# -- errors a run raises ---------------------------------------------------------------------


def one_hot_refuses_labels_outside_its_depth(backend, rng):
    g = _core.Graph()
    y = g.input("y", (-1,), "int32")
    encoded = g.op("one_hot", [y], {"depth": 3})
    eng = _core.Engine(g, seed=0, backend=backend)
    eng.define("f", inputs=[y], outputs=[encoded], effects=[], advance_rng=False)
    for labels, shown in (([0, 5], "label 5 at index 1"), ([-1, 2], "label -1 at index 0")):
        with pytest.raises(ValueError, match=rf"input 'y' holds {shown}, outside .*\[0, 3\)"):
            eng.run("f", [np.array(labels, np.int32)])
    np.testing.assert_array_equal(eng.run("f", [np.array([2], np.int32)])[0], [[0.0, 0.0, 1.0]])


SCENARIOS = [
    ScenarioCase("one_hot", "labels-outside-the-depth", one_hot_refuses_labels_outside_its_depth),
]
