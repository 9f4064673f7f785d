"""Sample tiling must change no result where a reduction's reduced axes all have size 1.

A sum over the `seq` axis of a (batch, 1, features) value keeps every element, so it joins a
tiled run; each image then has to write all its features, not one. These graphs are the
bias gradients of independent chains `sum((x + b_i) @ w * u_i)`, and reductions over
size-1 axes directly, compared with tiling on, tiling off and NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

FEATURES, HIDDEN, BATCH = 24, 42, 3


def _bias_gradients(chains: int, seq: int, reverse: bool, tiling: bool, seed: int = 0):
    """Gradients of the sum of `chains` independent chains to their biases, and the plan.

    Args:
        chains: number of chains `sum((x + b_i) @ w * u_i)` sharing x and w.
        seq: size of the symbolic `seq` dim.
        reverse: add the chains' losses last chain first, which reverses the backward order.
        tiling: the engine's `sample_tiling` option.
        seed: seed of the random inputs and weights.

    Returns:
        (gradients, NumPy references, plan lines).
    """
    seq_dim = _core.dim_symbol("seq")
    g = _core.Graph()
    x = g.input("x", (-1, seq_dim, FEATURES), "float32")
    us = [g.input(f"u{i}", (-1, seq_dim, HIDDEN), "float32") for i in range(chains)]
    biases = [g.variable(f"b{i}", (FEATURES,)) for i in range(chains)]
    w = g.variable("w", (FEATURES, HIDDEN))
    losses = []
    for b, u in zip(biases, us):
        y = g.op("matmul", [g.op("add", [x, b], {}), w], {})
        losses.append(g.op("sum", [g.op("mul", [y, u], {})], {"axes": []}))
    if reverse:
        losses.reverse()
    total = losses[0]
    for loss in losses[1:]:
        total = g.op("add", [total, loss], {})
    grads = g.gradients(total, biases)

    engine = _core.Engine(g, seed=0, options={"sample_tiling": tiling})
    rng = np.random.default_rng(seed)
    weights = rng.random((FEATURES, HIDDEN), dtype=np.float32)
    engine.set_variable("w", weights)
    for i in range(chains):
        engine.set_variable(f"b{i}", np.zeros(FEATURES, np.float32))
    engine.define("f", inputs=[x, *us], outputs=list(grads), effects=[])
    xs = rng.random((BATCH, seq, FEATURES), dtype=np.float32)
    u_values = [rng.random((BATCH, seq, HIDDEN), dtype=np.float32) for _ in range(chains)]
    outputs = engine.run("f", [xs, *u_values])
    # d/db_i sum((x + b_i) @ w * u_i) = sum over batch and seq of u_i @ w.T
    references = [
        (u.astype(np.float64) @ weights.T.astype(np.float64)).sum((0, 1)) for u in u_values
    ]
    return outputs, references, engine.describe("f", BATCH, {"seq": seq})


@pytest.mark.parametrize("chains", [2, 3])
@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
@pytest.mark.parametrize("seq", [1, 3])
def test_bias_gradients_of_independent_chains_match_untiled_and_numpy(chains, reverse, seq):
    tiled, references, plan = _bias_gradients(chains, seq, reverse, tiling=True)
    plain, _, plain_plan = _bias_gradients(chains, seq, reverse, tiling=False)
    assert not any("tiled{" in line for line in plain_plan)
    if seq == 1:
        # The size-1 sum joins a run here: the case this file guards.
        assert any("tiled{" in line and "sum" in line for line in plan), plan
    for i, (got, want, reference) in enumerate(zip(tiled, plain, references)):
        np.testing.assert_array_equal(got, want, err_msg=f"b{i}: tiled vs untiled; plan {plan}")
        np.testing.assert_allclose(got, reference, rtol=1e-5, err_msg=f"b{i}: tiled vs NumPy")


def _reduce_after_elementwise(op: str, shape: tuple, axes: list, keepdims: bool, tiling: bool):
    """`op`(relu(x * 2), axes) over a batch of 4, and its plan, under one tiling setting."""
    g = _core.Graph()
    x = g.input("x", (-1, *shape[1:]), "float32")
    two = g.scalar("two", 2.0)
    h = g.op("relu", [g.op("mul", [x, two], {})], {})
    y = g.op(op, [h], {"axes": axes, "keepdims": keepdims})
    engine = _core.Engine(g, seed=0, options={"sample_tiling": tiling})
    engine.define("f", inputs=[x], outputs=[y, h], effects=[])
    xs = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    (out, _) = engine.run("f", [xs])
    return out, xs, engine.describe("f", shape[0])


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize(
    "shape, axes",
    [
        ((4, 1, 24), [1]),
        ((4, 1, 1, 24), [1, 2]),
        ((4, 24, 1), [2]),
        ((4, 1, 6, 4), [1, 2, 3]),
        ((4, 5, 1, 6), [2, 3]),
    ],
    ids=["seq-1", "two-size-1", "trailing-size-1", "leading-size-1-and-block", "size-1-then-block"],
)
@pytest.mark.parametrize("keepdims", [False, True], ids=["dropped", "kept"])
def test_per_image_reductions_over_size_1_axes_match_numpy(op, shape, axes, keepdims):
    tiled, xs, plan = _reduce_after_elementwise(op, shape, axes, keepdims, tiling=True)
    plain, _, _ = _reduce_after_elementwise(op, shape, axes, keepdims, tiling=False)
    reference = getattr(np, op)(np.maximum(xs * 2, 0), axis=tuple(axes), keepdims=keepdims)
    assert any("tiled{" in line and op in line for line in plan), plan
    np.testing.assert_array_equal(tiled, plain, err_msg=f"plan {plan}")
    np.testing.assert_allclose(tiled, reference, rtol=1e-5, atol=1e-6)
