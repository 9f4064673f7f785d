"""Scenarios of the fused attention kernel: it agrees with the op's decomposition (its
reference) at several sizes, causal and not, with masks; with torch's
scaled_dot_product_attention; at symbolic sequence lengths; and its dropout draws one mask
that the forward and backward passes share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gometal import _core

from .cases_attention import attention
from .harness import ScenarioCase

ATTENTION_OPS = ["attention", "attention_lse", "attention_grad_q", "attention_grad_kv"]
WITHOUT_KERNELS = {"without_kernels": ATTENTION_OPS}


def _attention_graph(shapes, attrs, mask=None):
    """q, k, v variables -> attention (over a constant mask if given), and the gradients of
    sum(out * R) with respect to q, k and v, R a constant drawn from the shapes."""
    g = _core.Graph()
    q, k, v = (g.variable(name, shape) for name, shape in zip("qkv", shapes))
    inputs = [q, k, v] + ([g.constant(mask.astype(np.float32))] if mask is not None else [])
    out = g.op("attention", inputs, attrs)
    weights = np.random.default_rng(3).uniform(-1.0, 1.0, g.shape(out)).astype(np.float32)
    loss = g.op("sum", [g.op("mul", [out, g.constant(weights)], {})], {"axes": []})
    return g, out, g.gradients(loss, [q, k, v]), weights


def _run(shapes, attrs, values, mask=None, options=None, backend="cpu"):
    g, out, grads, weights = _attention_graph(shapes, attrs, mask)
    engine = _core.Engine(g, seed=5, backend=backend, options=options or {})
    for name, value in zip("qkv", values):
        engine.set_variable(name, value)
    engine.define("step", inputs=[], outputs=[out, *grads], effects=[], advance_rng=False)
    plan = engine.describe("step", 1)
    return [np.asarray(r) for r in engine.run("step", [])], plan, weights


def _draw(rng, shapes):
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def _assert_close(got, want, rtol, what):
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        b = np.asarray(b, dtype=np.float64)
        atol = rtol * max(1.0, float(np.abs(b).max(initial=0.0)))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{name} of {what}")


# (N, H, Tq, Tk, D, causal, mask shape or None)
SIZES = [
    (2, 3, 1, 1, 8, False, None),
    (2, 3, 1, 9, 8, True, (1, 1, 1, 9)),
    (2, 2, 7, 7, 5, True, None),
    (2, 2, 7, 11, 5, False, (2, 1, 7, 11)),
    (2, 2, 64, 64, 16, True, (64, 64)),
    (1, 2, 64, 64, 16, False, None),
    (1, 2, 300, 300, 16, True, None),
    (1, 1, 300, 130, 8, False, (1, 1, 1, 130)),
    # the head sizes with products of their own (16, 32, 64, 128), blocks cut short
    (2, 2, 45, 45, 32, True, (2, 1, 1, 45)),
    (1, 2, 33, 150, 64, False, (33, 150)),
    (1, 1, 70, 70, 128, True, None),
]


def kernel_matches_decomposition(backend, rng):
    for index, (n, h, tq, tk, d, causal, mask_shape) in enumerate(SIZES):
        shapes = [(n, h, tq, d), (n, h, tk, d), (n, h, tk, d)]
        values = _draw(rng, shapes)
        mask = rng.uniform(-2.0, 2.0, mask_shape) if mask_shape else None
        # every other size also saves the log-sum-exps for the backward pass
        attrs = {"causal": causal, "with_lse": index % 2 == 1}
        fused, plan, _ = _run(shapes, attrs, values, mask, backend=backend)
        composed, composed_plan, _ = _run(shapes, attrs, values, mask, WITHOUT_KERNELS, backend)
        # The option really swapped the kernels for the decomposition.
        assert any(line.startswith("attention ") for line in plan), plan
        assert not any(line.split(" ")[0] in ATTENTION_OPS for line in composed_plan), composed_plan
        _assert_close(fused, composed, 2e-5, f"T=({tq}, {tk}) {attrs} mask={mask_shape}")


def a_row_with_every_key_masked_is_zero(backend, rng):
    shapes = [(1, 2, 4, 3), (1, 2, 5, 3), (1, 2, 5, 3)]
    mask = rng.uniform(-1.0, 1.0, (1, 1, 4, 5))
    mask[0, 0, 2] = -np.inf  # query 2 sees no key: its output and gradients are 0, not NaN
    values = _draw(rng, shapes)
    fused, _, _ = _run(shapes, {}, values, mask, backend=backend)
    composed, _, _ = _run(shapes, {}, values, mask, WITHOUT_KERNELS, backend)
    _assert_close(fused, composed, 2e-5, "a fully masked row")
    assert np.all(fused[0][:, :, 2] == 0.0) and np.all(fused[1][:, :, 2] == 0.0)
    assert all(np.isfinite(x).all() for x in fused)
    rows = np.arange(4) != 2
    want = attention(
        *[a.astype(np.float64)[:, :, rows] if i == 0 else a for i, a in enumerate(values)],
        mask[:, :, rows],
    )
    np.testing.assert_allclose(fused[0][:, :, rows], want, rtol=1e-5, atol=1e-6)


def _torch_attention(values, mask, causal, scale=None):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in values]
    attn_mask = None if mask is None else torch.tensor(mask)
    out = F.scaled_dot_product_attention(
        *tensors, attn_mask=attn_mask, is_causal=causal, scale=scale
    )
    return out, tensors


def matches_torch_scaled_dot_product_attention(backend, rng):
    n, h, t, d = 3, 4, 12, 8
    shapes = [(n, h, t, d)] * 3
    bool_mask = rng.random((n, 1, t, t)) < 0.7
    bool_mask[..., 0] = True  # every query keeps a key
    # torch takes a boolean mask; the engine takes it as an additive one, -inf where False.
    additive_from_bool = np.where(bool_mask, 0.0, -np.inf)
    additive = rng.uniform(-1.0, 1.0, (1, h, t, t))
    for causal, mask, torch_mask, scale in [
        (False, None, None, None),
        (True, None, None, None),
        (False, additive, additive, 0.2),
        (False, additive_from_bool, bool_mask, None),
    ]:
        values = _draw(rng, shapes)
        attrs = {"causal": causal} | ({"scale": scale} if scale else {})
        got, _, weights = _run(shapes, attrs, values, mask, backend=backend)
        out, tensors = _torch_attention(values, torch_mask, causal, scale)
        (out * torch.tensor(weights, dtype=torch.float64)).sum().backward()
        want = [out.detach().numpy()] + [x.grad.numpy() for x in tensors]
        _assert_close(got, want, 1e-5, f"causal={causal} mask={mask is not None} scale={scale}")


def symbolic_sequence_lengths(backend, rng):
    seq = _core.dim_symbol("seq")
    for causal in (False, True):
        g = _core.Graph()
        q, k, v = (g.input(name, ("batch", 2, "seq", 4)) for name in "qkv")
        out = g.op("attention", [q, k, v], {"causal": causal})
        assert tuple(g.shape(out)) == (-1, 2, seq, 4)
        engine = _core.Engine(g, seed=0, backend=backend)
        engine.define("f", inputs=[q, k, v], outputs=[out], effects=[], advance_rng=False)
        for batch, length in [(2, 9), (3, 70), (1, 1)]:
            values = _draw(rng, [(batch, 2, length, 4)] * 3)
            (got,) = engine.run("f", values)
            want = attention(*[a.astype(np.float64) for a in values], causal=causal)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"T={length}")
    # A causal decomposition builds its mask at the lengths it is given: symbols are refused.
    with pytest.raises(ValueError, match=r"\[attention\] .*static sequence lengths"):
        _core.Engine(g, seed=0, backend=backend, options=WITHOUT_KERNELS)


def dropout_draws_one_mask_for_both_passes(backend, rng):
    n, h, t, rate = 2, 2, 64, 0.25
    # self-attention (one backward op) and cross-attention (two), with and without saved lse
    for tq, with_lse in [(t, False), (t, True), (48, False)]:
        shapes = [(n, h, tq, t), (n, h, t, t), (n, h, t, t)]  # D = Tk, so v = I reads the weights
        g, out, grads, weights = _attention_graph(shapes, {"dropout": rate, "with_lse": with_lse})
        engine = _core.Engine(g, seed=11, backend=backend)
        engine.define("fixed", inputs=[], outputs=[out, *grads], effects=[], advance_rng=False)
        # q = k = 0: every probability is 1/Tk, and with v = I the output is the dropped weights.
        engine.set_variable("q", np.zeros(shapes[0], np.float32))
        engine.set_variable("k", np.zeros(shapes[1], np.float32))
        engine.set_variable("v", np.broadcast_to(np.eye(t, dtype=np.float32), shapes[2]).copy())
        read = np.asarray(engine.run("fixed", [])[0])[..., :t] * t * (1.0 - rate)
        kept = np.isclose(read, 1.0, atol=1e-5)
        assert np.all(kept | np.isclose(read, 0.0, atol=1e-6)), (
            "weights are either dropped or scaled by 1/(1-p)"
        )
        assert abs(kept.mean() - (1.0 - rate)) < 0.02, kept.mean()
        # The same draw (the RNG step is not advanced) with other values: the backward pass
        # redraws that mask, so the gradients are those of softmax(S) * Z v with Z fixed (and
        # of the log-sum-exps, which dropout leaves alone).
        values = _draw(rng, shapes)
        for name, value in zip("qkv", values):
            engine.set_variable(name, value)
        got = [np.asarray(r) for r in engine.run("fixed", [])]
        factors = torch.tensor(kept / (1.0 - rate))
        tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in values]
        q, k, v = tensors
        scores = q @ k.transpose(-1, -2) / np.sqrt(t)
        reference = (torch.softmax(scores, dim=-1) * factors) @ v
        if with_lse:
            reference = torch.cat([reference, torch.logsumexp(scores, -1, keepdim=True)], -1)
        (reference * torch.tensor(weights, dtype=torch.float64)).sum().backward()
        want = [reference.detach().numpy()] + [x.grad.numpy() for x in tensors]
        _assert_close(got, want, 1e-5, f"dropout 0.25, Tq={tq}, with_lse={with_lse}")
    # A step that advances the RNG draws a new mask.
    engine.define("advancing", inputs=[], outputs=[out], effects=[], advance_rng=True)
    first = np.asarray(engine.run("advancing", [])[0])
    second = np.asarray(engine.run("advancing", [])[0])
    assert not np.array_equal(first, second)


SCENARIOS: list[ScenarioCase] = [
    ScenarioCase("attention", "kernel_matches_decomposition", kernel_matches_decomposition),
    ScenarioCase("attention", "fully_masked_row", a_row_with_every_key_masked_is_zero),
    ScenarioCase("attention", "matches_torch_sdpa", matches_torch_scaled_dot_product_attention),
    ScenarioCase("attention", "symbolic_sequence_lengths", symbolic_sequence_lengths),
    ScenarioCase("attention", "dropout_one_mask", dropout_draws_one_mask_for_both_passes),
]
