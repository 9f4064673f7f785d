"""int8 quantization ops against integer NumPy references, bit exact: quantize and dequantize
(ONNX QuantizeLinear / DequantizeLinear, per tensor) and the int8 dense and convolution
(int32 sums, then rescale, bias, relu and optional requantization in the epilogue).

Every int8 product runs once per kernel path this CPU has (GOMETAL_INT8_KERNEL forces one;
the portable path runs everywhere), so each instruction-set path meets the same reference.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import pytest

from cpu_paths import cpu_flags
from gometal import _core

from .harness import Arg, ErrorCase, ScenarioCase

RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
NUMPY_TYPES = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32}
# The /proc/cpuinfo flags each path needs.
PATH_FLAGS = {
    "portable": (),
    "avx2": ("avx2",),
    "avxvnni": ("avx2", "avx_vnni"),
    "avx512vnni": ("avx512f", "avx512bw", "avx512_vnni"),
}


def int8_paths() -> list[str]:
    """The int8 kernel paths this CPU runs, portable first."""
    flags = cpu_flags()
    return [path for path, needs in PATH_FLAGS.items() if all(f in flags for f in needs)]


@contextlib.contextmanager
def int8_path(path: str) -> Iterator[None]:
    """Forces the int8 kernel path of engines whose plans compile inside the block."""
    before = os.environ.get("GOMETAL_INT8_KERNEL")
    os.environ["GOMETAL_INT8_KERNEL"] = path
    try:
        yield
    finally:
        if before is None:
            del os.environ["GOMETAL_INT8_KERNEL"]
        else:
            os.environ["GOMETAL_INT8_KERNEL"] = before


def reference_quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    low, high = RANGES[dtype]
    q = np.rint(x.astype(np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, low, high).astype(NUMPY_TYPES[dtype])


def reference_dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale)


def reference_epilogue(
    sums: np.ndarray, scale, bias, relu: bool, out: str, out_scale, out_zero
) -> np.ndarray:
    """sums (..., O) int64 of (x - zero_point) * w; channels on the last axis."""
    v = sums.astype(np.float32) * scale
    if bias is not None:
        v = v + bias
    if relu:
        v = np.maximum(v, np.float32(0))
    return v if out == "float32" else reference_quantize(v, out_scale, out_zero, out)


def reference_quantized_matmul(x, w, scale, bias, zero_point, relu, out, out_scale, out_zero):
    sums = (x.astype(np.int64) - zero_point) @ w.astype(np.int64).T
    return reference_epilogue(sums, scale, bias, relu, out, out_scale, out_zero)


def reference_quantized_conv2d(
    x, w, scale, bias, zero_point, stride, padding, dilation, relu, out, out_scale, out_zero
):
    centered = np.pad(
        x.astype(np.int64) - zero_point, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2)
    )
    n, _, h, width = centered.shape
    o, _, kh, kw = w.shape
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    sums = np.zeros((n, oh, ow, o), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation[0], kx * dilation[1]
            window = centered[
                :,
                :,
                y0 : y0 + stride[0] * (oh - 1) + 1 : stride[0],
                x0 : x0 + stride[1] * (ow - 1) + 1 : stride[1],
            ]
            sums += np.einsum("nchw,oc->nhwo", window, w[:, :, ky, kx].astype(np.int64))
    return reference_epilogue(sums, scale, bias, relu, out, out_scale, out_zero).transpose(
        0, 3, 1, 2
    )


def random_quantized(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    low, high = RANGES[dtype]
    return rng.integers(low, high + 1, shape).astype(NUMPY_TYPES[dtype])


def quantize_matches_the_reference(backend, rng):
    """On every int8 path: AVX-512's quantizes 16 values at a time, the others one by one."""
    scale = 0.05
    halves = (np.arange(-40, 40) + 0.5).astype(np.float32) * np.float32(scale)  # ties: to even
    cases = [
        (p, d, z) for p in int8_paths() for d, z in (("uint8", 128), ("int8", -3), ("uint8", 0))
    ]
    for path, dtype, zero_point in cases:
        g = _core.Graph()
        x = g.input("x", (-1, 20))  # rows of 20: the 16-wide loop leaves tails
        q = g.op("quantize", [x], {"scale": scale, "zero_point": zero_point, "dtype": dtype})
        back = g.op("dequantize", [q], {"scale": scale, "zero_point": zero_point})
        assert g.dtype(q) == dtype and g.dtype(back) == "float32"
        for values in (
            rng.standard_normal((70, 20)) * 4,
            halves.reshape(4, 20),
            rng.standard_normal((3, 20)) * 1e3,
        ):
            values = values.astype(np.float32)
            with int8_path(path):  # plans compile per batch size, under the path
                engine = _core.Engine(g, seed=0, backend=backend)
                engine.define("f", inputs=[x], outputs=[q, back])
                got_q, got_back = engine.run("f", [values])
            want = reference_quantize(values, scale, zero_point, dtype)
            assert got_q.dtype == want.dtype
            np.testing.assert_array_equal(got_q, want, err_msg=f"path {path}")
            np.testing.assert_array_equal(got_back, reference_dequantize(want, scale, zero_point))


