"""Kernels at sizes past any block, chunk or vector width, on one and two threads: matmul,
a fused elementwise chain, reductions and layout ops against NumPy and analytic gradients."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    original = _core.get_num_threads()
    _core.set_num_threads(request.param)
    yield request.param
    _core.set_num_threads(original)


@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("transpose_a", [False, True])
def test_large_matmul_forward_and_gradients(transpose_a, transpose_b, threads, rng):
    m, k, n = 130, 257, 67
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32)
    g = _core.Graph()
    va, vb = g.variable("a", a.shape), g.variable("b", b.shape)
    out = g.op("matmul", [va, vb], {"transpose_a": transpose_a, "transpose_b": transpose_b})
    loss = g.op("sum", [g.op("mul", [out, g.constant(r)], {})], {"axes": [], "keepdims": False})
    grad_a, grad_b = g.gradients(loss, [va, vb])
    eng = _core.Engine(g, seed=0)
    eng.set_variable("a", a)
    eng.set_variable("b", b)
    eng.define("f", inputs=[], outputs=[out, grad_a, grad_b], effects=[], advance_rng=False)
    got, ga, gb = eng.run("f", [])
    a64, b64, r64 = a.astype(np.float64), b.astype(np.float64), r.astype(np.float64)
    opa = a64.T if transpose_a else a64
    opb = b64.T if transpose_b else b64
    np.testing.assert_allclose(got, opa @ opb, rtol=1e-4, atol=1e-4)
    d_opa, d_opb = r64 @ opb.T, opa.T @ r64
    np.testing.assert_allclose(ga, d_opa.T if transpose_a else d_opa, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, d_opb.T if transpose_b else d_opb, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 7, 513, 1031])
def test_large_fused_elementwise_chain(rows, threads, rng):
    """exp(tanh(x) * w) + sigmoid(x - c) / (1 + x^2) with broadcasting, on odd sizes."""
    cols = 37
    x = rng.uniform(-2, 2, (rows, cols)).astype(np.float32)
    w = rng.uniform(-1, 1, (cols,)).astype(np.float32)
    c = rng.uniform(-1, 1, (rows, 1)).astype(np.float32)
    r = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
    g = _core.Graph()
    vx, vw, vc = g.variable("x", x.shape), g.variable("w", w.shape), g.variable("c", c.shape)

    def op(name, *ins):
        return g.op(name, list(ins), {})

    first = op("exp", op("mul", op("tanh", vx), vw))
    second = op(
        "div", op("sigmoid", op("sub", vx, vc)), op("add", g.constant(1.0), op("square", vx))
    )
    out = op("add", first, second)
    loss = g.op("sum", [op("mul", out, g.constant(r))], {"axes": [], "keepdims": False})
    grads = g.gradients(loss, [vx, vw, vc])
    eng = _core.Engine(g, seed=0)
    for name, value in (("x", x), ("w", w), ("c", c)):
        eng.set_variable(name, value)
    eng.define("f", inputs=[], outputs=[out, *grads], effects=[], advance_rng=False)
    got, gx, gw, gc = eng.run("f", [])

    X, W, C, R = (v.astype(np.float64) for v in (x, w, c, r))
    th = np.tanh(X)
    e = np.exp(th * W)
    s = _sigmoid(X - C)
    q = 1.0 + X**2
    np.testing.assert_allclose(got, e + s / q, rtol=1e-5, atol=1e-5)
    d_first_dx = e * W * (1 - th**2)
    d_second_dx = s * (1 - s) / q - s * 2 * X / q**2
    np.testing.assert_allclose(gx, R * (d_first_dx + d_second_dx), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, (R * e * th).sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        gc, (-R * s * (1 - s) / q).sum(1, keepdims=True), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("axes", [[0], [1], [], [0, 2], [2]], ids=str)
def test_large_reductions(axes, threads, rng):
    x = rng.standard_normal((129, 33, 17)).astype(np.float32)
    axis = tuple(axes) if axes else None
    g = _core.Graph()
    v = g.variable("x", x.shape)
    outs = [g.op(name, [v], {"axes": axes, "keepdims": False}) for name in ("sum", "mean", "max")]
    eng = _core.Engine(g, seed=0)
    eng.set_variable("x", x)
    eng.define("f", inputs=[], outputs=outs, effects=[], advance_rng=False)
    total, mean, largest = (np.asarray(o) for o in eng.run("f", []))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(total, x64.sum(axis=axis), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(mean, x64.mean(axis=axis), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(largest, x.max(axis=axis))


def test_large_layout_ops(threads, rng):
    x = rng.standard_normal((65, 130, 3)).astype(np.float32)
    y = rng.standard_normal((65, 7, 3)).astype(np.float32)
    g = _core.Graph()
    vx, vy = g.variable("x", x.shape), g.variable("y", y.shape)
    outs = [
        g.op("transpose", [vx], {"perm": [2, 0, 1]}),
        g.op("concat", [vx, vy], {"axis": 1}),
        g.op("slice", [vx], {"axis": 1, "start": 5, "end": 129}),
        g.op(
            "broadcast_to",
            [g.op("slice", [vy], {"axis": 1, "start": 2, "end": 3})],
            {"shape": [65, 130, 3]},
        ),
    ]
    eng = _core.Engine(g, seed=0)
    eng.set_variable("x", x)
    eng.set_variable("y", y)
    eng.define("f", inputs=[], outputs=outs, effects=[], advance_rng=False)
    transposed, joined, sliced, broadcast = eng.run("f", [])
    np.testing.assert_array_equal(transposed, np.transpose(x, (2, 0, 1)))
    np.testing.assert_array_equal(joined, np.concatenate([x, y], axis=1))
    np.testing.assert_array_equal(sliced, x[:, 5:129])
    np.testing.assert_array_equal(broadcast, np.broadcast_to(y[:, 2:3], (65, 130, 3)))
