"""A quantize of a float32 value read only by a quantized_conv2d, as its input, joins the
convolution's step: the kernel quantizes each image as it copies it channels-last (a quantized
model's first layer, whose float input is otherwise quantized in a pass of its own). Every
result is bit exact against the integer NumPy references of the op harness, on every int8
kernel path, including values on rounding ties and past the saturation bounds.
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
    run_on_every_path,
)

INPUT_SCALE = 0.25
POOL_2X2 = ((2, 2), (2, 2), (0, 0))


def float_images(rng: np.random.Generator, shape, zero_point: int, dtype: str) -> np.ndarray:
    """Images whose quantized values cover the whole range and beyond (saturation), a third of
    them exactly on a rounding tie (k + 0.5 steps of the scale)."""
    low, high = RANGES[dtype]
    steps = rng.integers(low - zero_point - 20, high - zero_point + 20, shape).astype(np.float32)
    ties = rng.random(shape) < 1 / 3
    steps[ties] += np.float32(0.5)
    steps[~ties] += rng.uniform(-0.45, 0.45, int((~ties).sum())).astype(np.float32)
    return steps * np.float32(INPUT_SCALE)


class FoldedGraph:
    """x float32 -> quantize -> quantized_conv2d (relu) [-> max_pool2d -> quantize ->
    quantized_conv2d ...], with the NumPy reference of every stage."""

    def __init__(self, rng, channels, stages, input_dtype="uint8", input_zero=7, conv_zero=None):
        self.g = _core.Graph()
        self.x = self.g.input("x", (-1, channels, 9, 10), "float32")
        self.input = (input_dtype, input_zero)
        self.quantized = self.g.op(
            "quantize",
            [self.x],
            {"scale": INPUT_SCALE, "zero_point": input_zero, "dtype": input_dtype},
        )
        # The convolution's own zero point may differ from the quantize's (its rows' padding).
        zero = input_zero if conv_zero is None else conv_zero
        self.variables: dict[str, np.ndarray] = {}
        self.stages = []
        self.outputs = []
        value = self.quantized
        for i, (out, pooled, out_dtype) in enumerate(stages):
            w = self.g.variable(f"w{i}", (out, channels, 3, 3), "int8")
            scale = self.g.variable(f"scale{i}", (out,))
            bias = self.g.variable(f"bias{i}", (out,))
            self.variables[f"w{i}"] = random_quantized(rng, (out, channels, 3, 3), "int8")
            self.variables[f"scale{i}"] = rng.uniform(2e-3, 8e-3, out).astype(np.float32)
            self.variables[f"bias{i}"] = rng.standard_normal(out).astype(np.float32)
            attrs = {"zero_point": zero, "relu": True, "padding": [1, 1]}
            value = self.g.op("quantized_conv2d", [value, w, scale, bias], attrs)
            if pooled:
                value = self.g.op("max_pool2d", [value], {"kernel_size": [2, 2], "stride": [2, 2]})
            out_zero = None
            if out_dtype is not None:
                out_zero = RANGES[out_dtype][0] + 11 + i
                value = self.g.op(
                    "quantize", [value], {"scale": 0.05, "zero_point": out_zero, "dtype": out_dtype}
                )
            self.stages.append((zero, pooled, out_zero, out_dtype))
            zero, channels = out_zero, out
        self.outputs.append(value)

    def reference(self, x: np.ndarray) -> np.ndarray:
        value = reference_quantize(x, INPUT_SCALE, self.input[1], self.input[0])
        for i, (zero, pooled, out_zero, out_dtype) in enumerate(self.stages):
            value = reference_quantized_conv2d(
                value, self.variables[f"w{i}"], self.variables[f"scale{i}"],
                self.variables[f"bias{i}"], zero, (1, 1), (1, 1), (1, 1), True, "float32", 0, 0,
            )  # fmt: skip
            if pooled:
                value = reference_max_pool(value, *POOL_2X2)
            if out_dtype is not None:
                value = reference_quantize(value, 0.05, out_zero, out_dtype)
        return value

    def describe(self, outputs, batch: int) -> list[str]:
        return engine_of(self.g, [self.x], outputs, self.variables).describe("f", batch)


def check_every_path(graph: FoldedGraph, x: np.ndarray, outputs) -> list[np.ndarray]:
    results = run_on_every_path(graph.g, [graph.x], outputs, graph.variables, [x])
    want = graph.reference(x)
    for path, got in results.items():
        np.testing.assert_array_equal(got[0], want, err_msg=path)
    return list(results.values())


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("channels", [3, 4])
def test_a_linked_chain_quantizes_its_float_input_in_its_own_step(rng, batch, channels):
    stages = [(8, True, "uint8"), (12, True, "uint8")]
    graph = FoldedGraph(rng, channels, stages)
    x = float_images(rng, (batch, channels, 9, 10), 7, "uint8")
    check_every_path(graph, x, graph.outputs)
    lines = graph.describe(graph.outputs, batch)
    head = "quantize,quantized_conv2d,max_pool2d,quantize,quantized_conv2d,max_pool2d,quantize "
    assert any(line.startswith(head) for line in lines), lines
    assert not any(line.startswith("quantize (") for line in lines), lines


def test_an_int8_input_with_its_own_zero_point_feeds_an_unmerged_convolution(rng):
    """int8 quantized input (shifted to uint8 by the copy), a convolution whose zero point is
    not the quantize's, and whose float32 output is the result: the step is the two nodes."""
    graph = FoldedGraph(rng, 3, [(6, False, None)], input_dtype="int8", input_zero=-5, conv_zero=3)
    x = float_images(rng, (4, 3, 9, 10), -5, "int8")
    check_every_path(graph, x, graph.outputs)
    lines = graph.describe(graph.outputs, 4)
    assert any(line.startswith("quantize,quantized_conv2d (4, 6, 9, 10)") for line in lines), lines


