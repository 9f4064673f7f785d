"""Requantization rounds v / output_scale to the nearest even integer exactly, on every int8
kernel path, where a product by the reciprocal would round differently: values a few ulps
from a rounding tie, and ties themselves. The NumPy reference divides in float32.
"""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core
from ops.cases_quantized import reference_quantized_matmul, run_on_every_path


def near_tie_values(output_scale: np.float32) -> np.ndarray:
    """float32 values within 6 ulps of (k + 1/2) * output_scale, for k in [-120, 120)."""
    halves = np.arange(-120, 120, dtype=np.float32) + np.float32(0.5)
    centers = (halves * output_scale).astype(np.float32)
    neighbours = centers.view(np.int32)[:, None] + np.arange(-6, 7, dtype=np.int32)[None, :]
    return neighbours.reshape(-1).view(np.float32)


@pytest.mark.parametrize("output_scale", [0.1, 0.3, 3.0, 0.211])
@pytest.mark.parametrize("dtype, zero_point", [("int8", 0), ("uint8", 128)])
def test_requantizing_near_ties_matches_a_float32_division(output_scale, dtype, zero_point):
    output_scale = np.float32(output_scale)
    values = near_tie_values(output_scale)
    # The data holds values whose product by the reciprocal rounds to another integer.
    quotients = values / output_scale
    products = values * (np.float32(1) / output_scale)
    assert np.count_nonzero(np.rint(quotients) != np.rint(products)) > 0
    # Zero weights: each output channel's value before requantizing is its bias, exactly.
    channels, depth, rows = values.size, 8, 3
    g = _core.Graph()
    x = g.input("x", (-1, depth), "uint8")
    w = g.variable("w", (channels, depth), "int8")
    scale = g.variable("scale", (channels,))
    bias = g.variable("bias", (channels,))
    attrs = {
        "zero_point": 5,
        "dtype": dtype,
        "output_scale": float(output_scale),
        "output_zero_point": zero_point,
    }
    y = g.op("quantized_matmul", [x, w, scale, bias], attrs)
    variables = {
        "w": np.zeros((channels, depth), np.int8),
        "scale": np.full(channels, 0.01, np.float32),
        "bias": values,
    }
    x_value = np.random.default_rng(0).integers(0, 256, (rows, depth)).astype(np.uint8)
    want = reference_quantized_matmul(
        x_value, variables["w"], variables["scale"], values, 5, False, dtype, output_scale,
        zero_point,
    )  # fmt: skip
    for path, (got,) in run_on_every_path(g, [x], [y], variables, [x_value]).items():
        np.testing.assert_array_equal(got, want, err_msg=path)
