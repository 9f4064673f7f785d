"""Sample-tiled runs take only values whose first axis is the batch.

A pooling of a constant of one image (ONNX average pooling divides by one to count the
padding) once joined a tiled run beside the batch's pooling: it ran once per image, reading
and writing image n of a one-image value, past both buffers (heap corruption: a crash in
predict, or a glibc abort, depending on what lay after them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gometal import _core


@pytest.mark.parametrize("batch", [2, 3, 8])
@pytest.mark.parametrize("constant_first", [False, True])
def test_a_constants_pooling_runs_once_beside_a_tiled_batch(batch, constant_first):
    g = _core.Graph()
    x = g.input("x", (-1, 4, 16, 16), "float32")
    constant = np.arange(4 * 16 * 16, dtype=np.float32).reshape(1, 4, 16, 16) / 100
    pooled = g.op("avg_pool2d", [x], {"kernel_size": [2, 2]})
    pooled_constant = g.op("avg_pool2d", [g.constant(constant)], {"kernel_size": [2, 2]})
    terms = [pooled_constant, pooled] if constant_first else [pooled, pooled_constant]
    y = g.op("add", terms)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y])
    images = np.random.default_rng(batch).standard_normal((batch, 4, 16, 16)).astype(np.float32)
    expected = F.avg_pool2d(torch.from_numpy(images), 2) + F.avg_pool2d(
        torch.from_numpy(constant), 2
    )
    np.testing.assert_allclose(engine.run("f", [images])[0], expected.numpy(), rtol=1e-6, atol=1e-6)
    for line in engine.describe("f", batch, {}):
        # The batch's pooling may still be tiled; the constant's (1, 4, 8, 8) never is.
        assert not (line.startswith("tiled{") and "(1, 4, 8, 8)" in line), line