def dequantize_matches_the_reference(backend, rng):
    for dtype, zero_point, scale in (("uint8", 7, 0.1), ("int8", 0, 3.5e-3)):
        g = _core.Graph()
        q = g.input("q", (-1, 5, 9), dtype)
        x = g.op("dequantize", [q], {"scale": scale, "zero_point": zero_point})
        engine = _core.Engine(g, seed=0, backend=backend)
        engine.define("f", inputs=[q], outputs=[x])
        for batch in (1, 4000):
            values = random_quantized(rng, (batch, 5, 9), dtype)
            (got,) = engine.run("f", [values])
            np.testing.assert_array_equal(got, reference_dequantize(values, scale, zero_point))


# (x dtype, zero point, relu, output dtype, output scale, output zero point, with bias)
EPILOGUES = [
    ("uint8", 131, False, "float32", 0.0, 0, True),
    ("uint8", 0, True, "float32", 0.0, 0, False),
    ("int8", -5, True, "uint8", 0.37, 3, True),
    ("uint8", 255, False, "int8", 0.9, -7, True),
]


def product_inputs(g, rng, x_shape, w_shape, x_dtype, with_bias):
    x = g.input("x", x_shape, x_dtype)
    w = g.variable("w", w_shape, "int8")
    scale = g.variable("scale", (w_shape[0],))
    nodes = [x, w, scale]
    values = {
        "w": random_quantized(rng, w_shape, "int8"),
        "scale": (rng.uniform(1e-4, 2e-3, w_shape[0])).astype(np.float32),
    }
    if with_bias:
        nodes.append(g.variable("bias", (w_shape[0],)))
        values["bias"] = rng.standard_normal(w_shape[0]).astype(np.float32)
    return nodes, values


def engine_of(g, inputs, outputs, variables):
    """A CPU engine holding ``variables`` with function "f" from ``inputs`` to ``outputs``."""
    engine = _core.Engine(g, seed=0, backend="cpu")
    for name, value in variables.items():
        engine.set_variable(name, value)
    engine.define("f", inputs=inputs, outputs=outputs)
    return engine


def run_on_every_path(g, inputs, outputs, variables, feeds):
    """The outputs of one run per int8 kernel path, by path name."""
    results = {}
    for path in int8_paths():
        with int8_path(path):
            results[path] = engine_of(g, inputs, outputs, variables).run("f", feeds)
    return results


