"""Requantization rounds v / output_scale to the nearest even integer exactly, on every int8
kernel path, where a product by the reciprocal would round differently: values a few ulps
from a rounding tie, and ties themselves. The NumPy reference divides in float32.
"""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core
from ops.cases_quantized import reference_quantize, reference_quantized_matmul, run_on_every_path


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


@pytest.mark.parametrize("scale", [0.1, 0.3, 3.0, 0.211])
@pytest.mark.parametrize("dtype, zero_point", [("int8", 0), ("uint8", 128)])
def test_quantize_near_ties_matches_a_float32_division(scale, dtype, zero_point):
    """The quantize op alone, and folded into the copy of a convolution's input, where the
    convolution's float32 output shows each quantized byte (a 1x1 kernel of weight 1, scale 1)."""
    scale = np.float32(scale)
    values = near_tie_values(scale)
    assert np.count_nonzero(np.rint(values / scale) != np.rint(values * (1 / scale))) > 0
    # Images of 48 values: the vector loop and its scalar tail both run per image.
    images = values[: values.size // 48 * 48].reshape(-1, 1, 6, 8)
    g = _core.Graph()
    x = g.input("x", (-1, 1, 6, 8), "float32")
    attrs = {"scale": float(scale), "zero_point": zero_point, "dtype": dtype}
    alone = g.op("quantize", [x], attrs)
    folded = g.op("quantize", [x], attrs)
    w, ones = g.variable("w", (1, 1, 1, 1), "int8"), g.variable("ones", (1,))
    shifted = g.op("quantized_conv2d", [folded, w, ones], {"zero_point": 0})
    variables = {"w": np.ones((1, 1, 1, 1), np.int8), "ones": np.ones(1, np.float32)}
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("f", inputs=[x], outputs=[alone, shifted])
    plan = engine.describe("f", len(images))
    assert any(line.startswith("quantize,quantized_conv2d ") for line in plan), plan
    want = reference_quantize(images, scale, zero_point, dtype)
    for path, got in run_on_every_path(g, [x], [alone, shifted], variables, [images]).items():
        np.testing.assert_array_equal(got[0], want, err_msg=path)
        np.testing.assert_array_equal(got[1], want.astype(np.float32), err_msg=path)
