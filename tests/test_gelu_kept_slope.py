"""A fused gelu keeps its slope Phi(x) + x phi(x) for the fused gelu_grad of the same x in the
plan, which multiplies g by it: the same bits as gelu_grad evaluating the slope itself, and
the gradients of a biased product through GELU (x then has no buffer of its own) against
torch in float64, over blocks cut short, past -13 and 13, on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gometal import _core
from test_attention_delta import _on_threads


def _values(shape, seed):
    """Normal values times 4, and a few past the clamps at -13 and 13."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 4).astype(np.float32)
    x.flat[:6] = [-40.0, -13.5, -13.0, 12.9, 13.5, 40.0][: x.size]
    return x


def _run(build, feeds):
    g = _core.Graph()
    inputs, outputs = build(g)
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("f", inputs=inputs, outputs=outputs, effects=[], advance_rng=False)
    return [np.asarray(r) for r in engine.run("f", feeds)], engine.describe("f", feeds[0].shape[0])


def _kept_and_recomputed(shape):
    def through_gelu(g):  # the gelu (an output, so it runs) keeps the slope its gradient reads
        x, w = g.input("x", (-1, shape[1])), g.input("w", (-1, shape[1]))
        y = g.op("gelu", [x])
        loss = g.op("sum", [g.op("mul", [y, w])], {"axes": []})
        return [x, w], [*g.gradients(loss, [x]), y]

    def alone(g):  # no gelu in the plan: gelu_grad evaluates the slope
        x, w = g.input("x", (-1, shape[1])), g.input("w", (-1, shape[1]))
        return [x, w], [g.op("gelu_grad", [x, w])]

    feeds = [_values(shape, 1), np.random.default_rng(2).standard_normal(shape).astype(np.float32)]
    (kept, _), plan = _run(through_gelu, feeds)
    (recomputed,), plan_alone = _run(alone, feeds)
    assert "fused[gelu]" in " ".join(plan) and "gelu_grad" in " ".join(plan), plan
    assert "fused[gelu]" not in " ".join(plan_alone), plan_alone
    return kept, recomputed


# One block cut short, several blocks of 256 and a tail, enough elements for two threads.
SHAPES = [(3, 37), (5, 1000), (40, 1001)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{s[0]}x{s[1]}" for s in SHAPES])
def test_kept_slope_gives_the_bits_of_gelu_grad(shape, threads):
    kept, recomputed = _on_threads(threads, _kept_and_recomputed, shape)
    np.testing.assert_array_equal(kept, recomputed)


def _feed_forward(n, width, hidden, also_read):
    """x (N, width) @ w1 + b1 -> gelu -> @ w2; the gradients of sum(out * c) for x, w1, b1 and
    w2. With `also_read` the pre-activation is an output too (it keeps its buffer)."""

    def build(g):
        x, w1, b1 = (
            g.input("x", (-1, width)),
            g.input("w1", (width, hidden)),
            g.input("b1", (hidden,)),
        )
        w2, c = g.input("w2", (hidden, 3)), g.input("c", (-1, 3))
        pre = g.op("add", [g.op("matmul", [x, w1]), b1])
        out = g.op("matmul", [g.op("gelu", [pre]), w2])
        loss = g.op("sum", [g.op("mul", [out, c])], {"axes": []})
        outputs = [out, *g.gradients(loss, [x, w1, b1, w2])]
        return [x, w1, b1, w2, c], outputs + ([pre] if also_read else [])

    rng = np.random.default_rng(width + hidden)
    feeds = [
        rng.standard_normal((n, width)).astype(np.float32),
        (rng.standard_normal((width, hidden)) * 3 / np.sqrt(width)).astype(np.float32),
        rng.standard_normal(hidden).astype(np.float32),
        rng.standard_normal((hidden, 3)).astype(np.float32),
        rng.standard_normal((n, 3)).astype(np.float32),
    ]
    got, _ = _run(build, feeds)
    x, w1, b1, w2, c = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in feeds)
    pre = x @ w1 + b1
    out = torch.nn.functional.gelu(pre) @ w2
    (out * c).sum().backward()
    want = [out.detach().numpy(), x.grad.numpy(), w1.grad.numpy(), b1.grad.numpy(), w2.grad.numpy()]
    if also_read:
        want.append(pre.detach().numpy())
    for what, a, b in zip(("out", "dx", "dw1", "db1", "dw2", "pre"), got, want):
        atol = 1e-5 * max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=what)


@pytest.mark.parametrize("also_read", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [(7, 5, 37), (64, 33, 512)], ids=["small", "two-threads"])
def test_feed_forward_gradients_match_torch(size, threads, also_read):
    _on_threads(threads, _feed_forward, *size, also_read)
