"""Runs a gometal loss on arrays in a small engine graph, with its gradient, for comparing
with torch: the model output is an input of the graph, so the gradient is dL/d(output)."""

from __future__ import annotations

import numpy as np

from gometal import _core
from gometal.graph.composites import op, reduce_sum


def _graph(loss, z, y):
    g = _core.Graph()
    output = g.input("z", (-1, *z.shape[1:]), "float32")
    if loss.integer_labels:
        target = g.input("y", (-1,), "int32")
    else:
        target = g.input("y", (-1, *y.shape[1:]), "float32")
    return g, output, target


def _run(g, nodes, inputs, arrays):
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=inputs, outputs=nodes, effects=[], advance_rng=False)
    return engine.run("f", arrays)


def _arrays(loss, z, y):
    labels = np.asarray(y, dtype=np.int32 if loss.integer_labels else np.float32)
    return [np.ascontiguousarray(z, dtype=np.float32), np.ascontiguousarray(labels)]


def loss_and_gradient(loss, z, y):
    """``(loss(z, y), dloss/dz)`` from the batch loss ``loss(g, output, target)``."""
    g, output, target = _graph(loss, z, y)
    value = loss(g, output, target)
    (gradient,) = g.gradients(value, [output])
    result, grad = _run(g, [value, gradient], [output, target], _arrays(loss, z, y))
    return float(result), np.asarray(grad)


def per_sample_and_weighted_gradient(loss, z, y, weights):
    """``(per_sample(z, y), d sum(weights * per_sample)/dz, reduce(weights * per_sample))``."""
    g, output, target = _graph(loss, z, y)
    values = loss.per_sample(g, output, target)
    weight = g.input("w", (-1,), "float32")
    weighted = op(g, "mul", values, weight)
    (gradient,) = g.gradients(reduce_sum(g, weighted), [output])
    reduced = loss.reduce(g, weighted, target)
    per_sample, grad, total = _run(
        g,
        [values, gradient, reduced],
        [output, target, weight],
        [*_arrays(loss, z, y), np.asarray(weights, dtype=np.float32)],
    )
    return np.asarray(per_sample), np.asarray(grad), float(total)
