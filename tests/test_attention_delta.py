"""Self-attention's backward step takes delta = rowsum(g * out) in: the plan line reads
attention_grad,mul,sum and no step of its own sums g * out. Outputs and the gradients of q, k
and v against torch in float64: causal or not, an additive mask, a key-padding mask, head
widths past and short of a vector, lengths past a block of keys, on 1 and 2 threads.
Cross-attention (two backward ops) keeps its delta step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attention_graphs import packed_qkv_heads
from gometal import _core
from test_attention_tiles import _torch_reference


def _on_threads(count, run, *args):
    """run(*args) with the engine's pool at `count` threads, then the count as it was."""
    before = _core.get_num_threads()
    _core.set_num_threads(count)
    try:
        return run(*args)
    finally:
        _core.set_num_threads(before)


def _plan_and_values(shapes, causal, mask, cotangent):
    """q, k, v inputs -> attention, and the gradients of sum(out * cotangent)."""
    g = _core.Graph()
    q, k, v = (g.input(name, shape) for name, shape in zip("qkv", shapes))
    inputs = [q, k, v] + ([g.constant(mask)] if mask is not None else [])
    out = g.op("attention", inputs, {"causal": causal})
    weights = g.input("w", cotangent.shape)
    loss = g.op("sum", [g.op("mul", [out, weights], {})], {"axes": []})
    grads = g.gradients(loss, [q, k, v])
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define(
        "step", inputs=[q, k, v, weights], outputs=[out, *grads], effects=[], advance_rng=False
    )
    return engine, engine.describe("step", shapes[0][0])


def _check(size, mask_kind, threads):
    n, h, tq, tk, d, causal = size
    rng = np.random.default_rng(tq * 1000 + tk * 10 + d)
    shapes = [(n, h, tq, d), (n, h, tk, d), (n, h, tk, d)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    cotangent = rng.uniform(-1.0, 1.0, (n, h, tq, d)).astype(np.float32)
    mask = None
    if mask_kind == "additive":
        mask = rng.uniform(-2.0, 2.0, (1, h, tq, tk)).astype(np.float32)
    elif mask_kind == "key padding":
        # Each sequence's last keys are padding (-inf), at least one key kept.
        mask = np.zeros((n, 1, 1, tk), np.float32)
        for i in range(n):
            mask[i, ..., tk - (i * 3 + 1) % tk :] = -np.inf
            mask[i, ..., 0] = 0.0
    engine, plan = _plan_and_values(shapes, causal, mask, cotangent)
    got = engine.run("step", [*values, cotangent])
    want = _torch_reference(values, mask, causal, cotangent)
    for what, a, b in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        atol = 1e-5 * max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"{what}, {threads} threads")
    return plan


# (N, H, T, T, D, causal): workload D's heads, widths not a multiple of 16, one query, keys past
# a block of 128.
SELF = [
    (2, 4, 64, 64, 32, True),
    (3, 2, 17, 17, 7, True),
    (1, 3, 45, 45, 33, False),
    (2, 1, 1, 1, 16, True),
    (1, 2, 130, 130, 20, True),
]


@pytest.mark.parametrize("mask_kind", [None, "additive", "key padding"])
@pytest.mark.parametrize("size", SELF, ids=[f"T{s[2]}xD{s[4]}" for s in SELF])
@pytest.mark.parametrize("threads", [1, 2])
def test_self_attention_gradient_takes_its_delta_in(size, mask_kind, threads):
    plan = _on_threads(threads, _check, size, mask_kind, threads)
    assert any(line.startswith("attention_grad,mul,sum") for line in plan), plan
    n, h, tq = size[:3]
    assert f"sum ({n}, {h}, {tq})" not in plan, plan


