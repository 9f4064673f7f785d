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
from gometal import _core

EPS = 1e-5


def _norm_engine(op: str, dim: int) -> _core.Engine:
    """y = norm(x) and the gradients of sum(y * t): "all" returns y, dx and the weight's (and
    bias's) gradients; "grads" the gradients alone, which need no forward pass."""
    g = _core.Graph()
    x = g.input("x", (-1, dim), "float32")
    target = g.input("t", (-1, dim), "float32")
    weights = [g.variable("w", (dim,))]
    if op == "layer_norm":
        weights.append(g.variable("b", (dim,)))
    y = g.op(op, [x, *weights], {"eps": EPS})
    loss = g.op("sum", [g.op("mul", [y, target], {})], {"axes": [], "keepdims": False})
    grads = g.gradients(loss, [x, *weights])
    engine = _core.Engine(g, seed=0)
    engine.define("all", inputs=[x, target], outputs=[y, *grads], effects=[])
    engine.define("grads", inputs=[x, target], outputs=grads, effects=[])
    return engine


def _torch_grads(op: str, x, t, w, b):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    params = [xt, wt]
    if op == "layer_norm":
        bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
        params.append(bt)
        y = torch.nn.functional.layer_norm(xt, (x.shape[1],), wt, bt, EPS)
    else:
        y = torch.nn.functional.rms_norm(xt, (x.shape[1],), wt, EPS)
    (y * torch.tensor(t, dtype=torch.float64)).sum().backward()
    return [p.grad.numpy() for p in params]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows, dim", [(5, 16), (100, 40), (768, 128)])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_gradients_from_kept_statistics_match_recomputed_ones_and_torch(op, rows, dim, threads):
    previous = gm.get_num_threads()
    gm.set_num_threads(threads)
    try:
        engine = _norm_engine(op, dim)
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
    for got, expected in zip(kept, _torch_grads(op, x, t, w, b), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(rows))
    xt = torch.tensor(x, dtype=torch.float64)
    wt, bt = torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if op == "layer_norm":
        expected_y = torch.nn.functional.layer_norm(xt, (dim,), wt, bt, EPS)
    else:
        expected_y = torch.nn.functional.rms_norm(xt, (dim,), wt, EPS)
    np.testing.assert_allclose(y, expected_y.numpy(), rtol=1e-5, atol=1e-5)
