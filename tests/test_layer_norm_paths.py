"""Layer and RMS normalisation on each vector path GOMETAL_NORM_KERNEL forces (AVX-512, AVX2
and portable vectors): outputs and the gradients of x, weight and bias against torch in float64,
at widths that leave a remainder past the vectors, with and without the forward pass keeping
the row statistics for the backward pass, and rows of large values with a small spread."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_paths import vector_path_available
from norm_checks import EPS, norm_engine, torch_norm

PATHS = ["portable", "avx2", "avx512"]
VARIABLE = "GOMETAL_NORM_KERNEL"
# Less than a vector (2, 7), a vector and a remainder, two AVX-512 vectors and 5 more.
DIMS = [2, 7, 20, 45, 133]


def _check(op: str, path: str, x: np.ndarray, monkeypatch, xhat_atol: float = 1e-5) -> None:
    """xhat_atol bounds the error of x's normalised values; dx's error is rstd times it, and
    the affine sums add one such error per row."""
    if not vector_path_available(path):
        pytest.fail(f"this CPU lacks the {path} path's instructions; run on x86_64 with AVX-512")
    monkeypatch.setenv(VARIABLE, path)
    rows, dim = x.shape
    engine = norm_engine(op, dim)
    rng = np.random.default_rng(dim)
    t = rng.standard_normal((rows, dim)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, dim).astype(np.float32)
    b = rng.standard_normal(dim).astype(np.float32)
    engine.set_variable("w", w)
    if op == "layer_norm":
        engine.set_variable("b", b)
    want = torch_norm(op, x, t, w, b)
    got_all = engine.run("all", [x, t])
    got_grads = engine.run("grads", [x, t])
    centred = x.astype(np.float64) - (
        x.mean(axis=1, keepdims=True, dtype=np.float64) if op == "layer_norm" else 0
    )
    rstd = 1.0 / np.sqrt((centred**2).mean(axis=1).max() + EPS)
    atols = {
        "y": xhat_atol,
        "dx": 4 * xhat_atol * max(rstd, 1.0),
        "dw": 4 * rows * xhat_atol,
        "db": 1e-5 * rows,
    }
    for plan, outputs, refs in [("all", got_all, want), ("grads", got_grads, want[1:])]:
        names = ["y", "dx", "dw", "db"] if plan == "all" else ["dx", "dw", "db"]
        for name, got, ref in zip(names, outputs, refs):
            np.testing.assert_allclose(
                got, ref, rtol=1e-4, atol=atols[name], err_msg=f"{op} {name} ({plan}) on {path}"
            )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_each_path_matches_torch(op, dim, path, monkeypatch):
    rng = np.random.default_rng(3 * dim)
    x = (0.5 + 2.0 * rng.standard_normal((37, dim))).astype(np.float32)
    _check(op, path, x, monkeypatch)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dim", [45, 1027])
def test_large_values_with_a_small_spread_keep_their_precision(dim, path, monkeypatch):
    # A mean of 1000 and a spread of 0.01: E[x^2] - E[x]^2 in float32 would lose every digit,
    # and a float32 mean a few units in its last place off moves every xhat by hundredths. The
    # mean may be off by half a unit (it is kept as a float32), which rstd = 100 magnifies.
    rng = np.random.default_rng(11)
    x = (1000.0 + 0.01 * rng.standard_normal((9, dim))).astype(np.float32)
    _check(
        "layer_norm", path, x, monkeypatch, xhat_atol=float(np.spacing(np.float32(1000.0))) * 100.0
    )


def test_an_unknown_path_names_the_variable_and_the_value(monkeypatch):
    monkeypatch.setenv(VARIABLE, "sse9")
    engine = norm_engine("layer_norm", 8)
    x = np.ones((2, 8), np.float32)
    with pytest.raises(
        ValueError, match=r"\[layer_norm\] GOMETAL_NORM_KERNEL must be .*, got 'sse9'"
    ):
        engine.run("all", [x, x])
