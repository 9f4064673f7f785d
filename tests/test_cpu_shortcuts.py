"""Shortcuts the CPU backend takes in a plan, each against NumPy: an attention_lse that
follows an attention of the same scores copies the log-sum-exps the forward kernel kept
(and one of other scores recomputes them), and large transposes split across threads."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

KEPT = "(log-sum-exps kept)"


def scores(q, k, mask=None, causal=False, scale=0.0):
    s = np.einsum("nhid,nhjd->nhij", q, k) * (scale or 1.0 / np.sqrt(q.shape[-1]))
    if mask is not None:
        s = s + mask
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    return s


def log_sum_exp(s):
    top = s.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(s - top).sum(axis=-1, keepdims=True)))[..., 0]


def attention(q, k, v, mask=None, causal=False):
    s = scores(q, k, mask, causal)
    return np.einsum("nhij,nhjd->nhid", np.exp(s - log_sum_exp(s)[..., None]), v)


def _attention_and_lse(lse_attrs: dict, lse_mask: bool):
    rng = np.random.default_rng(0)
    shape = (2, 3, 40, 8)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    mask = rng.standard_normal((1, 1, 40, 40)).astype(np.float32)
    g = _core.Graph()
    qi, ki, vi = (g.input(name, shape, "float32") for name in "qkv")
    mi = g.input("mask", mask.shape, "float32")
    out = g.op("attention", [qi, ki, vi, mi], {"causal": True})
    lse = g.op("attention_lse", [qi, ki, mi] if lse_mask else [qi, ki], lse_attrs)
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[qi, ki, vi, mi], outputs=[out, lse])
    got_out, got_lse = eng.run("f", [q, k, v, mask])
    q64, k64, v64, m64 = (t.astype(np.float64) for t in (q, k, v, mask))
    np.testing.assert_allclose(
        got_out, attention(q64, k64, v64, m64, causal=True), rtol=1e-5, atol=1e-5
    )
    want_lse = log_sum_exp(
        scores(
            q64,
            k64,
            m64 if lse_mask else None,
            lse_attrs.get("causal", False),
            lse_attrs.get("scale", 0.0),
        )
    )
    np.testing.assert_allclose(got_lse, want_lse, rtol=1e-5, atol=1e-5)
    return eng.describe("f", 2)


def test_the_log_sum_exps_of_the_same_scores_are_kept_from_the_forward_pass():
    plan = _attention_and_lse({"causal": True}, lse_mask=True)
    assert sum(KEPT in line for line in plan) == 2, plan


@pytest.mark.parametrize(
    ("lse_attrs", "lse_mask"),
    [({"causal": False}, True), ({"causal": True}, False), ({"causal": True, "scale": 0.5}, True)],
)
def test_the_log_sum_exps_of_other_scores_are_recomputed(lse_attrs, lse_mask):
    plan = _attention_and_lse(lse_attrs, lse_mask)
    assert not any(KEPT in line for line in plan), plan


@pytest.mark.parametrize(
    ("shape", "perm"),
    [
        ((12, 64, 4, 32), (0, 2, 1, 3)),
        ((7, 33, 130), (2, 0, 1)),
        ((5, 6, 7, 8, 9), (4, 3, 2, 1, 0)),
    ],
)
def test_large_transposes_on_two_threads_match_numpy(shape, perm):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    g = _core.Graph()
    xi = g.input("x", shape, "float32")
    y = g.op("transpose", [xi], {"perm": list(perm)})
    eng = _core.Engine(g, seed=0, backend="cpu", options={"threads": 2})
    eng.define("f", inputs=[xi], outputs=[y])
    np.testing.assert_array_equal(eng.run("f", [x])[0], np.transpose(x, perm))
