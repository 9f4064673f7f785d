"""A batched product x^T g that is only summed over its batch (a weight's gradient) runs as
one product over all rows; the result matches NumPy, and products that are read
otherwise, or whose operands broadcast, keep their per-sample kernel."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

FOLDED = "(batch summed in one product)"


def _run(a_shape, b_shape, axes, keepdims=True, also_output_product=False):
    rng = np.random.default_rng(0)
    g = _core.Graph()
    a = g.input("a", a_shape, "float32")
    b = g.input("b", b_shape, "float32")
    product = g.op("matmul", [a, b], {"transpose_a": True, "transpose_b": False})
    total = g.op("sum", [product], {"axes": axes, "keepdims": keepdims})
    outputs = [total, product] if also_output_product else [total]
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[a, b], outputs=outputs)
    a_value = rng.standard_normal(a_shape).astype(np.float32)
    b_value = rng.standard_normal(b_shape).astype(np.float32)
    got = eng.run("f", [a_value, b_value])
    per_sample = np.matmul(
        np.swapaxes(a_value, -1, -2).astype(np.float64), b_value.astype(np.float64)
    )
    want = per_sample.sum(axis=tuple(axes), keepdims=keepdims)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-4)
    plan = eng.describe("f", a_shape[0])
    return plan, got


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "axes", "keepdims"),
    [((12, 64, 128), (12, 64, 96), [0], True), ((3, 4, 5, 7), (3, 4, 5, 6), [0, 1], False)],
)
def test_a_product_summed_over_its_batch_is_one_product(a_shape, b_shape, axes, keepdims):
    plan, _ = _run(a_shape, b_shape, axes, keepdims)
    assert sum(FOLDED in line for line in plan) == 2, plan  # the product and its sum


def test_a_product_read_elsewhere_keeps_its_per_sample_values():
    plan, got = _run((4, 6, 5), (4, 6, 3), [0], also_output_product=True)
    assert not any(FOLDED in line for line in plan), plan
    assert got[1].shape == (4, 5, 3)


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "axes"),
    [((4, 6, 5), (1, 6, 3), [0]), ((4, 6, 5), (4, 6, 3), [1]), ((2, 4, 6, 5), (2, 4, 6, 3), [0])],
)
def test_broadcast_operands_and_partial_sums_are_not_folded(a_shape, b_shape, axes):
    plan, _ = _run(a_shape, b_shape, axes)
    assert not any(FOLDED in line for line in plan), plan