def quantized_matmul_matches_the_reference_on_every_path(backend, rng):
    # rows past a register tile, K past a group of 4, channels past a panel of 16; rank 3
    for x_shape, batch, channels in (((-1, 37), 70, 21), ((-1, 3, 64), 2, 48), ((-1, 5), 1, 3)):
        for x_dtype, zero_point, relu, out, out_scale, out_zero, with_bias in EPILOGUES:
            g = _core.Graph()
            nodes, variables = product_inputs(
                g, rng, x_shape, (channels, x_shape[-1]), x_dtype, with_bias
            )
            attrs = {"zero_point": zero_point, "relu": relu, "dtype": out}
            if out != "float32":
                attrs.update(output_scale=out_scale, output_zero_point=out_zero)
            y = g.op("quantized_matmul", nodes, attrs)
            x = random_quantized(rng, (batch, *x_shape[1:]), x_dtype)
            want = reference_quantized_matmul(
                x,
                variables["w"],
                variables["scale"],
                variables.get("bias"),
                zero_point,
                relu,
                out,
                out_scale,
                out_zero,
            )
            for path, (got,) in run_on_every_path(g, [nodes[0]], [y], variables, [x]).items():
                assert got.dtype == want.dtype, path
                np.testing.assert_array_equal(got, want, err_msg=f"path {path}")


CONVOLUTIONS = [  # (x shape, out channels, kernel, stride, padding, dilation)
    ((2, 3, 9, 11), 20, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 5, 12, 10), 7, (3, 2), (2, 1), (0, 2), (1, 2)),
    ((3, 16, 6, 6), 32, (1, 1), (1, 1), (0, 0), (1, 1)),
]


def quantized_conv2d_matches_the_reference_on_every_path(backend, rng):
    for (shape, channels, kernel, stride, padding, dilation), epilogue in zip(
        CONVOLUTIONS, EPILOGUES
    ):
        x_dtype, zero_point, relu, out, out_scale, out_zero, with_bias = epilogue
        g = _core.Graph()
        nodes, variables = product_inputs(
            g, rng, (-1, *shape[1:]), (channels, shape[1], *kernel), x_dtype, with_bias
        )
        attrs = {
            "zero_point": zero_point,
            "relu": relu,
            "dtype": out,
            "stride": list(stride),
            "padding": list(padding),
            "dilation": list(dilation),
        }
        if out != "float32":
            attrs.update(output_scale=out_scale, output_zero_point=out_zero)
        y = g.op("quantized_conv2d", nodes, attrs)
        x = random_quantized(rng, shape, x_dtype)
        want = reference_quantized_conv2d(
            x,
            variables["w"],
            variables["scale"],
            variables.get("bias"),
            zero_point,
            stride,
            padding,
            dilation,
            relu,
            out,
            out_scale,
            out_zero,
        )
        results = run_on_every_path(g, [nodes[0]], [y], variables, [x])
        assert "portable" in results
        for path, (got,) in results.items():
            assert got.shape == want.shape, path
            np.testing.assert_array_equal(got, want, err_msg=f"path {path}")


def new_weights_are_packed_again_and_float_weights_hold_integers(backend, rng):
    """A plan keeps its packed weights between runs: a new weight value must be seen, and a
    float32 weight holding integers computes as its int8 twin."""
    for weight_dtype in ("int8", "float32"):
        g = _core.Graph()
        x = g.input("x", (-1, 70), "uint8")
        w = g.variable("w", (19, 70), weight_dtype)
        s = g.variable("s", (19,))
        y = g.op("quantized_matmul", [x, w, s], {"zero_point": 9})
        engine = _core.Engine(g, seed=0, backend=backend)
        engine.define("f", inputs=[x], outputs=[y])
        scale = rng.uniform(1e-3, 1e-2, 19).astype(np.float32)
        engine.set_variable("s", scale)
        feed = random_quantized(rng, (33, 70), "uint8")
        for _ in range(3):
            weights = random_quantized(rng, (19, 70), "int8")
            engine.set_variable("w", weights.astype(NUMPY_TYPES[weight_dtype]))
            want = reference_quantized_matmul(feed, weights, scale, None, 9, False, "float32", 0, 0)
            for _ in range(2):
                (got,) = engine.run("f", [feed])
                np.testing.assert_array_equal(got, want)


def reference_dynamic_quantized_matmul(x, w, weight_scale, bias, relu):
    """A float32 input quantized to uint8 from its own range (widened to hold 0)."""
    low, high = min(np.float32(0), x.min()), max(np.float32(0), x.max())
    scale = (high - low) / np.float32(255) if high > low else np.float32(1)
    zero_point = int(np.clip(np.rint(-low / scale), 0, 255))
    q = reference_quantize(x, scale, zero_point, "uint8")
    return reference_quantized_matmul(
        q, w, weight_scale * scale, bias, zero_point, relu, "float32", 0, 0
    )


