"""The one registry of layer classes: what a saved model may name, and how each exports.

Registering a layer class (``@register_layer``, as every built-in layer is) makes models
using it savable and loadable under its class name; an ONNX rule given at registration
(``@register_layer(onnx=rule)``) makes them exportable too. Saving, loading and ONNX
export all read this registry, so there is no other list of layers to keep in step.

An ONNX rule appends the nodes of one layer call to the graph being exported:
``rule(graph, call, inputs, output, name)``, where ``graph`` is an :class:`OnnxGraph`,
``call`` the ``LayerCall``, ``inputs`` the ONNX names of its input tensors, ``output``
the name the call's output must have (the list of names, in order, for a call of several
outputs), and ``name`` a unique node name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

import numpy as np

from ..tensor import LayerCall
from .base import Layer

LayerClass = TypeVar("LayerClass", bound=type[Layer])


class OnnxGraph(Protocol):
    """The ONNX graph being exported, as an ONNX rule sees it.

    Attributes:
        opset: the ONNX operator set version being written.
    """

    opset: int

    def unique(self, name: str) -> str:
        """``name``, or ``name_<k>`` if taken, recorded as taken: a fresh tensor name."""

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        output: str | Sequence[str],
        name: str,
        **attrs: Any,
    ) -> None:
        """Appends one ONNX node: one output, or a list of them ("" skips one)."""

    def weight(self, layer: Layer, local: str) -> str:
        """The initializer holding ``<layer>.<local>`` (added on first use); its name."""

    def constant(self, name: str, value: np.ndarray) -> str:
        """A ``Constant`` node producing ``value`` as float32; its output's name."""

    def int_constant(self, name: str, values: Sequence[int]) -> str:
        """A ``Constant`` node producing ``values`` as 1-D int64 (shapes, axes, pads)."""


# rule(graph, call, input names, output name, node name): appends the call's nodes.
OnnxRule = Callable[[OnnxGraph, LayerCall, list[str], Any, str], None]


@dataclass(frozen=True)
class LayerEntry:
    """A registered layer class and what it supports.

    Attributes:
        layer_class: the class, saved and loaded under its ``__name__``.
        onnx: its ONNX export rule, or ``None`` when it does not export.
    """

    layer_class: type[Layer]
    onnx: OnnxRule | None = None


_ENTRIES: dict[str, LayerEntry] = {}


def _check_rebuildable(cls: type[Layer]) -> None:
    if cls.get_config is not Layer.get_config:
        return
    arguments = [
        name
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "name")
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if arguments:
        raise TypeError(
            f"{cls.__name__} takes constructor arguments {arguments} but does not override "
            "get_config(); return them from get_config() so the layer can be rebuilt"
        )


def _register(cls: Any, onnx: OnnxRule | None) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer expects a gm.layers.Layer subclass, got {cls!r}")
    if onnx is not None and not callable(onnx):
        raise TypeError(
            f"register_layer's onnx must be a rule function (graph, call, inputs, output, "
            f"name), got {onnx!r}"
        )
    known = _ENTRIES.get(cls.__name__)
    if known is not None and known.layer_class is not cls:
        raise ValueError(
            f"a different layer class is already registered as {cls.__name__!r} "
            f"({known.layer_class!r})"
        )
    _check_rebuildable(cls)
    if onnx is None and known is not None:
        onnx = known.onnx  # registering again keeps the rule it has
    _ENTRIES[cls.__name__] = LayerEntry(cls, onnx)
    return cls


@overload
def register_layer(cls: LayerClass, *, onnx: OnnxRule | None = None) -> LayerClass: ...


@overload
def register_layer(
    cls: None = None, *, onnx: OnnxRule | None = None
) -> Callable[[LayerClass], LayerClass]: ...


def register_layer(cls: Any = None, *, onnx: OnnxRule | None = None) -> Any:
    """Registers a layer class: models using it save and load, and with ``onnx``, export.

    The class must rebuild from ``cls.from_config(layer.get_config())``: a constructor
    taking arguments besides ``name`` needs its own ``get_config``. Export matches the
    exact class: a subclass may compute something else, so it needs its own rule.

    Args:
        cls: a ``gm.layers.Layer`` subclass; leave it out to use
            ``@register_layer(onnx=...)`` as a decorator.
        onnx: the ONNX export rule (see the module docstring); ``None`` keeps a rule the
            class already has, or registers it without one.

    Returns:
        ``cls`` (or, without ``cls``, a decorator that registers its class).

    Raises:
        TypeError: ``cls`` is not a layer class, takes arguments it cannot save, or
            ``onnx`` is not callable.
        ValueError: another class is already registered under the same name.

    Example:
        >>> def scale_to_onnx(graph, call, inputs, output, name):
        ...     graph.node("Mul", [inputs[0], graph.weight(call.layer, "scale")], output, name)
        >>> @gm.layers.register_layer(onnx=scale_to_onnx)
        ... class Scale(gm.layers.Layer):  # doctest: +SKIP
        ...     ...
    """
    if cls is None:
        return lambda layer_class: _register(layer_class, onnx)
    return _register(cls, onnx)


def registered_layers() -> dict[str, type[Layer]]:
    """The layer classes a saved model may name, by class name.

    Returns:
        A copy of the registry's classes.

    Example:
        >>> "Dense" in registered_layers()
        True
    """
    return {name: entry.layer_class for name, entry in _ENTRIES.items()}


def layer_entries() -> dict[str, LayerEntry]:
    """Every registry entry, by class name.

    Returns:
        A copy of the registry.

    Example:
        >>> layer_entries()["Dense"].onnx is not None
        True
    """
    return dict(_ENTRIES)


def entry_of(layer_class: type) -> LayerEntry | None:
    """The entry of exactly ``layer_class`` (not of a class registered under its name).

    Args:
        layer_class: a layer class.

    Returns:
        Its entry, or ``None`` when that class is not registered.

    Example:
        >>> entry_of(Layer) is None
        True
    """
    entry = _ENTRIES.get(getattr(layer_class, "__name__", ""))
    return entry if entry is not None and entry.layer_class is layer_class else None
