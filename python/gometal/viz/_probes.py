"""Side engines that look inside a trainer's model: per-parameter gradients and per-layer
outputs on a probe batch.

The trainer's compiled step keeps no gradients or intermediates, so each probe compiles
its own small graph over the same layers, once, and copies the current weights in before
each use. The trainer's engine and its training are never touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ..base.arrays import as_input_batch
from ..nn.layers.base import EmitContext, emitted_nodes
from ..nn.tensor import BATCH


def _label_input(graph: Any, trainer: Any) -> int:
    model = trainer.model
    if trainer.loss.integer_labels:
        return graph.input("y", (BATCH,), "int32")
    return graph.input("y", (BATCH, *model.output_shape), "float32")


class GradientProbe:
    """Gradients of the training loss for every trainable weight, on a given batch.

    The forward pass runs in training mode (dropout on, batch statistics), as in the
    trainer's step; layer side effects (running statistics) are left out.

    Example:
        >>> probe = GradientProbe(trainer)  # doctest: +SKIP
        >>> grads = probe(x[:64], y[:64])  # doctest: +SKIP
    """

    def __init__(self, trainer: Any):
        self.trainer = trainer
        model = trainer.model
        graph = _core.Graph()
        x = graph.input("x", (BATCH, *model.input_shape), "float32")
        y = _label_input(graph, trainer)
        variables = model.declare_variables(graph)
        ctx = EmitContext(graph, training=True, variables=variables)
        (output,) = model.emit(ctx, [x])
        loss = trainer.loss(graph, output, y)
        self.names = list(model.trainable_weight_names)
        grads = graph.gradients(loss, [variables[name] for name in self.names])
        self.engine = _core.Engine(graph, seed=model.seed, backend=model.backend)
        self.engine.define(
            "gradients", inputs=[x, y], outputs=[loss, *grads], effects=[], advance_rng=True
        )

    def __call__(self, x: Any, y: Any) -> dict[str, np.ndarray]:
        """Returns weight name -> gradient of the mean loss on ``(x, y)``."""
        for name, value in self.trainer.model.get_weights().items():
            self.engine.set_variable(name, value)
        xs, ys = self.trainer.prepare_batch(x, y)
        _, *grads = self.engine.run("gradients", [xs, ys])
        return {name: np.asarray(g) for name, g in zip(self.names, grads)}


class ActivationProbe:
    """Each layer call's output in inference mode (dropout off, running statistics); a
    call with several outputs gives each, the further ones named ``<name>_<index>``.

    Example:
        >>> outputs = ActivationProbe(trainer.model)(x[:64])  # doctest: +SKIP
        >>> list(outputs)[:2]  # doctest: +SKIP
        ['dense_0', 'relu_0']
    """

    def __init__(self, model: Any):
        self.model = model
        graph = _core.Graph()
        x = graph.input("x", (BATCH, *model.input_shape), "float32")
        ctx = EmitContext(graph, training=False, variables=model.declare_variables(graph))
        values = {id(model.graph.inputs[0]): x}
        named: dict[str, int] = {}
        seen: dict[str, int] = {}
        for call in model.graph.calls:
            ctx.scope = call.layer.name or ""
            emitted = call.layer.emit(ctx, [values[id(t)] for t in call.inputs])
            label = f"layer '{call.layer.name}'"
            nodes = emitted_nodes(emitted, len(call.outputs), label)
            values.update((id(t), node) for t, node in zip(call.outputs, nodes))
            base = call.layer.name or type(call.layer).__name__.lower()
            seen[base] = seen.get(base, 0) + 1
            # A shared layer appears once per call.
            key = base if seen[base] == 1 else f"{base}#{seen[base]}"
            # Further outputs (a recurrent layer's final states) are named as model
            # outputs name them: "_<index>" after the call's name.
            for index, node in enumerate(nodes):
                named[key if index == 0 else f"{key}_{index}"] = node
        ctx.scope = ""
        # Identity layers (dropout at inference) may return their input node: run each
        # node once and share its array.
        self.nodes = list(dict.fromkeys(n for n in named.values() if n != x))
        self.named = {name: node for name, node in named.items() if node != x}
        self.engine = _core.Engine(graph, seed=model.seed, backend=model.backend)
        self.engine.define(
            "activations", inputs=[x], outputs=self.nodes, effects=[], advance_rng=False
        )

    def __call__(self, x: Any) -> dict[str, np.ndarray]:
        """Returns layer name -> its output on ``x``."""
        for name, value in self.model.get_weights().items():
            self.engine.set_variable(name, value)
        xs = as_input_batch(x, self.model.input_shape, "x")
        outputs = self.engine.run("activations", [xs])
        by_node = dict(zip(self.nodes, outputs))
        return {name: np.asarray(by_node[node]) for name, node in self.named.items()}