def a_float_input_is_quantized_per_run_on_every_path(backend, rng):
    g = _core.Graph()
    nodes, variables = product_inputs(g, rng, (-1, 45), (23, 45), "float32", True)
    y = g.op("quantized_matmul", nodes, {"relu": True})
    for batch, shift in ((70, 0.0), (3, 5.0), (9, -5.0)):  # ranges across, above and below 0
        x = (rng.standard_normal((batch, 45)) + shift).astype(np.float32)
        want = reference_dynamic_quantized_matmul(
            x, variables["w"], variables["scale"], variables["bias"], True
        )
        for path, (got,) in run_on_every_path(g, [nodes[0]], [y], variables, [x]).items():
            np.testing.assert_array_equal(got, want, err_msg=f"path {path}")


def an_unknown_or_missing_path_is_refused(backend, rng):
    g = _core.Graph()
    x = g.input("x", (-1, 4), "uint8")
    w = g.variable("w", (2, 4), "int8")
    s = g.variable("s", (2,))
    y = g.op("quantized_matmul", [x, w, s], {})
    for path in ("sse9", *(p for p in PATH_FLAGS if p not in int8_paths())):
        with int8_path(path):
            engine = _core.Engine(g, seed=0, backend=backend)
            engine.define("f", inputs=[x], outputs=[y])
            with pytest.raises(ValueError, match=f"GOMETAL_INT8_KERNEL.*{path}"):
                engine.run("f", [np.zeros((1, 4), np.uint8)])


def reference_max_pool(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """NCHW max pooling; padding never wins (it holds the dtype's lowest value)."""
    lowest = -np.inf if x.dtype == np.float32 else np.iinfo(x.dtype).min
    pads = ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2)
    padded = np.pad(x, pads, constant_values=lowest)
    oh = (padded.shape[2] - kernel[0]) // stride[0] + 1
    ow = (padded.shape[3] - kernel[1]) // stride[1] + 1
    out = np.full((*x.shape[:2], oh, ow), lowest, x.dtype)
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            window = padded[
                :,
                :,
                ky : ky + stride[0] * (oh - 1) + 1 : stride[0],
                kx : kx + stride[1] * (ow - 1) + 1 : stride[1],
            ]
            out = np.maximum(out, window)
    return out


# (x shape, out channels, conv padding, pool (kernel, stride, padding) or None, quantize
# dtype, flattened before the quantize (then a dense reads it))
CHAINS = [
    ((3, 3, 10, 9), 18, (1, 1), ((2, 2), (2, 2), (0, 0)), "uint8", False),
    ((2, 16, 7, 8), 33, (1, 1), ((3, 3), (2, 2), (1, 1)), "int8", False),
    ((2, 5, 6, 6), 7, (0, 0), None, "uint8", False),
    ((2, 8, 8, 8), 16, (1, 1), ((2, 2), (2, 2), (0, 0)), "uint8", True),
]


