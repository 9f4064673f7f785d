"""Where a layer's weights live: in the layer until an engine takes them, then in that engine.

A layer's weights exist once. A model built from another model's layers shares them (as in
Keras), and every engine that runs a layer (a trainer's, or a model's inference engine)
holds the layer through an ``EngineWeights``: taking a layer copies its current values into
the engine, which from then on is where they are read and written. When a second engine
takes a layer, the first takes it back, with the values the second left, before its next
call. So two trainers of one model update one set of weights, each with its own optimizer
state, as two ``torch.optim`` optimizers over the same parameters do; never two copies that
silently diverge.

Threads: layers that have ever run in one engine share one lock (their *group*; building an
engine over layers of several groups merges them). Every engine call, weight read and weight
write holds its group's lock, so calls on engines that share layers take turns and each sees
the other's finished updates, reads never see half a step, and engines with nothing in
common still run in parallel.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

# Guards moves and merges of groups; always taken after a group lock, never before one.
_lock = threading.RLock()
# Bumped whenever any layer moves to another engine: an engine whose last look at its
# layers is as new as this holds all of them, so the check per call is one comparison.
_moves = 0


class _Group:
    """Layers whose weights have shared an engine: one lock for all of them."""

    __slots__ = ("lock", "parent")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.parent: _Group | None = None  # set when merged into another group

    def root(self) -> _Group:
        group = self
        while group.parent is not None:
            group = group.parent
        return group


@contextlib.contextmanager
def _holding(group: _Group) -> Iterator[None]:
    """Holds the lock of ``group``'s current root (re-checked after waiting: it may have been
    merged into another group meanwhile)."""
    while True:
        root = group.root()
        root.lock.acquire()
        if root.parent is None:
            break
        root.lock.release()
    try:
        yield
    finally:
        root.lock.release()


def _merge(groups: Iterable[_Group]) -> _Group:
    """Merges ``groups`` into one and returns it, waiting for calls running under any of them."""
    while True:
        roots = sorted({id(g.root()): g.root() for g in groups}.values(), key=id)
        for root in roots:  # in one global order, so two merges cannot deadlock
            root.lock.acquire()
        try:
            if all(root.parent is None for root in roots):
                for other in roots[1:]:
                    other.parent = roots[0]
                return roots[0]
        finally:
            for root in reversed(roots):
                root.lock.release()


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
        self._group = _Group()

    @property
    def initialized(self) -> bool:
        """Whether the weights have values (set by the first model built on the layer)."""
        return self._values is not None or self._engine is not None

    @property
    def engine(self) -> Any:
        """The engine holding the weights, or ``None`` while the layer holds them itself."""
        return self._engine

    def initialize(self, values: Mapping[str, np.ndarray | Callable[[], np.ndarray]]) -> None:
        """Gives a layer that has no weights yet its first values: arrays (copied as
        float32), or callables that draw them, called only when a value is first read (a
        model whose weights are all set right away, as an imported one, never draws)."""
        with _holding(self._group):
            if self.initialized:
                raise RuntimeError("the layer's weights are already initialized")
            self._values = {
                k: v if callable(v) else np.array(v, dtype=np.float32) for k, v in values.items()
            }

    def get(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Copies of the weights ``names`` (local names such as ``"weight"``), in order."""
        with _holding(self._group):
            return self._get_locked(names)

    def set(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrites some weights with already checked float32 arrays."""
        with _holding(self._group):
            if self._engine is not None:
                for name, value in values.items():
                    self._engine.set_variable(self._prefix + name, value)
            elif self._values is not None:
                for name, value in values.items():
                    self._values[name] = np.array(value, dtype=np.float32)
            else:
                raise RuntimeError("the layer has no weights yet: build a model on it first")

    def _get_locked(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        if self._engine is not None:
            return {n: np.array(self._engine.get_variable(self._prefix + n)) for n in names}
        if self._values is None:
            raise RuntimeError("the layer has no weights yet: build a model on it first")
        names = list(names)
        for name in names:
            draw = self._values[name]
            if callable(draw):
                self._values[name] = np.array(draw(), dtype=np.float32)
        return {n: self._values[n].copy() for n in names}

    def _move_to(self, engine: Any, prefix: str, names: Iterable[str]) -> None:
        """Copies the current values into ``engine`` (variables ``prefix + name``) and makes
        it their home. The caller holds the group lock and the module lock."""
        global _moves
        for name, value in self._get_locked(names).items():
            engine.set_variable(prefix + name, value)
        self._engine, self._prefix, self._values = engine, prefix, None
        _moves += 1


@contextlib.contextmanager
def holding_weights(layers: Iterable[Any]) -> Iterator[None]:
    """Holds the locks of ``layers``' weights, so that reading several layers gives values
    of one moment (no engine that runs them is half-way through a step).

    Example:
        >>> with holding_weights(model.layers): snapshot = model.get_weights()  # doctest: +SKIP
    """
    stores = [layer.weight_store for layer in layers if layer.weight_specs]
    with contextlib.ExitStack() as stack:
        roots = sorted({id(s._group.root()): s._group for s in stores}.values(), key=id)
        for group in roots:
            stack.enter_context(_holding(group))
        yield


class EngineWeights:
    """An engine's hold on the weights of the layers it runs.

    Creating it merges the layers' lock groups and takes the layers (their current values
    go into the engine); ``use`` takes back any layer another engine has taken since and
    holds the group's lock while the caller runs the engine.

    Args:
        engine: a ``_core.Engine`` that declares a variable ``<layer>.<weight>`` per weight.
        layers: the layers whose weights the engine runs.

    Example:
        >>> held = EngineWeights(engine, model.layers)  # doctest: +SKIP
        >>> with held.use() as engine:  # doctest: +SKIP
        ...     engine.run("predict", [x])
    """

    def __init__(self, engine: Any, layers: Iterable[Any]):
        self.engine = engine
        self._layers = [layer for layer in layers if layer.weight_specs]
        self._seen = -1
        self._group = _merge([layer.weight_store._group for layer in self._layers] or [_Group()])
        with self.use():
            pass

    def use(self) -> contextlib.AbstractContextManager[Any]:
        """Holds the weights' lock with every layer in this engine; yields the engine.

        Example:
            >>> with held.use() as engine: engine.run("predict", [x])  # doctest: +SKIP
        """
        return _EngineInUse(self)

    def _take_back(self) -> None:
        """Moves every layer held elsewhere into this engine (group lock held)."""
        with _lock:
            for layer in self._layers:
                store = layer.weight_store
                if store.engine is not self.engine:
                    names = [spec.name for spec in layer.weight_specs]
                    store._move_to(self.engine, f"{layer.name}.", names)
            self._seen = _moves


class _EngineInUse:
    """``EngineWeights.use``: a plain class, since it wraps every step (a generator-based
    context manager costs microseconds per call)."""

    __slots__ = ("_held", "_root")

    def __init__(self, held: EngineWeights):
        self._held = held
        self._root: _Group | None = None

    def __enter__(self) -> Any:
        held = self._held
        while True:  # the root, re-checked after waiting: a merge may have moved it
            root = held._group.root()
            root.lock.acquire()
            if root.parent is None:
                break
            root.lock.release()
        self._root = root
        if held._seen != _moves:
            try:
                held._take_back()
            except BaseException:
                root.lock.release()
                raise
        return held.engine

    def __exit__(self, *exc_info: object) -> None:
        assert self._root is not None
        self._root.lock.release()
