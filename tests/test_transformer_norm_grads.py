"""A norm's backward kernels read the row statistics its forward kernel kept: when a plan has
layer_norm (or rms_norm) and its layer_norm_grad and layer_norm_affine_grad of the same x,
each row's mean and 1 / std are computed once, in the forward pass, and the two gradients run
as one step (one pass over x and g). The gradients are the same bits as a plan without the
forward pass gives (two separate kernels computing the statistics), and agree with torch in
float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from norm_checks import EPS, norm_engine, torch_norm


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows, dim", [(5, 16), (100, 40), (768, 128)])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_gradients_from_kept_statistics_match_recomputed_ones_and_torch(op, rows, dim, threads):
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        engine = norm_engine(op, dim)
    finally:
        gm.set_num_threads(previous)
    rng = np.random.default_rng(rows + dim)
    x = (rng.standard_normal((rows, dim)) * 3 + 1).astype(np.float32)
    t = rng.standard_normal((rows, dim)).astype(np.float32)
    w = rng.standard_normal(dim).astype(np.float32)
    b = rng.standard_normal(dim).astype(np.float32)
    engine.set_variable("w", w)
    if op == "layer_norm":
        engine.set_variable("b", b)

    plan = engine.describe("all", rows)
    assert sum(line.startswith(f"{op} ") and "statistics kept" in line for line in plan) == 1, plan
    readers = [line.split(" ")[0] for line in plan if "statistics read" in line]
    assert readers == [f"{op}_grad,{op}_affine_grad"], plan
    separate = engine.describe("grads", rows)
    assert not any("statistics" in line for line in separate), separate
    assert sum(line.startswith((f"{op}_grad ", f"{op}_affine_grad ")) for line in separate) == 2

    y, *kept = engine.run("all", [x, t])
    recomputed = engine.run("grads", [x, t])
    for got, alone in zip(kept, recomputed, strict=True):
        np.testing.assert_array_equal(got, alone)
    for got, expected in zip(kept, torch_norm(op, x, t, w, b)[1:], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(rows))
    xt = torch.tensor(x, dtype=torch.float64)
    wt, bt = torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if op == "layer_norm":
        expected_y = torch.nn.functional.layer_norm(xt, (dim,), wt, bt, EPS)
    else:
        expected_y = torch.nn.functional.rms_norm(xt, (dim,), wt, EPS)
    np.testing.assert_allclose(y, expected_y.numpy(), rtol=1e-5, atol=1e-5)