@pytest.mark.parametrize("size", [(2, 2, 19, 40, 32, False), (1, 3, 64, 33, 9, True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_cross_attention_keeps_its_delta_step(size, threads):
    plan = _on_threads(threads, _check, size, "additive", threads)
    assert not any("attention_grad,mul,sum" in line for line in plan), plan
    assert f"sum ({size[0]}, {size[1]}, {size[2]})" in plan, plan
    assert any(line.startswith("attention_grad_q") for line in plan), plan


def _projected(n, t, e, heads, causal, padded, projected):
    """x (N, T, E) -> one product by in_proj_weight (3 E, E) plus bias -> q, k, v split into
    heads by a reshape, a transpose and three slices (as MultiHeadAttention emits them) ->
    attention -> sum(out * w); the plan and the gradients of x, the weight and the bias."""
    from gometal.graph.composites import matmul, op

    g = _core.Graph()
    x = g.input("x", (n, t, e))
    weight, bias = g.input("weight", (3 * e, e)), g.input("bias", (3 * e,))
    qkv = packed_qkv_heads(g, x, weight, bias, n, t, e, heads)
    if padded:
        mask = np.zeros((n, 1, 1, t), np.float32)
        mask[-1, ..., t // 2 + 1 :] = -np.inf
        qkv.append(g.constant(mask))
    out = g.op("attention", qkv, {"causal": causal})
    if projected:  # heads merged back to (N, T, E) and projected: g arrives as (N, T, E)
        merged = op(g, "reshape", op(g, "transpose", out, perm=[0, 2, 1, 3]), shape=[n, t, e])
        w = g.input("w", (e, e))
        loss = g.op("sum", [g.op("square", [matmul(g, merged, w)])], {"axes": []})
    else:
        w = g.input("w", (n, heads, t, e // heads))
        loss = g.op("sum", [g.op("mul", [out, w], {})], {"axes": []})
    grads = g.gradients(loss, [x, weight, bias])
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define(
        "step", inputs=[x, weight, bias, w], outputs=[out, *grads], effects=[], advance_rng=False
    )
    return engine, engine.describe("step", n)


# (N, T, E, heads): workload D's layer, heads of 7 and of 33 floats, one position; past one
# block of 128 keys the transpose stays (dq's rows would span too many pages).
PROJECTED = [(3, 64, 128, 4), (2, 19, 21, 3), (1, 40, 66, 2), (2, 1, 16, 2), (2, 130, 16, 2)]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("size", PROJECTED, ids=[f"T{s[1]}xE{s[2]}xH{s[3]}" for s in PROJECTED])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("projected", [False, True])
def test_gradients_stored_in_the_products_layout(size, causal, padded, projected, threads):
    """The gradient of the packed projection's output is stored straight into (N, T, 3 E)
    up to 128 positions: no transpose step after attention_grad."""
    _on_threads(threads, _check_projected, size, causal, padded, projected, threads)


def _check_projected(size, causal, padded, projected, threads):
    n, t, e, heads = size
    rng = np.random.default_rng(t * 100 + e)
    values = [
        rng.standard_normal((n, t, e)).astype(np.float32),
        (rng.standard_normal((3 * e, e)) / np.sqrt(e)).astype(np.float32),
        rng.standard_normal(3 * e).astype(np.float32),
        (rng.standard_normal((e, e)) / np.sqrt(e)).astype(np.float32)
        if projected
        else rng.uniform(-1.0, 1.0, (n, heads, t, e // heads)).astype(np.float32),
    ]
    engine, plan = _projected(n, t, e, heads, causal, padded, projected)
    merged = t <= 128
    # Up to 128 positions g is read in place too: no (N, H, T, D) transpose step is left.
    assert any(line.startswith(f"transpose ({n}, {heads}, {t},") for line in plan) == (
        projected and not merged
    ), plan
    assert any(line.startswith("attention_grad,mul,sum,transpose") for line in plan) == merged, plan
    assert (
        any(line == f"transpose ({n}, {t}, 3, {heads}, {e // heads})" for line in plan) != merged
    ), plan
    got = engine.run("step", values)

    x, weight, bias, w = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in values)
    qkv = (x @ weight.T + bias).reshape(n, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)
    mask = None
    if padded:
        mask = torch.zeros((n, 1, 1, t), dtype=torch.float64)
        mask[-1, ..., t // 2 + 1 :] = -torch.inf
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, is_causal=causal)
    if projected:
        (out.permute(0, 2, 1, 3).reshape(n, t, e) @ w).square().sum().backward()
    else:
        (out * w).sum().backward()
    want = [out.detach().numpy(), x.grad.numpy(), weight.grad.numpy(), bias.grad.numpy()]
    for what, a, b in zip(("out", "dx", "dweight", "dbias"), got, want, strict=True):
        atol = 1e-5 * max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"{what}, {threads} threads")
