"""Symbolic tensors: the nodes of the Python-side model graph (layer calls and inputs).

A symbolic tensor holds no data. It records its shape (the batch dimension is -1 inside,
shown as ``None``) and the layer call that produced it, so a ``Model`` can walk from its
outputs back to its inputs and emit the whole forward pass into an engine graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _core

if TYPE_CHECKING:
    from .layers.base import Layer

BATCH = -1
# A sequence length known only at run time: ``gm.Input((None,))`` (the engine's ``seq``).
SEQ = _core.dim_symbol("seq")
INPUT_DTYPES = ("float32", "int32")


def is_symbolic(dim: int) -> bool:
    """Whether an engine dim is a symbol (the batch, ``seq``, ...) rather than a size."""
    return dim < 0


def show_dim(dim: int) -> int | str | None:
    """A dim as users see it: the size, ``None`` for the batch and ``seq``, else the name."""
    if dim >= 0:
        return dim
    return None if dim in (BATCH, SEQ) else _core.symbol_name(dim)


def check_sample_shape(
    shape: Any, name: str = "shape", allow_symbols: bool = False
) -> tuple[int, ...]:
    """Returns ``shape`` as a tuple of engine dims, or raises ``ValueError`` naming it.

    Args:
        shape: an int or a sequence of ints, without the batch dimension; with
            ``allow_symbols``, ``None`` (a sequence length known at run time, ``seq``) or a
            name (another symbolic size, e.g. ``"src_seq"``) may stand for a dim.
        name: the argument name used in error messages.
        allow_symbols: accept symbolic dims.

    Returns:
        The shape as a tuple (symbols as the engine's negative dims).

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
    checked = []
    for d in dims:
        if allow_symbols and d is None:
            checked.append(SEQ)
        elif allow_symbols and isinstance(d, str) and d and d != "batch":
            checked.append(_core.dim_symbol(d))
        elif isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            what = "positive ints, None or symbol names" if allow_symbols else "positive ints"
            raise ValueError(
                f"{name} must be a non-empty tuple of {what} without the batch dimension, "
                f"got {shape!r}"
            )
        else:
            checked.append(d)
    if not checked:
        raise ValueError(f"{name} must be a non-empty tuple without the batch dimension, got ()")
    return tuple(checked)


class LayerCall:
    """One application of a layer to symbolic inputs; produces one output or several.

    Most layers give one output (``output``). A layer whose ``num_outputs`` is above one
    (a recurrent layer with ``return_state=True``: the sequence and its final states) gives
    a tuple of them (``outputs``), each a symbolic tensor that knows its position
    (``output_index``). Read-only: a model's graph is fixed once its tensors exist.

    Args:
        layer: the layer applied.
        inputs: the symbolic tensors it is applied to.
        output_shape: the engine shape of its (first) output (``-1`` for the batch).
        output_dtype: the element type of its (first) output.
        extra_outputs: ``(engine shape, dtype)`` of each further output, in order.
    """

    __slots__ = ("_inputs", "_layer", "_outputs")

    def __init__(
        self,
        layer: Layer,
        inputs: Sequence[SymbolicTensor],
        output_shape: Sequence[int],
        output_dtype: str = "float32",
        extra_outputs: Sequence[tuple[Sequence[int], str]] = (),
    ):
        self._layer = layer
        self._inputs = tuple(inputs)
        kinds = [(output_shape, output_dtype), *extra_outputs]
        self._outputs = tuple(
            SymbolicTensor(tuple(shape), self, dtype=dtype, output_index=index)
            for index, (shape, dtype) in enumerate(kinds)
        )

    @property
    def layer(self) -> Layer:
        """The layer applied."""
        return self._layer

    @property
    def inputs(self) -> tuple[SymbolicTensor, ...]:
        """The tensors the layer is applied to, in order."""
        return self._inputs

    @property
    def output(self) -> SymbolicTensor:
        """The tensor the call produces (its first one when it produces several)."""
        return self._outputs[0]

    @property
    def outputs(self) -> tuple[SymbolicTensor, ...]:
        """Every tensor the call produces, in order (one for most layers)."""
        return self._outputs

    def __repr__(self) -> str:
        more = f", {len(self._outputs)} outputs" if len(self._outputs) > 1 else ""
        return f"LayerCall({self._layer!r} on {len(self._inputs)} input(s){more})"


class SymbolicTensor:
    """A placeholder for a batch of values flowing through a model being defined.

    Read-only; ``gm.Input`` makes model inputs and layer calls make the others.

    Attributes:
        engine_shape: the shape with ``-1`` for the batch, as the engine sees it.
        producer: the layer call that computes it, or ``None`` for a model input.
        name: the input's name for model inputs, else ``None``.
        dtype: ``"float32"``, or ``"int32"`` for token ids.
        output_index: its position among its producer's outputs (0 for most layers).
    """

    __slots__ = ("_dtype", "_engine_shape", "_index", "_name", "_producer")

    def __init__(
        self,
        engine_shape: tuple[int, ...],
        producer: LayerCall | None,
        name: str | None = None,
        dtype: str = "float32",
        output_index: int = 0,
    ):
        self._engine_shape = tuple(engine_shape)
        self._producer = producer
        self._name = name
        self._dtype = dtype
        self._index = output_index

    @property
    def output_index(self) -> int:
        """Its position among the outputs of its producer (0 for a one-output call or an
        input)."""
        return self._index

    @property
    def dtype(self) -> str:
        """The element type: ``"float32"``, or ``"int32"`` for token ids."""
        return self._dtype

    @property
    def engine_shape(self) -> tuple[int, ...]:
        """The shape with ``-1`` for the batch, as the engine sees it."""
        return self._engine_shape

    @property
    def producer(self) -> LayerCall | None:
        """The layer call that computes this tensor, or ``None`` for a model input."""
        return self._producer

    @property
    def name(self) -> str | None:
        """The input's name for model inputs, else ``None``."""
        return self._name

    @property
    def shape(self) -> tuple[int | str | None, ...]:
        """The shape with ``None`` for the batch (and a run-time sequence length), e.g.
        ``(None, 128)`` or ``(None, None, 64)``."""
        return tuple(show_dim(d) for d in self.engine_shape)

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
            if len(self.producer.outputs) > 1:
                origin += f" (output {self._index})"
        else:
            origin = f"Input '{self.name}'" if self.name else "an Input"
        return f"SymbolicTensor(shape={self.shape}, from {origin})"


def Input(shape: Any, name: str | None = None, dtype: str = "float32") -> SymbolicTensor:
    """Creates a symbolic model input.

    Args:
        shape: the shape of one sample, without the batch dimension, e.g. ``(64,)``;
            ``None`` stands for a sequence length known only at run time (``(None,)``
            for token ids), a name for another run-time size.
        name: an optional name for the input.
        dtype: ``"float32"``, or ``"int32"`` for token ids (``gm.layers.Embedding``).

    Returns:
        A symbolic tensor of shape ``(None, *shape)`` to call layers on.

    Example:
        >>> x = Input((64,))
        >>> x.shape
        (None, 64)
        >>> Input((None,), dtype="int32").shape
        (None, None)
    """
    if dtype not in INPUT_DTYPES:
        raise ValueError(f"Input dtype must be one of {INPUT_DTYPES}, got {dtype!r}")
    dims = check_sample_shape(shape, allow_symbols=True)
    return SymbolicTensor((BATCH, *dims), None, name, dtype=dtype)


def _topological_calls(outputs: Sequence[SymbolicTensor]) -> list[LayerCall]:
    """Layer calls in dependency order (inputs first), found by an iterative DFS."""
    order: list[LayerCall] = []
    done: set[int] = set()
    stack: list[tuple[LayerCall, bool]] = [
        (t.producer, False) for t in reversed(outputs) if t.producer is not None
    ]
    while stack:
        call, expanded = stack.pop()
        if id(call) in done:
            continue
        if expanded:
            done.add(id(call))
            order.append(call)
            continue
        stack.append((call, True))
        for tensor in reversed(call.inputs):
            if tensor.producer is not None and id(tensor.producer) not in done:
                stack.append((tensor.producer, False))
    return order


@dataclass(frozen=True)
class ModelGraph:
    """A model's graph, read-only: what serialization, export and plots read of a model.

    Attributes:
        inputs: the model's input tensors, in order.
        outputs: the model's output tensors, in order.
        calls: every layer call between them, in dependency order (a call comes after
            the calls producing its inputs); a layer called twice appears twice.

    Example:
        >>> graph = model.graph  # doctest: +SKIP
        >>> [call.layer.name for call in graph.calls]  # doctest: +SKIP
        ['dense_0', 'relu_0', 'dense_1']
    """

    inputs: tuple[SymbolicTensor, ...]
    outputs: tuple[SymbolicTensor, ...]
    calls: tuple[LayerCall, ...]

    @classmethod
    def trace(
        cls, inputs: Sequence[SymbolicTensor], outputs: Sequence[SymbolicTensor]
    ) -> ModelGraph:
        """The graph from ``inputs`` to ``outputs``: the calls the outputs depend on.

        Args:
            inputs: the input tensors.
            outputs: the output tensors.

        Returns:
            The graph (not checked: ``gm.Model`` checks that the inputs are sources and
            that the outputs depend on no other input).

        Example:
            >>> x = Input((4,))
            >>> len(ModelGraph.trace([x], [x]).calls)
            0
        """
        return cls(tuple(inputs), tuple(outputs), tuple(_topological_calls(outputs)))

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Each layer once, in the order of its first call."""
        seen: dict[int, Layer] = {}
        for call in self.calls:
            seen.setdefault(id(call.layer), call.layer)
        return tuple(seen.values())

    def calls_of(self, layer: Layer) -> tuple[LayerCall, ...]:
        """The calls of ``layer``, in dependency order.

        Args:
            layer: a layer of this graph.

        Returns:
            Its calls (empty for a layer that is not in the graph).

        Example:
            >>> model.graph.calls_of(model.get_layer("dense_0"))[0].output.shape  # doctest: +SKIP
            (None, 128)
        """
        return tuple(call for call in self.calls if call.layer is layer)
