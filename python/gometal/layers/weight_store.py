"""Where a layer's weights live: in the layer until an engine takes them, then in that engine.

A layer's weights exist once. A model built from another model's layers shares them (as in
Keras), and every engine that runs a layer (a trainer's, or a model's inference engine)
holds the layer through an ``EngineWeights``: taking a layer copies its current values into
the engine, which from then on is where they are read and written. When a second engine
takes a layer, the first takes it back, with the values the second left, before its next
call. So two trainers of one model update one set of weights, each with its own optimizer
state, as two ``torch.optim`` optimizers over the same parameters do; never two copies that
silently diverge.

Moving layers between engines is thread-safe. Running two engines that share layers on two
threads at the same time is not supported (as stepping two torch optimizers over the same
parameters concurrently is not): each call takes its layers back first, so the last one wins.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

_lock = threading.RLock()
# Bumped whenever any layer moves to another engine: an engine whose last look at its
# layers is as new as this holds all of them, so the check per call is one comparison.
_moves = 0


class LayerWeights:
    """The weights of one layer, wherever they currently are: the layer's own arrays, or
    the variables ``<layer>.<weight>`` of the engine that took them.

    Example:
        >>> store = layer.weight_store  # doctest: +SKIP
        >>> store.get(["weight"])["weight"].shape  # doctest: +SKIP
        (10, 64)
    """

    def __init__(self) -> None:
        self._values: dict[str, np.ndarray] | None = None
        self._engine: Any = None
        self._prefix = ""

    @property
    def initialized(self) -> bool:
        """Whether the weights have values (set by the first model built on the layer)."""
        return self._values is not None or self._engine is not None

    @property
    def engine(self) -> Any:
        """The engine holding the weights, or ``None`` while the layer holds them itself."""
        return self._engine

    def initialize(self, values: Mapping[str, np.ndarray]) -> None:
        """Gives a layer that has no weights yet its first values (float32 copies)."""
        with _lock:
            if self.initialized:
                raise RuntimeError("the layer's weights are already initialized")
            self._values = {k: np.array(v, dtype=np.float32) for k, v in values.items()}

    def get(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Copies of the weights ``names`` (local names such as ``"weight"``), in order."""
        with _lock:
            if self._engine is not None:
                return {n: np.array(self._engine.get_variable(self._prefix + n)) for n in names}
            if self._values is None:
                raise RuntimeError("the layer has no weights yet: build a model on it first")
            return {n: self._values[n].copy() for n in names}

    def set(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrites some weights with already checked float32 arrays."""
        with _lock:
            if self._engine is not None:
                for name, value in values.items():
                    self._engine.set_variable(self._prefix + name, value)
            elif self._values is not None:
                for name, value in values.items():
                    self._values[name] = np.array(value, dtype=np.float32)
            else:
                raise RuntimeError("the layer has no weights yet: build a model on it first")

    def move_to(self, engine: Any, prefix: str, names: Iterable[str]) -> None:
        """Copies the current values into ``engine`` (variables ``prefix + name``) and makes
        it their home. Callers hold the module lock."""
        global _moves
        current = self.get(names)
        for name, value in current.items():
            engine.set_variable(prefix + name, value)
        self._engine, self._prefix, self._values = engine, prefix, None
        _moves += 1


class EngineWeights:
    """An engine's hold on the weights of the layers it runs.

    Creating it takes the layers (their current values go into the engine); ``ensure``
    takes back any layer another engine has taken since, before the engine runs.

    Args:
        engine: a ``_core.Engine`` that declares a variable ``<layer>.<weight>`` per weight.
        layers: the layers whose weights the engine runs.

    Example:
        >>> held = EngineWeights(engine, model.layers)  # doctest: +SKIP
        >>> held.ensure(); engine.run("predict", [x])  # doctest: +SKIP
    """

    def __init__(self, engine: Any, layers: Iterable[Any]):
        self.engine = engine
        self._layers = [layer for layer in layers if layer.weight_specs]
        self._seen = -1
        self.ensure()

    def ensure(self) -> Any:
        """Takes back every layer held elsewhere; returns the engine, ready to run."""
        if self._seen != _moves:
            with _lock:
                for layer in self._layers:
                    store = layer.weight_store
                    if store.engine is not self.engine:
                        names = [spec.name for spec in layer.weight_specs]
                        store.move_to(self.engine, f"{layer.name}.", names)
                self._seen = _moves
        return self.engine
