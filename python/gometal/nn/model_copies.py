"""Copies and pickles of a ``Model`` through its definition and weights, never engine
memory (``Model.__reduce__`` calls ``rebuild_model``), and the check that ``model(x)`` is
given arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..base.runtime import resolve_backend
from . import provided
from .tensor import SymbolicTensor


def holds_symbolic(x: Any) -> bool:
    """Whether ``x`` is a symbolic tensor, or a list, tuple or dict holding one."""
    if isinstance(x, SymbolicTensor):
        return True
    if isinstance(x, Mapping):
        return any(isinstance(value, SymbolicTensor) for value in x.values())
    if isinstance(x, (list, tuple)):
        return any(isinstance(value, SymbolicTensor) for value in x)
    return False


def rebuild_model(
    config: Mapping[str, Any],
    weights: Mapping[str, Any],
    backend: str,
    frozen: Sequence[str] = (),
) -> Any:
    """Rebuilds a copied or unpickled model from its definition and weights.

    Args:
        config: the model's definition (``model_to_config`` data).
        weights: every weight, by name.
        backend: the backend its ``predict`` runs on.
        frozen: names of layers whose ``trainable`` flag is off.

    Returns:
        A new model with its own layers holding ``weights``.

    Example:
        >>> clone = pickle.loads(pickle.dumps(model))  # doctest: +SKIP
    """
    model = provided.model_from_config(config)
    model.backend = resolve_backend(backend)
    model.set_weights(weights)
    for name in frozen:
        model.get_layer(name).trainable = False
    return model
