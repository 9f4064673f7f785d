"""Linked int8 convolution chains: when a chain's quantized output (quantized_conv2d ->
[max_pool2d] -> quantize) is read only by the next chain's convolution, the two run as one
step whose intermediate bytes stay channels-last in scratch. Every result is bit exact
against the integer NumPy references of the op harness, on every int8 kernel path.
"""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core
from ops.cases_quantized import (
    RANGES,
    engine_of,
    random_quantized,
    reference_max_pool,
    reference_quantize,
    reference_quantized_conv2d,
    reference_quantized_matmul,
    run_on_every_path,
)

POOL_2X2 = ((2, 2), (2, 2), (0, 0))
POOL_3X3 = ((3, 3), (2, 2), (1, 1))

# Per stage: (out channels, conv padding, pool or None, quantized dtype).
THREE_POOLED = [(8, 1, POOL_2X2, "uint8"), (16, 1, POOL_2X2, "uint8"), (20, 1, POOL_2X2, "uint8")]
MIXED = [(5, 0, None, "int8"), (18, 1, POOL_3X3, "uint8"), (7, 1, POOL_2X2, "int8")]


class ChainGraph:
    """A graph of stages, each a quantized_conv2d with relu, an optional max pooling and a
    quantize, the last one flattened into a quantized_matmul; with the NumPy reference of
    every quantized value."""

    def __init__(self, rng, image_shape, stages, flatten=True):
        self.g = _core.Graph()
        self.variables: dict[str, np.ndarray] = {}
        self.x = self.g.input("x", (-1, *image_shape), "uint8")
        self.stages = stages
        self.quantized: list[int] = []
        value, zero, channels = self.x, 9, image_shape[0]
        self.parameters = []
        for i, (out, padding, pool, dtype) in enumerate(stages):
            w_shape = (out, channels, 3, 3)
            w = self.g.variable(f"w{i}", w_shape, "int8")
            scale = self.g.variable(f"scale{i}", (out,))
            bias = self.g.variable(f"bias{i}", (out,))
            self.variables[f"w{i}"] = random_quantized(rng, w_shape, "int8")
            self.variables[f"scale{i}"] = rng.uniform(2e-3, 8e-3, out).astype(np.float32)
            self.variables[f"bias{i}"] = rng.standard_normal(out).astype(np.float32)
            attrs = {"zero_point": zero, "relu": True, "padding": [padding, padding]}
            conv = self.g.op("quantized_conv2d", [value, w, scale, bias], attrs)
            if pool is not None:
                kernel, stride, pool_padding = pool
                pool_attrs = {"kernel_size": list(kernel), "stride": list(stride)}
                conv = self.g.op(
                    "max_pool2d", [conv], {**pool_attrs, "padding": list(pool_padding)}
                )
            last = i == len(stages) - 1
            if last and flatten:
                features = int(np.prod(self.g.shape(conv)[1:]))
                conv = self.g.op("reshape", [conv], {"shape": [-1, features]})
            out_zero = RANGES[dtype][0] + 13 + i
            value = self.g.op(
                "quantize", [conv], {"scale": 0.05, "zero_point": out_zero, "dtype": dtype}
            )
            self.parameters.append((zero, padding, pool, out_zero, dtype))
            self.quantized.append(value)
            zero, channels = out_zero, out
        self.dense_zero = zero
        self.dense = None
        if flatten:
            features = self.g.shape(value)[1]
            dense_w = self.g.variable("dense_w", (3, features), "int8")
            dense_scale = self.g.variable("dense_scale", (3,))
            self.variables["dense_w"] = random_quantized(rng, (3, features), "int8")
            self.variables["dense_scale"] = rng.uniform(1e-3, 4e-3, 3).astype(np.float32)
            self.dense = self.g.op(
                "quantized_matmul", [value, dense_w, dense_scale], {"zero_point": zero}
            )

    def reference(self, x: np.ndarray) -> list[np.ndarray]:
        """Every stage's quantized value, then the dense output if there is one."""
        values, value = [], x
        for i, (zero, padding, pool, out_zero, dtype) in enumerate(self.parameters):
            floats = reference_quantized_conv2d(
                value, self.variables[f"w{i}"], self.variables[f"scale{i}"],
                self.variables[f"bias{i}"], zero, (1, 1), (padding, padding), (1, 1), True,
                "float32", 0, 0,
            )  # fmt: skip
            if pool is not None:
                floats = reference_max_pool(floats, *pool)
            value = reference_quantize(floats, 0.05, out_zero, dtype)
            values.append(value)
        if self.dense is not None:
            flat = value.reshape(value.shape[0], -1)
            dense = reference_quantized_matmul(
                flat, self.variables["dense_w"], self.variables["dense_scale"], None,
                self.dense_zero, False, "float32", 0, 0,
            )  # fmt: skip
            values.append(dense)
        return values

    def describe(self, outputs, batch: int) -> list[str]:
        return engine_of(self.g, [self.x], outputs, self.variables).describe("f", batch)


