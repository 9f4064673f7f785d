"""The CPU backend's exp and erf ops (erf branch-free, so loops over it vectorize) against
float64 references over the whole float32 range, and layer_norm's statistics (summed in
double over several partial sums) against float64 NumPy on rows with a large mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gometal import _core

F32 = np.finfo(np.float32)


def _unary(op: str, values: np.ndarray) -> np.ndarray:
    g = _core.Graph()
    x = g.input("x", (-1,), "float32")
    y = g.op(op, [x])
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[x], outputs=[y])
    return eng.run("f", [values.astype(np.float32)])[0].astype(np.float64)


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)


def test_exp_is_within_two_ulp_over_the_normal_range():
    x = np.linspace(-87.3, 88.7, 1_000_001).astype(np.float32)
    got = _unary("exp", x)
    assert _ulps(got, np.exp(x.astype(np.float64))).max() <= 2.0


def test_exp_overflows_to_inf_and_underflows_through_subnormals_to_zero():
    x = np.array(
        [88.72, 88.73, 100.0, 1e30, -87.5, -95.0, -103.0, -103.98, -104.5, -1e30], np.float32
    )
    got = _unary("exp", x)
    exact = np.exp(x.astype(np.float64))
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(rounded))
    np.testing.assert_array_equal(got == 0.0, rounded == 0.0)
    finite = np.isfinite(rounded)
    # Subnormal results keep an absolute error of at most one subnormal step.
    smallest_subnormal = float(np.float32(F32.smallest_subnormal))
    two_ulp = 2 * np.spacing(rounded[finite].astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got[finite] - exact[finite]) <= np.maximum(two_ulp, smallest_subnormal))


def test_erf_is_within_2e7_of_the_exact_value():
    x = np.concatenate([np.linspace(-7.0, 7.0, 1_000_001), np.geomspace(1e-30, 1.0, 20_000)])
    x = np.concatenate([x, -x, [0.0, 30.0, -30.0, 1e30]]).astype(np.float32)
    got = _unary("erf", x)
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    error = np.abs(got - exact)
    assert error.max() <= 2e-7
    tiny = np.abs(x) < 1e-3  # near zero the error is relative: erf(x) ~ 2x / sqrt(pi)
    assert np.all(error[tiny] <= 4 * np.spacing(np.abs(exact[tiny]).astype(np.float32)))


@pytest.mark.parametrize("op", ["exp", "erf"])
def test_nan_stays_nan(op):
    g = _core.Graph()
    x = g.input("x", (-1,), "float32")
    nan = g.op("log", [g.op("neg", [g.op("abs", [x])])])  # log of a negative number
    y = g.op(op, [nan])
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[x], outputs=[y])
    got = eng.run("f", [np.array([1.0, 2.0, 3.0], np.float32)])[0]
    assert np.isnan(got).all()


def test_layer_norm_of_rows_with_a_large_mean_matches_float64():
    rng = np.random.default_rng(0)
    dim = 203  # not a multiple of the eight partial sums
    x = (1000.0 + rng.standard_normal((37, dim))).astype(np.float32)
    upstream = rng.standard_normal((37, dim)).astype(np.float32)
    weight = rng.uniform(0.5, 1.5, dim).astype(np.float32)
    g = _core.Graph()
    xi = g.input("x", (-1, dim), "float32")
    gi = g.input("g", (-1, dim), "float32")
    w = g.constant(weight)
    y = g.op("layer_norm", [xi, w], {"eps": 1e-5})
    dx = g.op("layer_norm_grad", [xi, gi, w], {"eps": 1e-5})
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[xi, gi], outputs=[y, dx])
    got_y, got_dx = eng.run("f", [x, upstream])

    x64, g64 = x.astype(np.float64), upstream.astype(np.float64) * weight
    mean = x64.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(x64.var(axis=1, keepdims=True) + 1e-5)
    xhat = (x64 - mean) * rstd
    want_dx = rstd * (
        g64 - g64.mean(axis=1, keepdims=True) - xhat * (g64 * xhat).mean(axis=1, keepdims=True)
    )
    # x - mean is taken in float32 (an ulp of 1000 is 6e-5); a variance summed in float32
    # would be off by about 1e-2 here.
    np.testing.assert_allclose(got_y, xhat * weight, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-4, atol=2e-4)
