"""The ops of incremental decoding: cached_attention against a NumPy softmax attention over
the cache prefix and the new keys, at run-time lengths that one plan serves; cache_write
against NumPy slice assignment; both refuse positions outside the cache with the values,
before anything is written; the kernels agree with the ops' decompositions."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

from .harness import Arg, ErrorCase, ScenarioCase


def attention_over_prefix(q, k_cache, v_cache, k_new, v_new, length, scale=None):
    """NumPy float64: query i sees cached keys [0, length) and new keys [0, i]."""
    q, k_new, v_new = (np.asarray(a, np.float64) for a in (q, k_new, v_new))
    keys = np.concatenate([k_cache[:, :, :length], k_new], axis=2).astype(np.float64)
    values = np.concatenate([v_cache[:, :, :length], v_new], axis=2).astype(np.float64)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.einsum("nhid,nhjd->nhij", q, keys) * scale
    new = q.shape[2]
    visible = np.arange(length + new)[None, :] <= length + np.arange(new)[:, None]
    scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("nhij,nhjd->nhid", weights, values)


def _attention_engine(backend, n, h, tq, capacity, d, attrs=None):
    g = _core.Graph()
    q, k_new, v_new = (g.input(name, (n, h, tq, d), "float32") for name in ("q", "k", "v"))
    length = g.input("length", (1,), "int32")
    k_cache, v_cache = (
        g.variable("k_cache", (n, h, capacity, d)),
        g.variable("v_cache", (n, h, capacity, d)),
    )
    out = g.op("cached_attention", [q, k_cache, v_cache, k_new, v_new, length], attrs or {})
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define(
        "step", inputs=[q, k_new, v_new, length], outputs=[out], effects=[], advance_rng=False
    )
    return engine


def cached_attention_matches_numpy(n, h, tq, capacity, d, lengths, scale=0.0):
    """One plan, several run-time lengths (empty and full cache included)."""

    def check(backend, rng):
        engine = _attention_engine(backend, n, h, tq, capacity, d, {"scale": scale})
        caches = [rng.standard_normal((n, h, capacity, d)).astype(np.float32) for _ in range(2)]
        engine.set_variable("k_cache", caches[0])
        engine.set_variable("v_cache", caches[1])
        for length in lengths:
            q, k_new, v_new = (
                rng.standard_normal((n, h, tq, d)).astype(np.float32) for _ in range(3)
            )
            (got,) = engine.run("step", [q, k_new, v_new, np.array([length], np.int32)])
            want = attention_over_prefix(q, *caches, k_new, v_new, length, scale or None)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"length {length}")
        assert engine.stats()["plans"] == 1

    return check


def cached_attention_refuses_a_length_outside_the_cache(backend, rng):
    engine = _attention_engine(backend, 1, 2, 1, 6, 4)
    x = rng.standard_normal((1, 2, 1, 4)).astype(np.float32)
    for length in (-1, 7):
        with pytest.raises(
            ValueError, match=rf"\[cached_attention\] length {length} is outside the cache of 6"
        ):
            engine.run("step", [x, x, x, np.array([length], np.int32)])


def _write_engine(backend, n, h, capacity, d, t):
    g = _core.Graph()
    cache = g.variable("cache", (n, h, capacity, d))
    value = g.input("value", (n, h, t, d), "float32")
    offset = g.input("offset", (), "int32")
    write = g.op("cache_write", [cache, value, offset], {})
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("write", inputs=[value, offset], outputs=[], effects=[write], advance_rng=False)
    return engine


def cache_write_matches_slice_assignment(backend, rng):
    n, h, capacity, d, t = 2, 3, 7, 5, 2
    engine = _write_engine(backend, n, h, capacity, d, t)
    want = rng.standard_normal((n, h, capacity, d)).astype(np.float32)
    engine.set_variable("cache", want)
    for offset in (0, 3, capacity - t):
        value = rng.standard_normal((n, h, t, d)).astype(np.float32)
        engine.run("write", [value, np.array(offset, np.int32)])
        want[:, :, offset : offset + t] = value
        np.testing.assert_array_equal(
            engine.get_variable("cache"), want, err_msg=f"offset {offset}"
        )
    assert engine.stats()["plans"] == 1


def cache_write_refuses_rows_past_the_cache_and_writes_nothing(backend, rng):
    engine = _write_engine(backend, 1, 2, 5, 4, 2)
    before = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    engine.set_variable("cache", before)
    value = np.ones((1, 2, 2, 4), np.float32)
    for offset in (-1, 4):
        with pytest.raises(
            ValueError,
            match=rf"\[cache_write\] 2 new positions at offset {offset} do not fit the cache of 5",
        ):
            engine.run("write", [value, np.array(offset, np.int32)])
    np.testing.assert_array_equal(engine.get_variable("cache"), before)


def _decode_engine(backend, n, h, t, capacity, d, options=None):
    """One decode step of t new positions: cached_attention over the caches, then the
    writes of the new keys and values at the run-time position."""
    g = _core.Graph()
    q, k_new, v_new = (g.input(name, (n, h, t, d), "float32") for name in ("q", "k", "v"))
    position = g.input("position", (1,), "int32")
    shape = (n, h, capacity, d)
    k_cache, v_cache = g.variable("k_cache", shape), g.variable("v_cache", shape)
    out = g.op("cached_attention", [q, k_cache, v_cache, k_new, v_new, position], {})
    writes = [
        g.op("cache_write", [c, x, position], {}) for c, x in ((k_cache, k_new), (v_cache, v_new))
    ]
    engine = _core.Engine(g, seed=0, backend=backend, options=options or {})
    engine.define(
        "decode",
        inputs=[q, k_new, v_new, position],
        outputs=[out],
        effects=writes,
        advance_rng=False,
    )
    return engine


def attention_then_write_reads_the_cache_from_before_the_call(backend, rng):
    """One decode step: the attention sees the old cache plus the new key once, and the
    write lands after it, so the next step sees the key in the cache."""
    n, h, capacity, d = 1, 2, 4, 8
    engine = _decode_engine(backend, n, h, 1, capacity, d)
    keys, values = (
        np.zeros((n, h, capacity, d), np.float32),
        np.zeros((n, h, capacity, d), np.float32),
    )
    for step in range(capacity):
        q_, k_, v_ = (rng.standard_normal((n, h, 1, d)).astype(np.float32) for _ in range(3))
        (got,) = engine.run("decode", [q_, k_, v_, np.array([step], np.int32)])
        np.testing.assert_allclose(
            got, attention_over_prefix(q_, keys, values, k_, v_, step), rtol=1e-5, atol=1e-6
        )
        keys[:, :, step], values[:, :, step] = k_[:, :, 0], v_[:, :, 0]
    np.testing.assert_array_equal(engine.get_variable("k_cache"), keys)
    np.testing.assert_array_equal(engine.get_variable("v_cache"), values)


DECODING_OPS = {"without_kernels": ["cached_attention", "cache_write"]}


def _decode_steps(backend, options, queries, keys, values, start, capacity):
    """Runs one decode step per query (T new positions each) from cache position `start`:
    the outputs, the final caches and the engine."""
    n, h, t, d = queries[0].shape
    engine = _decode_engine(backend, n, h, t, capacity, d, options)
    shape = (n, h, capacity, d)
    engine.set_variable("k_cache", np.full(shape, 0.5, np.float32))
    engine.set_variable("v_cache", np.full(shape, -0.5, np.float32))
    outs = []
    for step, (q_, k_, v_) in enumerate(zip(queries, keys, values)):
        (got,) = engine.run("decode", [q_, k_, v_, np.array([start + step * t], np.int32)])
        outs.append(np.asarray(got))
    return outs, engine.get_variable("k_cache"), engine.get_variable("v_cache"), engine


def kernels_match_the_decompositions(t):
    def check(backend, rng):
        n, h, d, capacity, steps = 2, 2, 8, 10, 3
        drawn = [
            [rng.standard_normal((n, h, t, d)).astype(np.float32) for _ in range(steps)]
            for _ in range(3)
        ]
        fused = _decode_steps(backend, {}, *drawn, 1, capacity)
        reference = _decode_steps(backend, DECODING_OPS, *drawn, 1, capacity)
        described = " ".join(reference[3].describe("decode", 1))
        assert "cached_attention" not in described and "cache_write" not in described, described
        for step, (a, b) in enumerate(zip(fused[0], reference[0])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        np.testing.assert_array_equal(fused[1], reference[1])
        np.testing.assert_array_equal(fused[2], reference[2])

    return check


def decompositions_refuse_positions_outside_the_cache(backend, rng):
    x = [rng.standard_normal((1, 1, 1, 4)).astype(np.float32)]
    # Length 4 fits a cache of 4 positions; a new key at offset 4 does not.
    with pytest.raises(ValueError, match=r"\[cache_write\] offset must lie in \[0, 3\], got 4"):
        _decode_steps(backend, DECODING_OPS, x, x, x, 4, 4)


SCENARIOS = [
    ScenarioCase(
        "cached_attention", "one-query", cached_attention_matches_numpy(2, 3, 1, 9, 5, [0, 1, 4, 8])
    ),
    ScenarioCase(
        "cached_attention",
        "new-block",
        cached_attention_matches_numpy(1, 2, 3, 8, 16, [0, 2, 5], 0.3),
    ),
    # Big enough to split over the thread pool.
    ScenarioCase(
        "cached_attention", "parallel", cached_attention_matches_numpy(2, 4, 32, 96, 32, [0, 64])
    ),
    ScenarioCase(
        "cached_attention", "length-outside", cached_attention_refuses_a_length_outside_the_cache
    ),
    ScenarioCase(
        "cached_attention",
        "decode-steps",
        attention_then_write_reads_the_cache_from_before_the_call,
    ),
    ScenarioCase("cache_write", "slices", cache_write_matches_slice_assignment),
    ScenarioCase(
        "cache_write", "outside", cache_write_refuses_rows_past_the_cache_and_writes_nothing
    ),
    ScenarioCase("cached_attention", "decomposition", kernels_match_the_decompositions(1)),
    ScenarioCase("cache_write", "decomposition", kernels_match_the_decompositions(2)),
    ScenarioCase(
        "cached_attention",
        "decomposition-checks",
        decompositions_refuse_positions_outside_the_cache,
    ),
]

_Q = Arg((1, 2, 1, 4), leaf="input")
_CACHE = Arg((1, 2, 6, 4))
_LENGTH = Arg((1,), dtype="int32")
_ATTENTION = (_Q, _CACHE, _CACHE, _Q, _Q, _LENGTH)

ERROR_CASES = [
    ErrorCase(
        "cached_attention",
        (Arg((2, 1, 4), leaf="input"), *_ATTENTION[1:]),
        patterns=(r"q must have rank 4 \(N, H, T, D\)", r"\(2, 1, 4\)"),
        name="rank",
    ),
    ErrorCase(
        "cached_attention",
        (_Q, Arg((1, 3, 6, 4)), Arg((1, 3, 6, 4)), _Q, _Q, _LENGTH),
        patterns=(r"k_cache \(1, 3, 6, 4\) must match q \(1, 2, 1, 4\) in N, H and D",),
        name="heads",
    ),
    ErrorCase(
        "cached_attention",
        (_Q, _CACHE, Arg((1, 2, 5, 4)), _Q, _Q, _LENGTH),
        patterns=(r"v_cache \(1, 2, 5, 4\) must have k_cache's shape \(1, 2, 6, 4\)",),
        name="values",
    ),
    ErrorCase(
        "cached_attention",
        (_Q, _CACHE, _CACHE, Arg((1, 2, 2, 4), leaf="input"), _Q, _LENGTH),
        patterns=(r"k_new \(1, 2, 2, 4\) must have q's shape \(1, 2, 1, 4\)",),
        name="new-keys",
    ),
    ErrorCase(
        "cached_attention",
        (*_ATTENTION[:5], Arg((1,), leaf="input")),
        patterns=(r"length .* int32, got float32",),
        name="length-dtype",
    ),
    ErrorCase(
        "cached_attention",
        (*_ATTENTION[:5], Arg((2,), dtype="int32")),
        patterns=(r"length must be one int32 value of shape \(\) or \(1,\), got \(2,\)",),
        name="length-shape",
    ),
    ErrorCase("cached_attention", _ATTENTION[:5], patterns=(r"expects 6 inputs",), name="arity"),
    ErrorCase(
        "cache_write",
        (Arg((1, 2, 6, 4), leaf="input"), _Q, _LENGTH),
        patterns=(r"first input must be a variable, got 'input'",),
        name="not-a-variable",
    ),
    ErrorCase(
        "cache_write",
        (_CACHE, Arg((1, 2, 1, 8), leaf="input"), _LENGTH),
        patterns=(r"value \(1, 2, 1, 8\) must match cache 'in0' \(1, 2, 6, 4\) in N, H and D",),
        name="width",
    ),
    ErrorCase(
        "cache_write",
        (_CACHE, Arg((1, 2, 7, 4), leaf="input"), _LENGTH),
        patterns=(r"more positions than cache",),
        name="too-long",
    ),
]
