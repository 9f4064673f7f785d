"""The gelu and gelu_grad ops: their kernels against their decompositions (the erf formula
in primitives), and the exact GELU's value and gradients against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special

from gometal import _core
from gometal.graph.composites import gelu as gelu_composite


def _run(build, feeds, options):
    g = _core.Graph()
    inputs, outputs = build(g)
    engine = _core.Engine(g, seed=0, backend="cpu", options=options)
    engine.define("f", inputs=inputs, outputs=outputs, effects=[], advance_rng=False)
    plan = engine.describe("f", feeds[0].shape[0])
    return [np.asarray(r) for r in engine.run("f", feeds)], plan


def _gelu_and_gradients(g):
    """gelu(x), and through a weighted sum, its gradient (gelu_grad) and that gradient's own
    gradients with respect to x and the cotangent (gelu_grad's VJP)."""
    x = g.input("x", (-1, 37))
    weights = g.input("w", (-1, 37))
    y = g.op("gelu", [x])
    loss = g.op("sum", [g.op("mul", [y, weights])], {"axes": []})
    (dx,) = g.gradients(loss, [x])
    second = g.op("sum", [g.op("square", [dx])], {"axes": []})
    dxx, dww = g.gradients(second, [x, weights])
    return [x, weights], [y, dx, dxx, dww]


@pytest.mark.parametrize("batch", [1, 6])
def test_kernels_match_their_decompositions(batch: int) -> None:
    rng = np.random.default_rng(batch)
    feeds = [
        (rng.standard_normal((batch, 37)) * 3).astype(np.float32),
        rng.standard_normal((batch, 37)).astype(np.float32),
    ]
    kernel, plan = _run(_gelu_and_gradients, feeds, {})
    reference, plan_without = _run(
        _gelu_and_gradients, feeds, {"without_kernels": ["gelu", "gelu_grad"]}
    )
    assert any("gelu_grad" in line for line in plan), plan
    assert not any("gelu" in line for line in plan_without), plan_without
    for got, want in zip(kernel, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_op_equals_the_composite_layers_used_before() -> None:
    """The op computes what graph.composites.gelu (the erf chain) computes, value and
    gradient, so models that switched to the op train as before."""
    rng = np.random.default_rng(3)
    feeds = [(rng.standard_normal((4, 37)) * 4).astype(np.float32)]

    def build(use_op):
        def graph(g):
            x = g.input("x", (-1, 37))
            y = g.op("gelu", [x]) if use_op else gelu_composite(g, x)
            (dx,) = g.gradients(g.op("sum", [g.op("square", [y])], {"axes": []}), [x])
            return [x], [y, dx]

        return graph

    (y_op, dx_op), _ = _run(build(True), feeds, {})
    (y_chain, dx_chain), _ = _run(build(False), feeds, {})
    np.testing.assert_allclose(y_op, y_chain, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx_op, dx_chain, rtol=1e-5, atol=1e-6)


def test_value_and_gradients_match_torch() -> None:
    values = np.linspace(-9.0, 9.0, 7 * 37, dtype=np.float32).reshape(7, 37)
    cotangent = np.random.default_rng(0).standard_normal((7, 37)).astype(np.float32)
    (y, dx, dxx, dww), _ = _run(_gelu_and_gradients, [values, cotangent], {})

    x_t = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    w_t = torch.tensor(cotangent, dtype=torch.float64, requires_grad=True)
    y_t = torch.nn.functional.gelu(x_t)
    (dx_t,) = torch.autograd.grad((y_t * w_t).sum(), x_t, create_graph=True)
    dxx_t, dww_t = torch.autograd.grad(dx_t.square().sum(), [x_t, w_t])
    for got, want in [(y, y_t), (dx, dx_t), (dxx, dxx_t), (dww, dww_t)]:
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-6)


def _gelu_kernels(width: int):
    def build(g):
        x = g.input("x", (-1, width))
        cotangent = g.input("g", (-1, width))
        return [x, cotangent], [g.op("gelu", [x]), g.op("gelu_grad", [x, cotangent])]

    return build


def test_kernels_match_the_normal_distribution_in_float64() -> None:
    """gelu = x Phi(x) and gelu_grad = g (Phi(x) + x phi(x)) on a dense grid against scipy's
    Phi in float64: relative error within 6e-6 (x^2 / 2 rounds to float32 in phi's exponent),
    in the negative tail too, where 1 + erf(x / sqrt 2) would cancel; Phi below 1e-38 is 0."""
    values = np.linspace(-13.0, 13.0, 26 * 1000, dtype=np.float32).reshape(26, 1000)
    (y, slope), _ = _run(_gelu_kernels(1000), [values, np.ones_like(values)], {})
    x = values.astype(np.float64)
    cdf = special.ndtr(x)
    density = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    np.testing.assert_allclose(y, x * cdf, rtol=6e-6, atol=1e-37)
    # The slope crosses zero near x = -0.75: there its error is float32 rounding of the sum.
    np.testing.assert_allclose(slope, cdf + x * density, rtol=6e-6, atol=3e-8)


def test_kernels_far_in_the_tails() -> None:
    tails = np.array([[-3e38, -1e30, -40.0, -13.5, 13.5, 40.0, 1e30, 3e38]], np.float32)
    (y, slope), _ = _run(_gelu_kernels(tails.shape[1]), [tails, np.full_like(tails, 2.0)], {})
    np.testing.assert_array_equal(y, np.where(tails < 0, 0.0, tails))
    np.testing.assert_array_equal(slope, np.where(tails < 0, 0.0, 2.0))
