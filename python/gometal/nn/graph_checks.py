"""Checks on a model's graph when a ``Model`` is built, and the layers' automatic names."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .layers.base import Layer
from .tensor import ModelGraph


def next_auto_name(kind: str, taken: set[str], counters: dict[str, int]) -> str:
    """Returns the next free ``<kind>_<index>`` name and records it as taken.

    Args:
        kind: the layer's auto-name prefix, e.g. ``"dense"``.
        taken: names already in use; updated in place.
        counters: the next index per kind; updated in place.

    Returns:
        The new name.

    Example:
        >>> next_auto_name("dense", {"dense_0"}, {})
        'dense_1'
    """
    while f"{kind}_{counters.get(kind, 0)}" in taken:
        counters[kind] = counters.get(kind, 0) + 1
    name = f"{kind}_{counters.get(kind, 0)}"
    counters[kind] = counters.get(kind, 0) + 1
    taken.add(name)
    return name


def assign_layer_names(layers: Sequence[Layer]) -> None:
    """Names the unnamed layers: explicit names win; the rest get ``<kind>_<index>`` in
    topological order.

    Args:
        layers: a model's layers, each once, in topological order; named in place.

    Raises:
        ValueError: two layers carry the same explicit name.

    Example:
        >>> assign_layer_names(model_graph.layers)  # doctest: +SKIP
    """
    taken: set[str] = set()
    for layer in layers:
        if layer.name is None:
            continue
        if layer.name in taken:
            raise ValueError(
                f"duplicate layer name {layer.name!r}: layer names must be unique in a model"
            )
        taken.add(layer.name)
    counters: dict[str, int] = defaultdict(int)
    for layer in layers:
        if layer.name is None:
            layer.name = next_auto_name(layer.kind, taken, counters)


def check_model_graph(graph: ModelGraph) -> None:
    """Checks that a traced graph makes a model.

    The inputs must be distinct ``gm.Input`` tensors that some output depends on, the
    outputs distinct, and every source the outputs depend on one of the inputs.

    Args:
        graph: the traced graph.

    Raises:
        ValueError: naming the tensor at fault.

    Example:
        >>> check_model_graph(ModelGraph.trace([x], [y]))  # doctest: +SKIP
    """
    inputs, outputs, calls = graph.inputs, graph.outputs, graph.calls
    for tensor in inputs:
        if tensor.producer is not None:
            raise ValueError(f"model inputs must come from gm.Input, got the output of {tensor!r}")
    if len({id(t) for t in inputs}) != len(inputs):
        raise ValueError("the same Input appears twice in the model inputs")
    if len({id(t) for t in outputs}) != len(outputs):
        raise ValueError("the same tensor appears twice in the model outputs")
    known = {id(t) for t in inputs}
    sources = [t for t in outputs if t.producer is None]
    sources += [t for call in calls for t in call.inputs if t.producer is None]
    for tensor in sources:
        if id(tensor) not in known:
            raise ValueError(
                f"the outputs depend on {tensor!r}, which is not among the model inputs"
            )
    used = {id(t) for t in sources}
    unused = [t for t in inputs if id(t) not in used]
    if unused:
        # Its rows would be checked and sent for nothing: a wiring mistake.
        raise ValueError(f"no model output depends on the model input {unused[0]!r}")


def check_state_layers_called_once(graph: ModelGraph) -> None:
    """Refuses a layer that updates its own state (batch norm) called more than once.

    Args:
        graph: the model's graph, its layers named.

    Raises:
        ValueError: naming the layer and its number of calls.

    Example:
        >>> check_state_layers_called_once(model.graph)  # doctest: +SKIP
    """
    calls: dict[int, int] = defaultdict(int)
    for call in graph.calls:
        calls[id(call.layer)] += 1
    for layer in graph.layers:
        if layer.updates_state and calls[id(layer)] > 1:
            raise ValueError(
                f"layer '{layer.name}' ({type(layer).__name__}) is called "
                f"{calls[id(layer)]} times in this model, but it updates its own state "
                "(running statistics) in training and can be called only once; use one "
                "layer per call"
            )


def graph_bytes_per_sample(graph: Any) -> int:
    """Bytes one sample takes across every node of ``graph`` (4 per element), a symbolic
    dim (the batch, a sequence length) counting one position.

    Example:
        >>> graph_bytes_per_sample(g)  # doctest: +SKIP
        68
    """
    total = 0
    for node in range(len(graph)):
        total += 4 * math.prod(1 if d < 0 else int(d) for d in graph.shape(node))
    return total
