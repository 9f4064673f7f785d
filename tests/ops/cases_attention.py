"""Fused attention and the ops of its gradient: forward against NumPy, backward against
central differences, bad shapes and attributes refused by name. The fused kernel against
the op's decomposition, torch's scaled_dot_product_attention, symbolic sequence lengths and
dropout are scenarios in cases_attention_kernel.py."""

from __future__ import annotations

import numpy as np

from .domains import unit
from .harness import BATCH, NO_GRADIENT, Arg, ErrorCase, OpCase, Tolerance, shape_pattern

NEG_INF = -np.inf


def scores(q, k, mask=None, causal=False, scale=0.0):
    """scale q k^T + mask over (N, H, Tq, Tk), -inf above the diagonal when causal."""
    d = q.shape[-1]
    s = np.einsum("nhid,nhjd->nhij", q, k) * (scale or 1.0 / np.sqrt(d))
    if mask is not None:
        s = s + mask
    if causal:
        tq, tk = s.shape[-2:]
        s = np.where(np.tril(np.ones((tq, tk), dtype=bool)), s, NEG_INF)
    return s


def log_sum_exp(s):
    top = s.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(s - top).sum(axis=-1, keepdims=True)))[..., 0]


def attention(q, k, v, mask=None, causal=False, scale=0.0):
    """softmax(scores) v: the reference the op, its kernel and its decomposition meet."""
    s = scores(q, k, mask, causal, scale)
    p = np.exp(s - log_sum_exp(s)[..., None])
    return np.einsum("nhij,nhjd->nhid", p, v)


def attention_with_lse(q, k, v, mask=None, causal=False):
    """The output with each row's log-sum-exp as an extra last column (with_lse)."""
    lse = log_sum_exp(scores(q, k, mask, causal))
    return np.concatenate([attention(q, k, v, mask, causal), lse[..., None]], axis=-1)


def grad_parts(q, k, v, g, lse, delta, mask=None, causal=False, scale=0.0):
    """dq, dk, dv of attention given its saved row statistics (any lse and delta: the
    backward ops are defined on them, whatever computed them)."""
    scale = scale or 1.0 / np.sqrt(q.shape[-1])
    p = np.exp(scores(q, k, mask, causal, scale) - lse[..., None])
    ds = p * (np.einsum("nhid,nhjd->nhij", g, v) - delta[..., None])
    dq = scale * np.einsum("nhij,nhjd->nhid", ds, k)
    dk = scale * np.einsum("nhij,nhid->nhjd", ds, q)
    dv = np.einsum("nhij,nhid->nhjd", p, g)
    return dq, dk, dv


def key_padding(rng: np.random.Generator, shape) -> np.ndarray:
    """0 for a kept key, -1e9 for a padded one; the first key of every row is kept."""
    padded = rng.random(shape) < 0.4
    padded[..., 0] = False
    return np.where(padded, -1e9, 0.0)


def row_stats(rng: np.random.Generator, shape) -> np.ndarray:
    """Log-sum-exp-like values in [1, 2): exp(score - lse) stays moderate for unit q, k."""
    return rng.uniform(1.0, 2.0, shape)


Q, KV = (BATCH, 2, 5, 4), (BATCH, 2, 6, 4)
SQUARE = (BATCH, 2, 6, 4)
FIXED_MASK = Arg((1, 2, 5, 6), grad=False, leaf="constant")


def _forward_cases() -> list[OpCase]:
    cases = [
        OpCase("attention", (Arg(Q), Arg(KV), Arg(KV)), attention, name="cross"),
        OpCase(
            "attention",
            (Arg(SQUARE), Arg(SQUARE), Arg(SQUARE)),
            lambda q, k, v: attention(q, k, v, causal=True),
            attrs={"causal": True},
        ),
        OpCase(
            "attention",
            (Arg(Q), Arg(KV), Arg(KV)),
            lambda q, k, v: attention(q, k, v, scale=0.3),
            attrs={"scale": 0.3},
        ),
        OpCase("attention", (Arg(Q), Arg(KV), Arg(KV), FIXED_MASK), attention, name="additive"),
        OpCase(
            "attention",
            (Arg(Q), Arg(KV), Arg(KV), Arg((BATCH, 1, 1, 6), key_padding, grad=False)),
            attention,
            name="key_padding",
        ),
        OpCase(
            "attention",
            (Arg(SQUARE), Arg(SQUARE), Arg(SQUARE), Arg((6,), grad=False, leaf="constant")),
            lambda q, k, v, m: attention(q, k, v, m, causal=True),
            attrs={"causal": True},
            name="causal_and_mask",
        ),
        # The saved log-sum-exps are outputs too: their gradient flows back through q and k.
        OpCase(
            "attention",
            (Arg(Q), Arg(KV), Arg(KV), FIXED_MASK),
            attention_with_lse,
            attrs={"with_lse": True},
        ),
        OpCase(
            "attention",
            (Arg(SQUARE), Arg(SQUARE), Arg(SQUARE)),
            lambda q, k, v: attention_with_lse(q, k, v, causal=True),
            attrs={"causal": True, "with_lse": True},
        ),
        OpCase(
            "attention",
            (Arg((2, 1, 1, 3)), Arg((2, 1, 1, 3)), Arg((2, 1, 1, 3))),
            attention,
            name="one_step",
        ),
    ]
    return cases


