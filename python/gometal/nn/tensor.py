"""Symbolic tensors: the nodes of the Python-side model graph (layer calls and inputs).

A symbolic tensor holds no data. It records its shape (the batch dimension is -1 inside,
shown as ``None``) and the layer call that produced it, so a ``Model`` can walk from its
outputs back to its inputs and emit the whole forward pass into an engine graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .layers.base import Layer

BATCH = -1


def check_sample_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """Returns ``shape`` as a tuple of positive ints, or raises ``ValueError`` naming it.

    Args:
        shape: an int or a sequence of ints, without the batch dimension.
        name: the argument name used in error messages.

    Returns:
        The shape as a tuple.

    Example:
        >>> check_sample_shape(64)
        (64,)
    """
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of positive ints, got {shape!r}") from None
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
        raise ValueError(
            f"{name} must be a non-empty tuple of positive ints without the batch dimension, "
            f"got {shape!r}"
        )
    return dims


class LayerCall:
    """One application of a layer to symbolic inputs; produces exactly one output."""

    __slots__ = ("inputs", "layer", "output")

    def __init__(self, layer: Layer, inputs: Sequence[SymbolicTensor]):
        self.layer = layer
        self.inputs = tuple(inputs)
        self.output: SymbolicTensor | None = None


class SymbolicTensor:
    """A placeholder for a batch of values flowing through a model being defined.

    Attributes:
        engine_shape: the shape with ``-1`` for the batch, as the engine sees it.
        producer: the layer call that computes it, or ``None`` for a model input.
        name: the input's name for model inputs, else ``None``.
    """

    __slots__ = ("engine_shape", "name", "producer")

    def __init__(
        self, engine_shape: tuple[int, ...], producer: LayerCall | None, name: str | None = None
    ):
        self.engine_shape = tuple(engine_shape)
        self.producer = producer
        self.name = name

    @property
    def shape(self) -> tuple[int | None, ...]:
        """The shape with ``None`` for the batch dimension, e.g. ``(None, 128)``."""
        return tuple(None if d == BATCH else d for d in self.engine_shape)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (without the batch dimension)."""
        return self.engine_shape[1:]

    @property
    def ndim(self) -> int:
        """Rank including the batch dimension."""
        return len(self.engine_shape)

    def __add__(self, other: object) -> SymbolicTensor:
        if not isinstance(other, SymbolicTensor):
            return NotImplemented
        from .layers.merge import Add

        return Add()([self, other])

    def __mul__(self, other: object) -> SymbolicTensor:
        if not isinstance(other, SymbolicTensor):
            return NotImplemented
        from .layers.merge import Multiply

        return Multiply()([self, other])

    def __repr__(self) -> str:
        if self.producer is not None:
            origin = f"a {type(self.producer.layer).__name__} layer"
        else:
            origin = f"Input '{self.name}'" if self.name else "an Input"
        return f"SymbolicTensor(shape={self.shape}, from {origin})"


def Input(shape: Any, name: str | None = None) -> SymbolicTensor:
    """Creates a symbolic model input.

    Args:
        shape: the shape of one sample, without the batch dimension, e.g. ``(64,)``.
        name: an optional name for the input.

    Returns:
        A symbolic tensor of shape ``(None, *shape)`` to call layers on.

    Example:
        >>> x = Input((64,))
        >>> x.shape
        (None, 64)
    """
    dims = check_sample_shape(shape)
    return SymbolicTensor((BATCH, *dims), None, name)
