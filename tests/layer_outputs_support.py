"""Shared pieces of the several-output layer call tests: the outputs of a gometal model and
the gradients of sum_k(out_k * upstream_k) with respect to its float inputs and trainable
weights, from the engine's autodiff, for comparison with torch in float64."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import gometal as gm
from gometal import _core


def model_gradients(
    model: gm.Model, arrays: Sequence[np.ndarray], upstreams: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    """Runs ``model`` on ``arrays`` (its inputs, in order) in training mode.

    Returns:
        The outputs, the gradient of each float input (``None`` for int inputs) and each
        trainable weight's gradient by its full name.
    """
    g = _core.Graph()
    input_ids = model.declare_inputs(g)
    variables = model.declare_variables(g)
    outs = model.emit(gm.EmitContext(g, training=True, variables=variables), input_ids)
    total, upstream_ids = None, []
    for out in outs:
        up = g.input(f"upstream_{len(upstream_ids)}", tuple(g.shape(out)), "float32")
        upstream_ids.append(up)
        term = g.op("sum", [g.op("mul", [out, up], {})], {"axes": [], "keepdims": False})
        total = term if total is None else g.op("add", [total, term], {})
    floats = [i for i, t in zip(input_ids, model.inputs) if t.dtype == "float32"]
    names = model.trainable_weight_names
    grads = g.gradients(total, floats + [variables[n] for n in names])
    engine = _core.Engine(g, seed=0)
    for name, value in model.get_weights().items():
        engine.set_variable(name, value)
    engine.define("f", inputs=[*input_ids, *upstream_ids], outputs=[*outs, *grads], effects=[])
    values = engine.run("f", [*arrays, *upstreams])
    outputs, rest = values[: len(outs)], values[len(outs) :]
    input_grads: list = []
    it = iter(rest[: len(floats)])
    for tensor in model.inputs:
        input_grads.append(next(it) if tensor.dtype == "float32" else None)
    weight_grads = dict(zip(names, rest[len(floats) :]))
    return outputs, input_grads, weight_grads


def assert_close(actual, expected, what: str, rtol: float = 1e-5) -> None:
    """Equal within ``rtol`` relative to the tensor's largest value."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def as_float32(module) -> dict[str, np.ndarray]:
    """A torch module's state_dict as float32 arrays (gometal's weight names)."""
    return {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
