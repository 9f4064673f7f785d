"""Every dtype the IR holds (float32, float16, bfloat16, int8, uint8, int32, int64, bool):
inputs, outputs, variables and constants carry each one, casts convert between every pair as
NumPy does, the memory plan packs them by their size, and an op a backend has no kernel for
in a dtype, or inputs of mixed dtypes, are refused with a message naming them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from gometal import _core

from .harness import ScenarioCase

NUMPY = {
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}
FLOATS = ("float32", "float16", "bfloat16")


def _values(dtype: str, rng: np.random.Generator, shape=(4, 6)) -> np.ndarray:
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype in FLOATS:
        return rng.standard_normal(shape).astype(np.float32).astype(NUMPY[dtype])
    info = np.iinfo(NUMPY[dtype])
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(NUMPY[dtype])


def every_dtype_travels_through_inputs_outputs_variables_and_constants(backend, rng):
    for dtype, numpy_type in NUMPY.items():
        g = _core.Graph()
        x = g.input("x", (-1, 6), dtype)
        v = g.variable("v", (4, 6), dtype)
        c = g.constant(_values(dtype, np.random.default_rng(1)), dtype)
        assert (g.dtype(x), g.dtype(v), g.dtype(c)) == (dtype, dtype, dtype)
        # Reshapes only rename buffers: each output is its source's bytes, of any dtype.
        outs = [
            g.op("reshape", [node], {"shape": [-1, 6] if node == x else [4, 6]})
            for node in (x, v, c)
        ]
        eng = _core.Engine(g, seed=0, backend=backend)
        eng.define("f", inputs=[x], outputs=outs)
        value, stored = _values(dtype, rng), _values(dtype, rng)
        eng.set_variable("v", stored)
        got = eng.run("f", [value])
        assert all(out.dtype == numpy_type for out in got), (dtype, [o.dtype for o in got])
        np.testing.assert_array_equal(got[0], value)
        np.testing.assert_array_equal(got[1], stored)
        np.testing.assert_array_equal(got[2], _values(dtype, np.random.default_rng(1)))
        assert eng.get_variable("v").dtype == numpy_type
        assert eng.variable_dtype("v") == dtype


def _cast(value: np.ndarray, to: str, backend: str) -> np.ndarray:
    g = _core.Graph()
    x = g.input(
        "x", (-1, *value.shape[1:]), str(value.dtype) if value.dtype != np.bool_ else "bool"
    )
    y = g.op("cast", [x], {"dtype": to})
    eng = _core.Engine(g, seed=0, backend=backend)
    eng.define("f", inputs=[x], outputs=[y])
    (out,) = eng.run("f", [value])
    return out


def casts_between_every_pair_match_numpy(backend, rng):
    for source, source_type in NUMPY.items():
        for target, target_type in NUMPY.items():
            value = _values(source, rng)
            if source in FLOATS:
                # In the target's range: NumPy leaves out-of-range float-to-int undefined.
                value = (value * 40).astype(source_type)
                if target == "uint8":
                    value = np.abs(value).astype(source_type)
            got = _cast(value, target, backend)
            via = value.astype(np.float32) if source in FLOATS else value
            assert got.dtype == target_type
            np.testing.assert_array_equal(
                got, via.astype(target_type), err_msg=f"{source} -> {target}"
            )


def float_conversions_round_to_nearest_even_like_numpy(backend, rng):
    # Normals, subnormals, ties, and values past float16's largest finite (they become inf).
    edges = np.array(
        [0.0, -0.0, 1e-8, 6e-8, 5.96e-8, 2.98e-8, 6.1e-5, 65504.0, 65519.0, 65520.0, 1e6,
         1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8, 3.4e38, -3.4e38],
        np.float32,
    )  # fmt: skip
    spread = (rng.standard_normal(4096) * 10.0 ** rng.uniform(-9, 6, 4096)).astype(np.float32)
    values = np.concatenate([edges, spread]).reshape(1, -1)
    for target in ("float16", "bfloat16"):
        got = _cast(values, target, backend)
        with np.errstate(over="ignore"):
            want = values.astype(NUMPY[target])
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16), err_msg=target)
        finite = got[:, np.isfinite(want[0].astype(np.float32))]  # inputs refuse infinities
        back = _cast(finite, "float32", backend)
        np.testing.assert_array_equal(
            back, finite.astype(np.float32), err_msg=f"{target} -> float32"
        )


def float_to_int_casts_truncate_saturate_and_send_nan_to_zero(backend, rng):
    g = _core.Graph()
    x = g.input("x", (-1, 6), "float32")
    w = g.variable("w", (6,))  # NaN and infinities come in through a weight
    ys = [
        g.op("cast", [g.op("mul", [x, w])], {"dtype": d})
        for d in ("int8", "uint8", "int32", "bool")
    ]
    eng = _core.Engine(g, seed=0, backend=backend)
    eng.define("f", inputs=[x], outputs=ys)
    eng.set_variable("w", np.array([np.nan, np.inf, -np.inf, 300.7, -2.9, 0.0], np.float32))
    i8, u8, i32, flags = eng.run("f", [np.ones((1, 6), np.float32)])
    np.testing.assert_array_equal(i8[0], [0, 127, -128, 127, -2, 0])
    np.testing.assert_array_equal(u8[0], [0, 255, 0, 255, 0, 0])
    np.testing.assert_array_equal(i32[0], [0, 2**31 - 1, -(2**31), 300, -2, 0])
    np.testing.assert_array_equal(flags[0], [True, True, True, True, True, False])


def memory_plan_packs_intermediates_of_every_size(backend, rng):
    """A chain through 1-, 2-, 4- and 8-byte intermediates: offsets are in bytes."""
    g = _core.Graph()
    x = g.input("x", (-1, 5, 7), "float32")
    node, chain = x, ["int64", "float16", "int8", "int32", "bfloat16", "uint8", "float32"]
    for dtype in chain:
        node = g.op("cast", [node], {"dtype": dtype})
    twice = g.op("add", [node, node])
    eng = _core.Engine(g, seed=0, backend=backend)
    eng.define("f", inputs=[x], outputs=[twice, node])
    value = rng.integers(0, 100, (3, 5, 7)).astype(np.float32)
    got, passed = eng.run("f", [value])
    np.testing.assert_array_equal(passed, value)  # every step of the chain holds 0..99 exactly
    np.testing.assert_array_equal(got, 2 * value)


def mixed_and_unsupported_dtypes_are_refused_naming_them(backend, rng):
    g = _core.Graph()
    a = g.input("a", (-1, 3), "float32")
    b = g.input("b", (-1, 3), "int32")
    with pytest.raises(ValueError, match=r"\[add\] inputs mix dtypes float32 and int32; cast one"):
        g.op("add", [a, b])
    with pytest.raises(ValueError, match=r"\[exp\] expects float inputs .* got int32"):
        g.op("exp", [b])
    h = g.input("h", (-1, 3), "float16")
    total = g.op("add", [h, h])
    assert g.dtype(total) == "float16"  # valid IR: the backend decides whether it runs it
    negated = g.op("neg", [a])
    passed = g.op("reshape", [h], {"shape": [-1, 3]})
    eng = _core.Engine(g, seed=0, backend=backend)
    if backend == "cpu":
        message = r"the cpu backend has no kernel for 'add' with inputs \(float16, float16\)"
        with pytest.raises(ValueError, match=message):
            eng.define("f", inputs=[h], outputs=[total])
    eng.define("g", inputs=[a], outputs=[negated])
    with pytest.raises(ValueError, match="input 'a' expects dtype float32, got int32"):
        eng.run("g", [np.zeros((2, 3), np.int32)])
    eng.define("pass", inputs=[h], outputs=[passed])
    with pytest.raises(ValueError, match="input 'h' contains NaN or infinite values"):
        eng.run("pass", [np.array([[1.0, np.nan, 2.0]], np.float16)])


SCENARIOS = [
    ScenarioCase(
        "cast", "every-dtype-io", every_dtype_travels_through_inputs_outputs_variables_and_constants
    ),
    ScenarioCase("cast", "every-pair", casts_between_every_pair_match_numpy),
    ScenarioCase(
        "cast", "float16-bfloat16-rounding", float_conversions_round_to_nearest_even_like_numpy
    ),
    ScenarioCase(
        "cast", "float-to-int-rules", float_to_int_casts_truncate_saturate_and_send_nan_to_zero
    ),
    ScenarioCase("cast", "byte-sized-memory-plan", memory_plan_packs_intermediates_of_every_size),
    ScenarioCase("add", "dtype-refusals", mixed_and_unsupported_dtypes_are_refused_naming_them),
]