def stage_names(stages) -> str:
    return ",".join(
        "quantized_conv2d," + ("max_pool2d," if pool else "") + "quantize"
        for _, _, pool, _ in stages
    )


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize(
    "image_shape, stages",
    [((3, 16, 16), THREE_POOLED), ((4, 11, 9), MIXED)],
    ids=["three-pooled", "unpooled-3x3-pool-int8"],
)
def test_linked_chains_match_the_reference_on_every_path(rng, image_shape, stages, batch):
    chain = ChainGraph(rng, image_shape, stages)
    x = random_quantized(rng, (batch, *image_shape), "uint8")
    want = chain.reference(x)
    outputs = [chain.quantized[-1], chain.dense]
    for path, got in run_on_every_path(chain.g, [chain.x], outputs, chain.variables, [x]).items():
        np.testing.assert_array_equal(got[0].reshape(want[-2].shape), want[-2], err_msg=path)
        np.testing.assert_array_equal(got[1], want[-1], err_msg=path)
    # Every stage in one step: the values between them have no buffer of their own.
    assert any(
        line.startswith(stage_names(stages) + " ") for line in chain.describe(outputs, batch)
    )


def test_a_returned_value_between_chains_keeps_its_buffer_and_its_bytes(rng):
    """The middle stage's quantized value is also an output: the chain before it ends there,
    the chain after it reads the buffer, and every value matches the reference."""
    chain = ChainGraph(rng, (3, 12, 12), THREE_POOLED)
    x = random_quantized(rng, (2, 3, 12, 12), "uint8")
    want = chain.reference(x)
    outputs = [chain.quantized[1], chain.dense]
    for path, got in run_on_every_path(chain.g, [chain.x], outputs, chain.variables, [x]).items():
        np.testing.assert_array_equal(got[0], want[1], err_msg=path)
        np.testing.assert_array_equal(got[1], want[-1], err_msg=path)
    lines = chain.describe(outputs, 2)
    assert any(line.startswith(stage_names(THREE_POOLED[:2]) + " ") for line in lines), lines
    assert any(line.startswith(stage_names(THREE_POOLED[2:]) + " ") for line in lines), lines


def test_a_chain_ending_in_a_convolution_writes_nchw(rng):
    """Two linked stages without a flatten: the last one's value comes back as (N, C, H, W)."""
    stages = THREE_POOLED[:2]
    chain = ChainGraph(rng, (3, 8, 8), stages, flatten=False)
    x = random_quantized(rng, (3, 3, 8, 8), "uint8")
    want = chain.reference(x)
    outputs = [chain.quantized[-1]]
    for path, got in run_on_every_path(chain.g, [chain.x], outputs, chain.variables, [x]).items():
        np.testing.assert_array_equal(got[0], want[-1], err_msg=path)
    assert any(line.startswith(stage_names(stages) + " ") for line in chain.describe(outputs, 3))


@pytest.mark.parametrize("signs", ["positive", "negative-and-zero"])
def test_pooled_chains_on_odd_planes_and_any_scale_sign_match_the_reference(rng, signs):
    # A 2x2 pooling over the int32 sums holds for non-decreasing epilogues only (every scale
    # positive); other scales pool the quantized values. 9 x 7 planes leave a row and a column
    # outside every window.
    stages = [(6, 1, POOL_2X2, "int8"), (17, 1, POOL_2X2, "uint8")]
    chain = ChainGraph(rng, (3, 9, 7), stages)
    if signs != "positive":
        chain.variables["scale0"][::2] *= -1.0
        chain.variables["scale1"][3] = 0.0
        chain.variables["scale1"][5] *= -1.0
    x = random_quantized(rng, (3, 3, 9, 7), "uint8")
    want = chain.reference(x)
    outputs = [chain.quantized[-1], chain.dense]
    for path, got in run_on_every_path(chain.g, [chain.x], outputs, chain.variables, [x]).items():
        np.testing.assert_array_equal(got[0].reshape(want[-2].shape), want[-2], err_msg=path)
        np.testing.assert_array_equal(got[1], want[-1], err_msg=path)