def _grad_args(q_shape, kv_shape) -> tuple[Arg, ...]:
    """(q, k, v, g, lse, delta) of the backward ops, for q and k, v of the given shapes."""
    rows = q_shape[:3]
    kv = Arg(kv_shape, unit)
    return (Arg(q_shape, unit), kv, kv, Arg(q_shape, unit), Arg(rows, row_stats), Arg(rows, unit))


def _statistics_cases() -> list[OpCase]:
    lse = [
        OpCase(
            "attention_lse",
            (Arg(Q), Arg(KV)),
            lambda q, k: log_sum_exp(scores(q, k)),
            gradient=NO_GRADIENT,
        ),
        OpCase(
            "attention_lse",
            (Arg(SQUARE), Arg(SQUARE), Arg((1, 1, 6, 6), grad=False, leaf="constant")),
            lambda q, k, m: log_sum_exp(scores(q, k, m, causal=True, scale=0.5)),
            attrs={"causal": True, "scale": 0.5},
            gradient=NO_GRADIENT,
        ),
    ]
    grad_args = _grad_args(Q, KV)
    grads = []
    for causal in (False, True):
        attrs = {"causal": causal}
        extra = (Arg((1, 2, 5, 6), unit, grad=False, leaf="constant"),) if causal else ()
        grads += [
            OpCase(
                "attention_grad_q",
                grad_args + extra,
                lambda *a, c=causal: grad_parts(*a, causal=c)[0],
                attrs=attrs,
                gradient=NO_GRADIENT,
            ),
            OpCase(
                "attention_grad_kv",
                grad_args + extra,
                lambda *a, c=causal: np.stack(grad_parts(*a, causal=c)[1:]),
                attrs=attrs,
                gradient=NO_GRADIENT,
                forward_tol=Tolerance(1e-5, 1e-5, scaled=True),
            ),
        ]
    fused_args = _grad_args(SQUARE, SQUARE)
    for causal in (False, True):
        extra = (Arg((1, 1, 6, 6), unit, grad=False, leaf="constant"),) if causal else ()
        grads.append(
            OpCase(
                "attention_grad",
                fused_args + extra,
                lambda *a, c=causal: np.stack(grad_parts(*a, causal=c)),
                attrs={"causal": causal},
                gradient=NO_GRADIENT,
                forward_tol=Tolerance(1e-5, 1e-5, scaled=True),
            )
        )
    return lse + grads


CASES: list[OpCase] = _forward_cases() + _statistics_cases()


def _errors() -> list[ErrorCase]:
    def args(*shapes):
        return tuple(Arg(shape) for shape in shapes)

    qkv = args((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 4))
    return [
        ErrorCase(
            "attention",
            args((2, 5, 4), (2, 6, 4), (2, 6, 4)),
            patterns=(r"rank 4 \(N, H, T, D\)", shape_pattern((2, 5, 4))),
            name="rank",
        ),
        ErrorCase(
            "attention",
            args((2, 2, 5, 4), (2, 2, 6, 8), (2, 2, 6, 8)),
            patterns=(shape_pattern((2, 2, 6, 8)), shape_pattern((2, 2, 5, 4)), "N, H and D"),
            name="head_size",
        ),
        ErrorCase(
            "attention",
            args((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 7, 4)),
            patterns=(r"v \(2, 2, 7, 4\) must have k's shape \(2, 2, 6, 4\)",),
            name="values",
        ),
        ErrorCase(
            "attention",
            qkv + args((2, 1, 5, 5)),
            patterns=(r"mask of shape \(2, 1, 5, 5\)", r"\(2, 2, 5, 6\)"),
            name="mask",
        ),
        ErrorCase("attention", qkv, {"dropout": 1.0}, patterns=(r"dropout .* \[0, 1\)",)),
        ErrorCase("attention", qkv, {"scale": -1.0}, patterns=(r"scale .* >= 0",)),
        ErrorCase("attention", qkv[:2], patterns=(r"expects 3 inputs .* got 2",), name="arity"),
        ErrorCase("attention", qkv, {"causal": 1}, patterns=(r"'causal' must be a bool",)),
        ErrorCase(
            "attention_grad_q",
            qkv + args((2, 2, 5, 4), (2, 2, 6), (2, 2, 5)),
            patterns=(r"lse of shape \(2, 2, 6\) must be \(N, H, Tq\) \(2, 2, 5\)",),
        ),
        ErrorCase(
            "attention_grad",
            qkv + args((2, 2, 5, 4), (2, 2, 5), (2, 2, 5)),
            patterns=(r"as many queries as keys, got Tq \(5,\) and Tk \(6,\)",),
        ),
    ]


ERRORS: list[ErrorCase] = _errors()
