"""The product tests' shared pieces: an engine computing one matmul by a weight variable,
one computing a Dense layer, random operands for them, and one product of two inputs checked
against NumPy."""

from __future__ import annotations

import numpy as np

from gometal import _core


def matmul_engine(k: int, b_shape: tuple[int, ...], transpose_b: bool) -> _core.Engine:
    """An engine whose function "f" computes matmul(x, w) of input "x" (batch x k) and
    variable "w" (``b_shape``)."""
    g = _core.Graph()
    x = g.input("x", (-1, k), "float32")
    y = g.op("matmul", [x, g.variable("w", b_shape)], {"transpose_b": transpose_b})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def dense_engine(k: int, n: int, relu: bool) -> _core.Engine:
    """An engine whose function "f" computes matmul(x, w^T) + bias of input "x" (batch x k),
    then relu when asked: a Dense layer of n outputs."""
    g = _core.Graph()
    x = g.input("x", (-1, k), "float32")
    y = g.op("matmul", [x, g.variable("w", (n, k))], {"transpose_b": True})
    y = g.op("add", [y, g.variable("bias", (n,))], {})
    if relu:
        y = g.op("relu", [y], {})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def matmul_operands(
    m: int, n: int, k: int, transpose_b: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A (m, k) and B ((n, k) when ``transpose_b``, else (k, n)), standard normal float32."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(np.float32)
    return a, b


def product_engine(ta, tb, a_shape, b_shape) -> _core.Engine:
    """An engine whose function "f" computes op(a + shift) op(b) of inputs "a" and "b", where
    the variable "shift" is zero or holds NaN in a row: NaN may not be fed as an input."""
    g = _core.Graph()
    a = g.input("a", a_shape, "float32")
    b = g.input("b", b_shape, "float32")
    shifted = g.op("add", [a, g.variable("shift", a_shape)])
    y = g.op("matmul", [shifted, b], {"transpose_a": ta, "transpose_b": tb})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[a, b], outputs=[y], effects=[])
    return engine


def check_product(ta, tb, m, n, k, threads, seed=0, nan_row=None):
    """op(A) op(B) of random (m x k) by (k x n) operands on `threads` threads against NumPy
    float64; `nan_row` puts NaN in that row of op(A), which must stay in C's row."""
    _core.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    shift = np.zeros_like(a)
    if nan_row is not None:
        if ta:
            shift[:, nan_row] = np.nan
        else:
            shift[nan_row] = np.nan
    engine = product_engine(ta, tb, a.shape, b.shape)
    engine.set_variable("shift", shift)
    got = engine.run("f", [a, b])[0]
    a64, b64 = a.astype(np.float64) + shift, b.astype(np.float64)
    want = (a64.T if ta else a64) @ (b64.T if tb else b64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * k)
