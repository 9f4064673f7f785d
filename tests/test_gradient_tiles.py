"""Gradients of a tensor cut into slices: the zero-padded pieces that tile an axis are summed
as one concat (or, when the pieces are themselves slices of one stacked tensor, as that
tensor), and the values stay those of the sum; pieces that leave a gap or overlap keep the
pads and adds."""

from __future__ import annotations

import numpy as np
import torch

from gometal import _core


def _define(g, inputs, outputs, feeds):
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("f", inputs=inputs, outputs=outputs, effects=[], advance_rng=False)
    plan = engine.describe("f", feeds[0].shape[0])
    return [np.asarray(r) for r in engine.run("f", feeds)], plan


def _ops_of(plan: list[str]) -> str:
    return " ".join(plan)


def _sliced_loss(ranges):
    """loss = sum_k sum(w_k * exp(x[:, a_k:b_k])) for the column ranges given."""
    g = _core.Graph()
    x = g.input("x", (-1, 6))
    terms = []
    for k, (start, end) in enumerate(ranges):
        part = g.op("slice", [x], {"axis": 1, "start": start, "end": end})
        weight = g.constant(np.full((end - start,), k + 1.0, dtype=np.float32))
        terms.append(g.op("sum", [g.op("mul", [g.op("exp", [part]), weight])], {"axes": []}))
    loss = terms[0]
    for term in terms[1:]:
        loss = g.op("add", [loss, term])
    (dx,) = g.gradients(loss, [x])
    return g, x, dx


def _expected(x, ranges):
    grad = np.zeros_like(x, dtype=np.float64)
    for k, (start, end) in enumerate(ranges):
        grad[:, start:end] += (k + 1.0) * np.exp(x[:, start:end].astype(np.float64))
    return grad


def test_slices_tiling_an_axis_get_one_concat_as_gradient() -> None:
    ranges = [(2, 4), (0, 2), (4, 6)]
    g, x, dx = _sliced_loss(ranges)
    feed = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    (got,), plan = _define(g, [x], [dx], [feed])
    assert "concat" in _ops_of(plan) and "pad" not in _ops_of(plan), plan
    np.testing.assert_allclose(got, _expected(feed, ranges), rtol=1e-6)


def test_slices_with_a_gap_or_an_overlap_keep_their_pads() -> None:
    feed = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    for ranges in ([(0, 2), (3, 6)], [(0, 4), (2, 6)]):
        g, x, dx = _sliced_loss(ranges)
        (got,), plan = _define(g, [x], [dx], [feed])
        assert "pad" in _ops_of(plan) and "concat" not in _ops_of(plan), (ranges, plan)
        np.testing.assert_allclose(got, _expected(feed, ranges), rtol=1e-6)


def test_slices_of_a_stack_get_the_stacked_gradient_itself() -> None:
    """q, k and v cut from one (3, N, H, T, D) tensor: attention's gradient is already that
    stack, so the sum of the three padded pieces is it, with no copy at all."""
    n, heads, length, width = 2, 2, 5, 4
    rng = np.random.default_rng(2)
    stacked = rng.standard_normal((3, n, heads, length, width)).astype(np.float32)
    weights = rng.standard_normal((n, heads, length, width)).astype(np.float32)

    g = _core.Graph()
    s = g.input("s", (3, n, heads, length, width))
    w = g.constant(weights)
    parts = [
        g.op(
            "reshape",
            [g.op("slice", [s], {"axis": 0, "start": i, "end": i + 1})],
            {"shape": [n, heads, length, width]},
        )
        for i in range(3)
    ]
    out = g.op("attention", parts, {"causal": True})
    loss = g.op("sum", [g.op("mul", [out, w])], {"axes": []})
    (ds,) = g.gradients(loss, [s])
    (got,), plan = _define(g, [s], [ds], [stacked])
    assert "pad" not in _ops_of(plan) and "concat" not in _ops_of(plan), plan

    s_t = torch.tensor(stacked, dtype=torch.float64, requires_grad=True)
    q, k, v = s_t[0], s_t[1], s_t[2]
    out_t = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    (out_t * torch.tensor(weights, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(got, s_t.grad.numpy(), rtol=1e-5, atol=1e-6)