def conv_pool_quantize_chains_match_the_reference_on_every_path(backend, rng):
    """quantized_conv2d (float32 out) -> [max_pool2d] -> quantize runs as one step that
    requantizes in the epilogue and pools the quantized values: bit exact against the float
    chain's reference, and a second convolution reads the quantized values as they are."""
    for shape, channels, padding, pool, dtype, flatten in CHAINS:
        g = _core.Graph()
        nodes, variables = product_inputs(
            g, rng, (-1, *shape[1:]), (channels, shape[1], 3, 3), "uint8", True
        )
        window = {"stride": [1, 1], "padding": list(padding), "dilation": [1, 1]}
        conv = g.op("quantized_conv2d", nodes, {"zero_point": 7, "relu": True, **window})
        pooled = conv
        if pool is not None:
            kernel, stride, pool_padding = pool
            attrs = {"kernel_size": list(kernel), "stride": list(stride)}
            pooled = g.op("max_pool2d", [conv], {**attrs, "padding": list(pool_padding)})
        low, _ = RANGES[dtype]
        zero = low + 11
        features = int(np.prod(g.shape(pooled)[1:]))
        if flatten:
            pooled = g.op("reshape", [pooled], {"shape": [-1, features]})
        q = g.op("quantize", [pooled], {"scale": 0.21, "zero_point": zero, "dtype": dtype})
        w2_shape = (4, features) if flatten else (4, channels, 1, 1)
        w2 = g.variable("w2", w2_shape, "int8")
        s2 = g.variable("s2", (4,))
        second_op = "quantized_matmul" if flatten else "quantized_conv2d"
        second = g.op(second_op, [q, w2, s2], {"zero_point": zero})
        variables["w2"] = random_quantized(rng, w2_shape, "int8")
        variables["s2"] = rng.uniform(1e-3, 1e-2, 4).astype(np.float32)
        x = random_quantized(rng, shape, "uint8")
        floats = reference_quantized_conv2d(
            x, variables["w"], variables["scale"], variables["bias"], 7, (1, 1), padding,
            (1, 1), True, "float32", 0, 0,
        )  # fmt: skip
        if pool is not None:
            floats = reference_max_pool(floats, *pool)
        if flatten:
            floats = floats.reshape(shape[0], -1)
        want_q = reference_quantize(floats, 0.21, zero, dtype)
        if flatten:
            want_second = reference_quantized_matmul(
                want_q, variables["w2"], variables["s2"], None, zero, False, "float32", 0, 0
            )
        else:
            want_second = reference_quantized_conv2d(
                want_q, variables["w2"], variables["s2"], None, zero, (1, 1), (0, 0), (1, 1),
                False, "float32", 0, 0,
            )  # fmt: skip
        outputs = [q, second]
        results = run_on_every_path(g, [nodes[0]], outputs, variables, [x])
        for path, (got_q, got_second) in results.items():
            assert got_q.dtype == want_q.dtype, path
            np.testing.assert_array_equal(got_q, want_q, err_msg=f"path {path}")
            np.testing.assert_array_equal(got_second, want_second, err_msg=f"path {path}")
        engine = _core.Engine(g, seed=0, backend=backend)
        for name, value in variables.items():
            engine.set_variable(name, value)
        engine.define("f", inputs=[nodes[0]], outputs=outputs)
        merged = "quantized_conv2d," + ("max_pool2d," if pool else "") + "quantize "
        assert any(line.startswith(merged) for line in engine.describe("f", shape[0])), (
            engine.describe("f", shape[0])
        )


def a_convolution_read_elsewhere_keeps_its_float_output(backend, rng):
    """A chain whose float32 convolution output is also returned is not merged."""
    g = _core.Graph()
    nodes, variables = product_inputs(g, rng, (-1, 4, 6, 6), (8, 4, 3, 3), "uint8", False)
    conv = g.op("quantized_conv2d", nodes, {"zero_point": 3, "padding": [1, 1]})
    pooled = g.op("max_pool2d", [conv], {"kernel_size": [2, 2], "stride": [2, 2]})
    q = g.op("quantize", [pooled], {"scale": 0.05, "zero_point": 128, "dtype": "uint8"})
    x = random_quantized(rng, (2, 4, 6, 6), "uint8")
    floats = reference_quantized_conv2d(
        x, variables["w"], variables["scale"], None, 3, (1, 1), (1, 1), (1, 1), False,
        "float32", 0, 0,
    )  # fmt: skip
    want_q = reference_quantize(
        reference_max_pool(floats, (2, 2), (2, 2), (0, 0)), 0.05, 128, "uint8"
    )
    for path, (got_conv, got_q) in run_on_every_path(
        g, [nodes[0]], [conv, q], variables, [x]
    ).items():
        np.testing.assert_array_equal(got_conv, floats, err_msg=f"path {path}")
        np.testing.assert_array_equal(got_q, want_q, err_msg=f"path {path}")


