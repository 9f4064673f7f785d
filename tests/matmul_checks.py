"""The product tests' shared pieces: an engine computing one matmul by a weight variable,
one computing a Dense layer, and random operands for them."""

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
