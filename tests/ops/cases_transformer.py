"""Ops of sequence models: gather and scatter_add (an embedding and its gradient), batched
matmul with broadcasting batch dims, and layer_norm / rms_norm with their gradient and
affine-gradient ops; each with the symbolic sequence dim, against NumPy, and the fused kernels
against the ops' decompositions."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

from .domains import labels
from .harness import BATCH, NO_GRADIENT, SEQ, Arg, ErrorCase, OpCase, ScenarioCase

INDICES = "int32"


def _gather(table: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return table[indices]


def _scatter_add(rows: int):
    def reference(updates: np.ndarray, indices: np.ndarray) -> np.ndarray:
        out = np.zeros((rows, updates.shape[-1]))
        np.add.at(out, indices.reshape(-1), updates.reshape(-1, updates.shape[-1]))
        return out

    return reference


def _same_index(index: int):
    """Every index the same: all updates land on one row."""
    return lambda rng, shape: np.full(shape, index, dtype=np.int32)


GATHER_CASES = [
    OpCase("gather", (Arg((7, 4)), Arg((5,), labels(7), dtype=INDICES)), _gather),
    OpCase("gather", (Arg((7, 4)), Arg((BATCH, SEQ), labels(7), dtype=INDICES)), _gather),
    OpCase("gather", (Arg((6, 3)), Arg((BATCH, 2, 3), labels(6), dtype=INDICES)), _gather),
    OpCase(
        "gather",
        (Arg((5, 3)), Arg((BATCH, 4), _same_index(2), dtype=INDICES)),
        _gather,
        name="one-row-many-times",
    ),
    # Enough rows that the copy is split across threads.
    OpCase(
        "gather",
        (Arg((50, 700)), Arg((BATCH, SEQ), labels(50), dtype=INDICES)),
        _gather,
        name="parallel",
        gradient=NO_GRADIENT,
        seq_lengths=(40, 3),
    ),
]

SCATTER_ADD_CASES = [
    OpCase(
        "scatter_add",
        (Arg((5, 3)), Arg((5,), labels(4), dtype=INDICES)),
        _scatter_add(4),
        attrs={"rows": 4},
    ),
    OpCase(
        "scatter_add",
        (Arg((BATCH, SEQ, 4)), Arg((BATCH, SEQ), labels(6), dtype=INDICES)),
        _scatter_add(6),
        attrs={"rows": 6},
    ),
    OpCase(
        "scatter_add",
        (Arg((BATCH, 3, 2)), Arg((BATCH, 3), _same_index(0), dtype=INDICES)),
        _scatter_add(3),
        attrs={"rows": 3},
        name="one-row",
    ),
    OpCase(
        "scatter_add",
        (Arg((BATCH, SEQ, 600)), Arg((BATCH, SEQ), labels(10), dtype=INDICES)),
        _scatter_add(10),
        attrs={"rows": 10},
        name="parallel",
        gradient=NO_GRADIENT,
        seq_lengths=(40, 2),
    ),
]


def _batched_matmul(transpose_a: bool, transpose_b: bool):
    def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.matmul(
            np.swapaxes(a, -1, -2) if transpose_a else a,
            np.swapaxes(b, -1, -2) if transpose_b else b,
        )

    return reference


def _matmul_case(shape_a, shape_b, transpose_a=False, transpose_b=False, **kwargs) -> OpCase:
    return OpCase(
        "matmul",
        (Arg(shape_a), Arg(shape_b)),
        _batched_matmul(transpose_a, transpose_b),
        attrs={"transpose_a": transpose_a, "transpose_b": transpose_b},
        **kwargs,
    )


BATCHED_MATMUL_CASES = [
    _matmul_case((2, 3, 4), (4, 5), name="batched"),
    _matmul_case((2, 3, 4), (2, 4, 5), name="batched"),
    _matmul_case((4, 3), (2, 3, 5), name="batched"),
    # Both sides broadcast: (2, 1) against (3,) batch dims.
    _matmul_case((2, 1, 3, 4), (3, 4, 5), name="batched"),
    _matmul_case((2, 4, 3), (2, 5, 4), True, True, name="batched"),
    _matmul_case((2, 4, 3), (1, 4, 5), True, False, name="batched"),
    _matmul_case((2, 3, 4), (2, 5, 4), False, True, name="batched"),
    # A dense layer over a sequence, and attention's scores and weighted values.
    _matmul_case((BATCH, SEQ, 4), (4, 5), name="batched"),
    _matmul_case((BATCH, 2, SEQ, 3), (BATCH, 2, SEQ, 3), False, True, name="batched"),
    _matmul_case((BATCH, 2, SEQ, SEQ), (BATCH, 2, SEQ, 3), name="batched"),
    # Many products split across threads, and large ones each split across the pool.
    _matmul_case((16, 33, 40), (16, 40, 20), name="batched-parallel", gradient=NO_GRADIENT),
    _matmul_case((2, 70, 130), (2, 130, 40), name="batched-large", gradient=NO_GRADIENT),
    _matmul_case((2, 70, 130), (130, 40), name="batched-one-product", gradient=NO_GRADIENT),
]


def _statistics(x: np.ndarray, eps: float, centre: bool) -> tuple[np.ndarray, np.ndarray]:
    centred = x - x.mean(-1, keepdims=True) if centre else x
    rstd = 1.0 / np.sqrt((centred**2).mean(-1, keepdims=True) + eps)
    return centred * rstd, rstd


def _norm(eps: float, centre: bool):
    def reference(x, weight=None, bias=None):
        y, _ = _statistics(x, eps, centre)
        if weight is not None:
            y = y * weight
        return y + bias if bias is not None else y

    return reference


def _norm_grad(eps: float, centre: bool):
    def reference(x, g, weight=None):
        xhat, rstd = _statistics(x, eps, centre)
        gw = g * weight if weight is not None else g
        inner = gw - xhat * (gw * xhat).mean(-1, keepdims=True)
        if centre:
            inner = inner - gw.mean(-1, keepdims=True)
        return rstd * inner

    return reference


def _norm_affine_grad(eps: float, centre: bool):
    """The weight's and the bias's gradients: sums over every row of g xhat and of g."""

    def reference(x, g):
        xhat, _ = _statistics(x, eps, centre)
        dim = x.shape[-1]
        return np.stack([(g * xhat).reshape(-1, dim).sum(0), g.reshape(-1, dim).sum(0)])

    return reference


NORM_CASES = (
    [
        OpCase(op, args, _norm(eps, op == "layer_norm"), attrs={"eps": eps}, name=name)
        for op, eps in [("layer_norm", 1e-5), ("rms_norm", 1e-6)]
        for name, args in [
            ("affine", (Arg((BATCH, SEQ, 6)), Arg((6,)), Arg((6,)))),
            ("weight", (Arg((BATCH, SEQ, 6)), Arg((6,)))),
            ("plain", (Arg((4, 5)),)),
            ("wide", (Arg((BATCH, 300)), Arg((300,)))),
        ]
        if op == "layer_norm" or name != "affine"
    ]
    + [
        # Enough rows that they are split across threads.
        OpCase(
            op,
            (Arg((BATCH, SEQ, 256)), Arg((256,))),
            _norm(1e-5, op == "layer_norm"),
            attrs={"eps": 1e-5},
            name="many-rows",
            gradient=NO_GRADIENT,
            seq_lengths=(80, 3),
        )
        for op in ("layer_norm", "rms_norm")
    ]
    + [
        OpCase(
            op,
            args,
            _norm_grad(eps, op == "layer_norm_grad"),
            attrs={"eps": eps},
            name=name,
            gradient=NO_GRADIENT,
        )
        for op, eps in [("layer_norm_grad", 1e-5), ("rms_norm_grad", 1e-6)]
        for name, args in [
            ("weight", (Arg((BATCH, SEQ, 6)), Arg((BATCH, SEQ, 6)), Arg((6,)))),
            ("plain", (Arg((4, 5)), Arg((4, 5)))),
        ]
    ]
    + [
        OpCase(
            op,
            (Arg((BATCH, SEQ, 256)), Arg((BATCH, SEQ, 256)), Arg((256,))),
            _norm_grad(1e-5, op == "layer_norm_grad"),
            attrs={"eps": 1e-5},
            name="many-rows",
            gradient=NO_GRADIENT,
            seq_lengths=(80, 3),
        )
        for op in ("layer_norm_grad", "rms_norm_grad")
    ]
    + [
        OpCase(
            op,
            args,
            _norm_affine_grad(eps, op == "layer_norm_affine_grad"),
            attrs={"eps": eps},
            name=name,
            gradient=NO_GRADIENT,
            **extra,
        )
        for op, eps in [("layer_norm_affine_grad", 1e-5), ("rms_norm_affine_grad", 1e-6)]
        for name, args, extra in [
            ("sequence", (Arg((BATCH, SEQ, 6)), Arg((BATCH, SEQ, 6))), {}),
            ("plain", (Arg((4, 5)), Arg((4, 5))), {}),
            # Several blocks of rows, summed across threads in a fixed order.
            (
                "many-rows",
                (Arg((BATCH, SEQ, 130)), Arg((BATCH, SEQ, 130))),
                {"seq_lengths": (80, 3)},
            ),
        ]
    ]
)


CASES = [*GATHER_CASES, *SCATTER_ADD_CASES, *BATCHED_MATMUL_CASES, *NORM_CASES]


# -- scenarios -------------------------------------------------------------------------------


def step_ops(line: str) -> list[str]:
    """The ops of one plan line: "layer_norm_grad,layer_norm_affine_grad (2, 8) ..." is a
    step that runs both (a kernel merging them); a fused group "fused[add,mul]" is none."""
    head = line.split(" ", 1)[0]
    return [] if head.startswith(("fused[", "tiled{")) else head.split(",")


def _run_with_and_without(build, feeds, op: str, backend: str) -> list[np.ndarray]:
    """Runs `build(g) -> (inputs, outputs)` with the op's kernel and with its decomposition,
    checking each plan really used (or avoided) the kernel, and returns both results."""
    results = []
    for options in ({}, {"without_kernels": [op]}):
        g = _core.Graph()
        inputs, outputs = build(g)
        engine = _core.Engine(g, seed=0, backend=backend, options=options)
        engine.define("f", inputs=inputs, outputs=outputs, effects=[], advance_rng=False)
        plan = engine.describe("f", feeds[0].shape[0], {"seq": feeds[0].shape[1]})
        fused = any(op in step_ops(line) for line in plan)
        assert fused == (not options), (op, options, plan)
        results.append([np.asarray(r) for r in engine.run("f", feeds)])
    return results


def kernels_match_their_decompositions(backend: str, rng: np.random.Generator) -> None:
    tokens = rng.integers(0, 9, (3, 5)).astype(np.int32)
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)
    table = rng.standard_normal((9, 8)).astype(np.float32)
    affine = rng.standard_normal((2, 8)).astype(np.float32)

    def embedding(g):
        ids = g.input("ids", ("batch", "seq"), "int32")
        rows = g.constant(table)
        looked_up = g.op("gather", [rows, ids])
        scattered = g.op("scatter_add", [looked_up, ids], {"rows": 9})
        return [ids], [looked_up, scattered]

    for op in ("gather", "scatter_add"):
        kernel, reference = _run_with_and_without(embedding, [tokens], op, backend)
        for got, want in zip(kernel, reference):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    norm_ops = [("layer_norm", "layer_norm_grad"), ("rms_norm", "rms_norm_grad")]
    for op, grad_op in norm_ops:
        affine_op = grad_op.replace("_grad", "_affine_grad")

        def normalized(g, op=op, grad_op=grad_op, affine_op=affine_op):
            xs = g.input("x", ("batch", "seq", 8))
            cot = g.input("g", ("batch", "seq", 8))
            weight, bias = g.constant(affine[0]), g.constant(affine[1])
            inputs = [xs, weight, bias] if op == "layer_norm" else [xs, weight]
            y = g.op(op, inputs, {"eps": 1e-5})
            dx = g.op(grad_op, [xs, cot, weight], {"eps": 1e-5})
            sums = g.op(affine_op, [xs, cot], {"eps": 1e-5})
            return [xs, cot], [y, dx, sums]

        cotangent = rng.standard_normal(x.shape).astype(np.float32)
        for which in (op, grad_op, affine_op):
            kernel, reference = _run_with_and_without(normalized, [x, cotangent], which, backend)
            for got, want in zip(kernel, reference):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _embedding_step(backend: str):
    """An embedding lookup whose function also writes another variable."""
    g = _core.Graph()
    ids = g.input("ids", ("batch", "seq"), "int32")
    table = g.variable("table", (4, 2))
    counter = g.variable("counter", (1,))
    looked_up = g.op("gather", [table, ids])
    total = g.op("sum", [looked_up], {"axes": []})
    bump = g.op("assign", [counter, g.op("add", [counter, g.constant(1.0)])])
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[ids], outputs=[total], effects=[bump], advance_rng=False)
    return engine


def indices_outside_the_table_are_refused_by_name(backend: str, rng: np.random.Generator) -> None:
    engine = _embedding_step(backend)
    engine.run("f", [np.array([[0, 3]], np.int32)])
    assert engine.get_variable("counter")[0] == 1.0
    for bad, value, where in [(4, 4, r"\(1, 0\)"), (-1, -1, r"\(1, 0\)")]:
        ids = np.array([[0, 1, 2], [bad, 0, 1]], np.int32)
        with pytest.raises(
            ValueError,
            match=rf"\[gather\] index {value} at position {where} of the indices of shape "
            r"\(2, 3\) is out of range for a table of 4 rows \(0 to 3\)",
        ):
            engine.run("f", [ids])
        # The check runs before the function's effects: nothing was written.
        assert engine.get_variable("counter")[0] == 1.0


def scatter_add_refuses_indices_outside_its_rows(backend: str, rng: np.random.Generator) -> None:
    g = _core.Graph()
    ids = g.input("ids", (-1,), "int32")
    updates = g.input("u", (-1, 2))
    out = g.op("scatter_add", [updates, ids], {"rows": 3})
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[updates, ids], outputs=[out], effects=[], advance_rng=False)
    with pytest.raises(ValueError, match=r"\[scatter_add\] index 3 at position \(1,\)"):
        engine.run("f", [np.ones((2, 2), np.float32), np.array([0, 3], np.int32)])


def a_gradient_through_the_indices_is_zero(backend: str, rng: np.random.Generator) -> None:
    # Integer indices carry no gradient: only the table's flows back, as a scatter-add.
    g = _core.Graph()
    ids = g.input("ids", ("batch", "seq"), "int32")
    table = g.variable("table", (5, 3))
    loss = g.op("sum", [g.op("gather", [table, ids])], {"axes": []})
    (grad,) = g.gradients(loss, [table])
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("f", inputs=[ids], outputs=[grad], effects=[], advance_rng=False)
    plan = engine.describe("f", 2, {"seq": 3})
    assert any(line.startswith("scatter_add") for line in plan), plan
    assert not any("one_hot" in line or "matmul" in line for line in plan), plan
    ids_value = np.array([[0, 0, 4], [4, 4, 1]], np.int32)
    want = np.zeros((5, 3))
    np.add.at(want, ids_value.reshape(-1), 1.0)
    np.testing.assert_array_equal(engine.run("f", [ids_value])[0], want)


SCENARIOS = [
    ScenarioCase("gather", "kernels-match-decompositions", kernels_match_their_decompositions),
    ScenarioCase("gather", "indices-out-of-range", indices_outside_the_table_are_refused_by_name),
    ScenarioCase(
        "scatter_add", "indices-out-of-range", scatter_add_refuses_indices_outside_its_rows
    ),
    ScenarioCase("gather", "no-one-hot-in-the-gradient", a_gradient_through_the_indices_is_zero),
]


def _args(*shapes, dtype=None) -> tuple[Arg, ...]:
    return tuple(Arg(shape, dtype=dtype) for shape in shapes)


ERROR_CASES = [
    ErrorCase("gather", _args((5, 3), (4,)), patterns=(r"expects int32 indices, got float32",)),
    ErrorCase(
        "gather",
        (Arg((5, 3, 2)), Arg((4,), dtype=INDICES)),
        patterns=(r"table of shape \(rows, dim\).*got \(5, 3, 2\)",),
    ),
    ErrorCase(
        "scatter_add",
        (Arg((4, 3)), Arg((5,), dtype=INDICES)),
        {"rows": 6},
        patterns=(r"updates \(4, 3\) and indices \(5,\)",),
    ),
    ErrorCase(
        "scatter_add",
        (Arg((4, 3)), Arg((4,), dtype=INDICES)),
        {"rows": 0},
        patterns=(r"rows must be positive, got 0",),
    ),
    ErrorCase(
        "matmul",
        _args((BATCH, 2, 3, 4), (3, 4, 5)),
        patterns=(r"batch dimensions \(batch, 2\) and \(3,\)",),
    ),
    ErrorCase("matmul", _args((3,), (3, 4)), patterns=(r"rank 2 or more, got \(3,\) x \(3, 4\)",)),
    ErrorCase(
        "layer_norm",
        _args((BATCH, 6), (5,)),
        {"eps": 1e-5},
        patterns=(r"weight must have shape \(6,\) .*got \(5,\)",),
    ),
    ErrorCase(
        "layer_norm",
        _args((BATCH, 6), (6,), (4,)),
        {"eps": 1e-5},
        patterns=(r"bias must have shape \(6,\) .*got \(4,\)",),
    ),
    ErrorCase(
        "rms_norm",
        _args((BATCH, 6), (6,), (6,)),
        {"eps": 1e-5},
        patterns=(r"expects 1 to 2 inputs, got 3",),
    ),
    ErrorCase(
        "rms_norm",
        (Arg((BATCH, SEQ)),),
        {"eps": 1e-5},
        patterns=(r"last axis, which must have a known size",),
    ),
    ErrorCase(
        "layer_norm_grad",
        _args((BATCH, 6), (BATCH, 5)),
        {"eps": 1e-5},
        patterns=(r"gradient of shape \(batch, 5\) does not match x of shape \(batch, 6\)",),
    ),
]