def test_a_quantized_input_read_elsewhere_keeps_its_own_step_and_bytes(rng):
    graph = FoldedGraph(rng, 3, [(8, True, "uint8")])
    x = float_images(rng, (2, 3, 9, 10), 7, "uint8")
    outputs = [graph.outputs[0], graph.quantized]
    for got in check_every_path(graph, x, outputs):
        np.testing.assert_array_equal(got[1], reference_quantize(x, INPUT_SCALE, 7, "uint8"))
    lines = graph.describe(outputs, 2)
    assert any(line.startswith("quantize (2, 3, 9, 10)") for line in lines), lines


def test_with_the_fold_turned_off_the_quantize_keeps_its_step_and_the_bytes(rng, monkeypatch):
    # GOMETAL_INT8_INPUT_FOLD=0 (the benchmark's A/B of the fold) changes the plan, not a value.
    graph = FoldedGraph(rng, 3, [(8, True, "uint8"), (12, True, "uint8")])
    x = float_images(rng, (3, 3, 9, 10), 7, "uint8")
    monkeypatch.setenv("GOMETAL_INT8_INPUT_FOLD", "0")
    check_every_path(graph, x, graph.outputs)
    lines = graph.describe(graph.outputs, 3)
    assert any(line.startswith("quantize (3, 3, 9, 10)") for line in lines), lines
    assert not any(line.startswith("quantize,quantized_conv2d") for line in lines), lines


def test_an_unknown_fold_setting_is_refused_naming_the_variable(rng, monkeypatch):
    graph = FoldedGraph(rng, 3, [(8, True, "uint8")])
    monkeypatch.setenv("GOMETAL_INT8_INPUT_FOLD", "yes")
    with pytest.raises(ValueError, match=r"GOMETAL_INT8_INPUT_FOLD must be 0 or 1, got 'yes'"):
        graph.describe(graph.outputs, 2)