SCENARIOS = [
    ScenarioCase("quantize", "reference", quantize_matches_the_reference),
    ScenarioCase("dequantize", "reference", dequantize_matches_the_reference),
    ScenarioCase(
        "quantized_matmul", "every-path", quantized_matmul_matches_the_reference_on_every_path
    ),
    ScenarioCase("quantized_matmul", "unknown-path", an_unknown_or_missing_path_is_refused),
    ScenarioCase("quantized_matmul", "dynamic", a_float_input_is_quantized_per_run_on_every_path),
    ScenarioCase(
        "quantized_matmul",
        "weights-change",
        new_weights_are_packed_again_and_float_weights_hold_integers,
    ),
    ScenarioCase(
        "quantized_conv2d", "every-path", quantized_conv2d_matches_the_reference_on_every_path
    ),
    ScenarioCase(
        "quantized_conv2d",
        "pool-quantize-chain",
        conv_pool_quantize_chains_match_the_reference_on_every_path,
    ),
    ScenarioCase(
        "quantized_conv2d", "read-elsewhere", a_convolution_read_elsewhere_keeps_its_float_output
    ),
]

U8 = Arg((4, 6), dtype="uint8", leaf="input")
W8 = Arg((3, 6), dtype="int8", leaf="input")
SCALE = Arg((3,), leaf="input")

ERROR_CASES = [
    ErrorCase(
        "quantize", (Arg((2, 3)),), {"scale": 0.1}, ("dtype must be int8 or uint8",), "dtype"
    ),
    ErrorCase(
        "quantize",
        (Arg((2, 3)),),
        {"scale": 0.0, "dtype": "uint8"},
        ("scale must be a positive",),
        "scale",
    ),
    ErrorCase(
        "quantize",
        (Arg((2, 3)),),
        {"scale": 1.0, "dtype": "int8", "zero_point": 128},
        (r"zero_point must lie in \[-128, 127\] for int8, got 128",),
        "zero-point",
    ),
    ErrorCase(
        "dequantize",
        (Arg((2, 3)),),
        {"scale": 1.0},
        ("input must be int8 or uint8, got float32",),
        "float",
    ),
    ErrorCase("quantized_matmul", (U8, W8), {}, ("takes 3 or 4 inputs",), "arity"),
    ErrorCase(
        "quantized_matmul",
        (
            Arg((2, 65537), dtype="uint8", leaf="input"),
            Arg((3, 65537), dtype="int8", leaf="input"),
            SCALE,
        ),
        {},
        ("sums 65537 products per output; int32 sums stay exact up to 65536",),
        "depth",
    ),
    ErrorCase(
        "quantized_matmul",
        (Arg((4, 6), leaf="input"), W8, SCALE),
        {"zero_point": 3},
        ("quantized from its own range: zero_point must be 0, got 3",),
        "dynamic-zero-point",
    ),
    ErrorCase(
        "quantized_matmul",
        (U8, Arg((3, 6), dtype="int32", leaf="input"), SCALE),
        {},
        ("weight must be int8, or float32 holding integers",),
        "int32-weight",
    ),
    ErrorCase(
        "quantized_matmul",
        (U8, Arg((3, 5), dtype="int8", leaf="input"), SCALE),
        {},
        (r"\(4, 6\) x \(3, 5\)",),
        "inner",
    ),
    ErrorCase(
        "quantized_matmul",
        (U8, W8, Arg((4,), leaf="input")),
        {},
        (r"scale must have shape \(3,\)",),
        "scale",
    ),
    ErrorCase(
        "quantized_matmul",
        (U8, W8, SCALE),
        {"dtype": "uint8"},
        ("output_scale must be a positive",),
        "requant",
    ),
    ErrorCase(
        "quantized_matmul",
        (U8, W8, SCALE),
        {"dtype": "float16"},
        ("must be float32, int8 or uint8",),
        "out",
    ),
    ErrorCase(
        "quantized_conv2d",
        (
            Arg((1, 4, 5, 5), dtype="uint8", leaf="input"),
            Arg((4, 2, 3, 3), dtype="int8", leaf="input"),
            Arg((4,), leaf="input"),
        ),
        {"groups": 2},
        ("groups=1 only",),
        "groups",
    ),
]
