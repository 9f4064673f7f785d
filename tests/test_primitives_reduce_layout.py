"""Reductions, layout primitives (reshape, transpose, broadcast_to, slice, concat) and
matmul against NumPy, forward and backward, and graphs whose batch dimension is only known
at run time."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core
from primitive_checks import _any, _distinct, check_graph, check_op

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


# -- the batch dimension -------------------------------------------------------------------------


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


def _moments(v):
    axes = (0, *range(2, v.ndim))
    return np.stack([v.mean(axis=axes), v.var(axis=axes)])


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 4, 5), (5, 2, 1, 40)], ids=str)
def test_channel_moments(shape, rng):
    # Mean and biased variance per channel (axis 1): batch-norm statistics, and their gradient.
    check_op("channel_moments", [_any(rng, shape)], {}, _moments)


def test_channel_moments_keeps_precision_with_a_large_mean(rng):
    # A one-pass sum of squares in float32 would lose the variance of values near 1000.
    x = (1000.0 + rng.standard_normal((64, 3, 8, 8))).astype(np.float32)
    g = _core.Graph()
    node = g.input("x", (-1, 3, 8, 8), "float32")
    out = g.op("channel_moments", [node], {})
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[node], outputs=[out], effects=[], advance_rng=False)
    (got,) = eng.run("f", [x])
    np.testing.assert_allclose(got, _moments(x.astype(np.float64)), rtol=2e-4)


def test_channel_moments_gradient_counts_the_batch_at_run_time(rng):
    # The number of values per channel includes the batch, known only when the plan compiles.
    g = _core.Graph()
    x = g.input("x", (-1, 2, 3), "float32")
    w = g.variable("w", (2, 3))
    moments = g.op("channel_moments", [g.op("mul", [x, w], {})], {})
    weights = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    loss = g.op("sum", [g.op("mul", [moments, g.constant(weights)], {})], {"axes": []})
    (grad,) = g.gradients(loss, [w])
    eng = _core.Engine(g, seed=0)
    wv = rng.standard_normal((2, 3)).astype(np.float32)
    eng.set_variable("w", wv)
    eng.define("f", inputs=[x], outputs=[grad], effects=[], advance_rng=False)
    for n in (3, 7):
        v = rng.standard_normal((n, 2, 3)).astype(np.float32)
        (got,) = eng.run("f", [v])
        want = np.zeros((2, 3))
        for idx in np.ndindex(2, 3):
            step = np.zeros((2, 3))
            step[idx] = 1e-4
            plus, minus = (np.sum(_moments(v * (wv + d)) * weights) for d in (step, -step))
            want[idx] = (plus - minus) / 2e-4
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_channel_moments_rejects_a_vector():
    g = _core.Graph()
    x = g.input("x", (-1,), "float32")
    with pytest.raises(
        ValueError, match=r"\[channel_moments\] .* at least 2 dims, got shape \(batch,\)"
    ):
        g.op("channel_moments", [x], {})
