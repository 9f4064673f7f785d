"""Outputs and gradients of a gometal model and of a torch module holding the same weights.

The gometal side runs the engine's own autodiff on ``sum(output * upstream)``, so the
gradients of the input and of every trainable weight come from the compiled graph, as
training uses them; the torch side backpropagates the same sum.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import gometal as gm
from gometal import _core


def copy_weights_from_torch(model: gm.Model, module: nn.Module) -> None:
    """Copies torch's parameters into the model's trainable weights, in order."""
    params = [p.detach().numpy().copy() for p in module.parameters()]
    names = model.trainable_weight_names
    assert [p.shape for p in params] == [model.weight_shapes[n] for n in names]
    model.set_weights(dict(zip(names, params)))


def engine_gradients(
    model: gm.Model, x: np.ndarray, upstream: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[float]]:
    """The output, d(sum(out * upstream))/dx, the weight gradients by name, and the values
    of the losses layers add in training (``EmitContext.losses``)."""
    g = _core.Graph()
    (x_id,) = model.declare_inputs(g)
    variables = model.declare_variables(g)
    ctx = gm.EmitContext(g, training=True, variables=variables)
    (out,) = model.emit(ctx, [x_id])
    up = g.input("upstream", tuple(g.shape(out)), "float32")
    total = g.op("sum", [g.op("mul", [out, up], {})], {"axes": [], "keepdims": False})
    names = model.trainable_weight_names
    grads = g.gradients(total, [x_id] + [variables[n] for n in names])
    engine = _core.Engine(g, seed=0)
    for name, value in model.get_weights().items():
        engine.set_variable(name, value)
    engine.define("f", inputs=[x_id, up], outputs=[out, *grads, *ctx.losses], effects=[])
    values = engine.run("f", [x, upstream])
    output, dx, rest = values[0], values[1], values[2:]
    weight_grads = dict(zip(names, rest[: len(names)]))
    return output, dx, weight_grads, [float(v) for v in rest[len(names) :]]


def torch_gradients(
    module: nn.Module, x: np.ndarray, upstream: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The output, the input's gradient and the parameters' gradients, in order."""
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    out = module(tx)
    (out * torch.from_numpy(upstream)).sum().backward()
    return (
        out.detach().numpy(),
        tx.grad.numpy(),
        [p.grad.numpy() for p in module.parameters()],
    )


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, rtol: float = 1e-5) -> None:
    """Equal within ``rtol`` relative to the tensor's largest value (float32 rounding)."""
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_matches_torch(
    model: gm.Model, module: nn.Module, x: np.ndarray, seed: int = 1, rtol: float = 1e-5
) -> None:
    """Copies torch's weights into ``model`` and compares outputs and all gradients."""
    copy_weights_from_torch(model, module)
    expected, dx_expected, grads_expected = torch_gradients(module, x, _upstream(module, x, seed))
    upstream = _upstream(module, x, seed)
    output, dx, grads, _ = engine_gradients(model, x, upstream)
    assert_close(output, expected, "output", rtol)
    assert_close(dx, dx_expected, "input gradient", rtol)
    for (name, grad), reference in zip(grads.items(), grads_expected):
        assert_close(grad, reference, f"gradient of {name}", rtol)


def _upstream(module: nn.Module, x: np.ndarray, seed: int) -> np.ndarray:
    with torch.no_grad():
        shape = module(torch.from_numpy(x.copy())).shape
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)
