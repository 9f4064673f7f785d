"""Layer and RMS normalisation checks shared by the norm tests: one plan with a norm and its
gradients, and torch's float64 values for it."""

from __future__ import annotations

import numpy as np
import torch

from gometal import _core

EPS = 1e-5


def norm_engine(op: str, dim: int) -> _core.Engine:
    """y = norm(x) and the gradients of sum(y * t): "all" returns y, dx and the weight's (and
    bias's) gradients with the row statistics kept from the forward pass; "grads" the
    gradients alone, which recompute them."""
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


def torch_norm(
    op: str, x: np.ndarray, t: np.ndarray, w: np.ndarray, b: np.ndarray
) -> list[np.ndarray]:
    """[y, dx, dw(, db)] of sum(norm(x) * t) in float64."""
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
    return [y.detach().numpy()] + [p.grad.numpy() for p in params]
