"""The layer protocol: weight declarations, emission into an engine graph, and calls.

A layer is Python only. It declares its weights from the input shapes (``build``) and
composes engine primitives in ``emit``. Calling a layer on symbolic tensors emits it once
into a throw-away graph, so the engine's shape inference is the single source of truth
for output shapes and shape errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ... import _core
from ..initializers import Initializer
from ..tensor import LayerCall, SymbolicTensor, show_dim
from .weight_store import LayerWeights

RESERVED_NAMES = frozenset({"optimizer"})


def check_layer_name(name: object) -> str:
    """Returns ``name`` if it can prefix weight names, else raises ``ValueError``.

    Args:
        name: the proposed layer name.

    Returns:
        The name.

    Example:
        >>> check_layer_name("encoder_fc")
        'encoder_fc'
    """
    if not isinstance(name, str) or not name or name.strip() != name:
        raise ValueError(
            f"a layer name must be a non-empty string without surrounding spaces, got {name!r}"
        )
    if "." in name:
        raise ValueError(f"layer name {name!r} may not contain '.', which separates weight names")
    if name in RESERVED_NAMES:
        raise ValueError(f"layer name {name!r} is reserved")
    return name


def check_weight_values(
    weights: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], owner: str
) -> dict[str, np.ndarray]:
    """Checks names, dtypes and shapes of new weight values; returns float32 copies.

    Args:
        weights: name -> array-like.
        shapes: the known names and their shapes.
        owner: what holds the weights, for messages (``"layer 'dense_0'"``, ``"the model"``).

    Returns:
        name -> C-contiguous float32 array, in the order given.

    Raises:
        ValueError: an unknown name or a wrong shape.
        TypeError: a non-numeric value.

    Example:
        >>> check_weight_values({"bias": [0.0]}, {"bias": (1,)}, "layer 'd'")["bias"].dtype
        dtype('float32')
    """
    unknown = [name for name in weights if name not in shapes]
    if unknown:
        raise ValueError(f"unknown weight name(s) {unknown} for {owner}; it has {list(shapes)}")
    converted: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"weight {name!r} has dtype {array.dtype}; expected a real numeric dtype"
            )
        if array.shape != tuple(shapes[name]):
            raise ValueError(
                f"weight {name!r} must have shape {tuple(shapes[name])}, got {array.shape}"
            )
        converted[name] = np.array(array, dtype=np.float32, order="C")
    return converted


# Counts changes of any layer's ``trainable`` flag: a trainer compares one int per step
# to learn whether the weights it trains may have changed.
_TRAINABLE_CHANGES = [0]


def trainable_changes() -> int:
    """How many times a layer's ``trainable`` flag has changed in this process."""
    return _TRAINABLE_CHANGES[0]


@dataclass(frozen=True)
class WeightSpec:
    """A weight a layer owns: its local name (``weight``), shape and initializer.

    ``trainable=False`` marks state the optimizer never touches (running statistics):
    it gets no gradient and no optimizer slots, is left out of ``count_params`` (as
    PyTorch's buffers are left out of ``parameters()``), and is still saved and loaded
    with the other weights.
    """

    name: str
    shape: tuple[int, ...]
    initializer: Initializer
    trainable: bool = True

    @property
    def size(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count


class EmitContext:
    """What a layer sees while emitting itself into an engine graph.

    Attributes:
        graph: the ``_core.Graph`` being built.
        training: ``True`` for the training forward pass, ``False`` for eval and predict.
        effects: assign node ids a layer adds (e.g. running statistics); the trainer
            runs them with the training step.
        losses: scalar node ids a layer adds to the training loss (weight penalties
            such as ``gm.regularizers.l2``); the training step adds their sum to the
            loss it minimizes and reports. Layers add them only when ``training``.
        scope: the name of the layer being emitted; ``variable`` resolves names under it.
    """

    def __init__(self, graph: _core.Graph, training: bool, variables: Mapping[str, int]):
        self.graph = graph
        self.training = bool(training)
        self.effects: list[int] = []
        self.losses: list[int] = []
        self.scope = ""
        self._variables = variables

    def add_loss(self, node: int) -> None:
        """Adds a scalar node to the training loss (collected in ``losses``).

        Args:
            node: the id of a node of shape ``()`` in ``graph``.

        Raises:
            ValueError: the node is not a scalar.

        Example:
            >>> ctx.add_loss(penalty)  # doctest: +SKIP
        """
        shape = tuple(self.graph.shape(node))
        if shape != ():
            where = f" from layer {self.scope!r}" if self.scope else ""
            raise ValueError(f"an added loss{where} must be a scalar (shape ()), got {shape}")
        self.losses.append(node)

    def variable(self, name: str) -> int:
        """Returns the node id of the current layer's weight ``name`` (``<layer>.<name>``).

        Args:
            name: the weight's local name, e.g. ``"weight"``.

        Returns:
            The variable's node id.

        Example:
            >>> w = ctx.variable("weight")  # doctest: +SKIP
        """
        full_name = f"{self.scope}.{name}"
        try:
            return self._variables[full_name]
        except KeyError:
            raise KeyError(f"no variable named {full_name!r} in this graph") from None

    def shared_variable(self, full_name: str, shape: tuple[int, ...]) -> int:
        """The variable ``full_name`` of another layer (a tied weight), declared here when
        the graph has none (a layer probing its output shape alone).

        Example:
            >>> table = ctx.shared_variable("wte.weight", (65, 128))  # doctest: +SKIP
        """
        if full_name not in self._variables:
            self._variables[full_name] = self.graph.variable(full_name, tuple(shape))
        return self._variables[full_name]

    def has_variable(self, name: str) -> bool:
        """Whether the current layer has a weight ``name`` (``<layer>.<name>``)."""
        return f"{self.scope}.{name}" in self._variables


class Layer:
    """Base class of all layers.

    Subclasses set ``kind`` (the auto-name prefix), optionally ``num_inputs`` (``None``
    means two or more) and ``updates_state``, override ``build`` if they own weights, and
    implement ``emit``. A layer giving several outputs (a recurrent layer's sequence and
    final states) overrides ``num_outputs``; its ``emit`` returns a tuple of node ids and
    its calls a tuple of symbolic tensors.

    Args:
        name: an explicit layer name; when ``None`` the model assigns ``<kind>_<index>``.
    """

    kind: ClassVar[str] = "layer"
    num_inputs: ClassVar[int | None] = 1
    # With ``num_inputs = None``: the fewest inputs the layer takes.
    min_inputs: ClassVar[int] = 2
    # The element types the layer takes; an embedding takes int32 token ids.
    input_dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    # Layers that write their own variables during training (``ctx.effects``) may be
    # called only once per model: the engine writes a variable at most once per step.
    updates_state: ClassVar[bool] = False

    def __init__(self, name: str | None = None):
        self.name = None if name is None else check_layer_name(name)
        self._weight_specs: tuple[WeightSpec, ...] = ()
        self._built_for: tuple[tuple[int, ...], ...] | None = None
        # The weights themselves: shared by every model built on this layer.
        self.weight_store = LayerWeights()

    @property
    def trainable(self) -> bool:
        """Whether training updates this layer's weights.

        ``layer.trainable = False`` freezes them, as torch's ``requires_grad_(False)``: no
        gradient and no optimizer slot for them (running statistics, which are not
        trained, still update in training). A trainer of a model holding the layer
        recompiles its step once, at its next step.
        """
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"layer {self.name!r}: trainable must be True or False, got {value!r}")
        if value != self.trainable:
            self.__dict__["_trainable"] = value
            _TRAINABLE_CHANGES[0] += 1

    @property
    def num_outputs(self) -> int:
        """How many tensors a call of this layer gives (1 for most layers)."""
        return 1

    def output_name(self, index: int) -> str:
        """The name of output ``index`` of a call of this named layer, as a model output:
        the layer's name, with ``_<index>`` after it for further outputs.

        Example:
            >>> Dense(3, name="head").output_name(0)
            'head'
        """
        return str(self.name) if index == 0 else f"{self.name}_{index}"

    # -- to override -------------------------------------------------------------------
    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        """Declares the weights for inputs of ``input_shapes`` (batch dim is -1).

        Raise ``ValueError`` for inputs the layer cannot take.
        """
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> Any:
        """Appends this layer's computation to ``ctx.graph``; returns the output node id
        (a tuple of ``num_outputs`` node ids for a layer with several outputs)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement emit()")

    # -- serialization -----------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this layer, as JSON-serializable values.

        Layers whose constructor takes arguments beyond ``name`` extend this dict; tuples
        become lists so the config survives a JSON round trip unchanged.

        Returns:
            ``{"name": ..., **arguments}``; ``name`` is ``None`` until a model names it.

        Example:
            >>> Dense(10, name="head").get_config()
            {'name': 'head', 'units': 10, 'use_bias': True}
        """
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Layer:
        """Builds a layer from the dict ``get_config`` returned.

        Args:
            config: constructor arguments by name.

        Returns:
            A new, unbuilt layer (its weights are declared on its first call).

        Example:
            >>> Dense.from_config({"name": "head", "units": 10, "use_bias": True})
            Dense(10, use_bias=True, name='head')
        """
        return cls(**config)

    # -- shared machinery --------------------------------------------------------------
    @property
    def built(self) -> bool:
        """Whether the layer has been called (and so has declared its weights)."""
        return self._built_for is not None

    @property
    def weight_specs(self) -> tuple[WeightSpec, ...]:
        """The weights this layer owns (empty before its first call)."""
        return self._weight_specs

    def count_params(self) -> int:
        """The number of trainable scalar weights in this layer."""
        return sum(spec.size for spec in self._weight_specs if spec.trainable)

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of this layer's current weights, by local name (``"weight"``, ``"bias"``).

        The values are the live ones, wherever they are (a trainer's engine included).

        Returns:
            Local name -> float32 array; empty for a layer without weights.

        Raises:
            RuntimeError: the layer has weights but no model has been built on it yet.

        Example:
            >>> model.get_layer("dense_0").get_weights()["bias"].shape  # doctest: +SKIP
            (128,)
        """
        if not self._weight_specs:
            return {}
        return self.weight_store.get(spec.name for spec in self._weight_specs)

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Overwrites some or all of this layer's weights (every model using it sees them).

        Args:
            weights: local name -> array-like with the weight's exact shape.

        Raises:
            ValueError: an unknown name or a wrong shape (nothing is changed then).
            TypeError: a non-numeric value.
            RuntimeError: the layer has not been built into a model yet.

        Example:
            >>> layer.set_weights({"bias": np.zeros(128)})  # doctest: +SKIP
        """
        if self._weight_specs and not self.weight_store.initialized:
            raise RuntimeError(
                f"{self._describe(self.name)} has no weights yet: call it on an input and "
                "build a model on it (gm.Model or ModelBuilder.build) first"
            )
        shapes = {spec.name: spec.shape for spec in self._weight_specs}
        self.weight_store.set(check_weight_values(weights, shapes, f"layer '{self.name}'"))

    def __call__(self, inputs: SymbolicTensor | Sequence[SymbolicTensor]) -> Any:
        """Applies the layer to symbolic tensors and returns the symbolic output.

        Args:
            inputs: one symbolic tensor, or a list of them for merge layers.

        Returns:
            The output symbolic tensor; a tuple of them for a layer with several outputs
            (``num_outputs``).

        Example:
            >>> h = Dense(128)(Input((64,)))  # doctest: +SKIP
        """
        return self.apply(inputs, self.name)

    def apply(
        self, inputs: SymbolicTensor | Sequence[SymbolicTensor], label: str | None = None
    ) -> Any:
        """Applies the layer as calling it does, naming it ``label`` in error messages.

        ``ModelBuilder`` passes the name the model will give an unnamed layer, so a shape
        error already names the layer as ``summary()`` will list it.

        Args:
            inputs: one symbolic tensor, or a list of them for merge layers.
            label: the layer's name in errors (``None``: the layer is not named yet).

        Returns:
            The output symbolic tensor, or a tuple of them (``num_outputs`` above 1).

        Example:
            >>> h = Dense(128).apply(Input((64,)), "dense_0")  # doctest: +SKIP
        """
        tensors = self._check_inputs(inputs, label)
        shapes = tuple(t.engine_shape for t in tensors)
        dtypes = tuple(t.dtype for t in tensors)
        self._check_input_dtypes(dtypes, label)
        if self._built_for is None:
            try:
                specs = tuple(self.build(shapes))
            except ValueError as err:
                raise ValueError(f"{self._describe(label)}: {err}") from None
        elif shapes != self._built_for:
            raise ValueError(
                f"{self._describe(label)} was built for input shapes {_show(self._built_for)} "
                f"and cannot be called again on {_show(shapes)}"
            )
        else:
            specs = self._weight_specs
        (shape, dtype), *extra = self._probe_outputs(shapes, dtypes, specs, label)
        self._weight_specs, self._built_for = specs, shapes
        call = LayerCall(self, tensors, shape, dtype, extra_outputs=extra)
        return call.outputs if self.num_outputs > 1 else call.output

    def _check_inputs(
        self, inputs: SymbolicTensor | Sequence[SymbolicTensor], label: str | None
    ) -> tuple[SymbolicTensor, ...]:
        if isinstance(inputs, SymbolicTensor):
            tensors: tuple[Any, ...] = (inputs,)
        elif isinstance(inputs, (list, tuple)):
            tensors = tuple(inputs)
        else:
            tensors = (inputs,)
        if not all(isinstance(t, SymbolicTensor) for t in tensors):
            raise TypeError(
                f"{self._describe(label)} must be called on symbolic tensors (from gm.Input or "
                f"another layer), got {', '.join(type(t).__name__ for t in tensors)}"
            )
        if self.num_inputs is None and len(tensors) < self.min_inputs:
            raise ValueError(
                f"{self._describe(label)} takes a list of {self.min_inputs} or more tensors, "
                f"got {len(tensors)}"
            )
        if self.num_inputs is not None and len(tensors) != self.num_inputs:
            raise ValueError(
                f"{self._describe(label)} takes {self.num_inputs} input(s), got {len(tensors)}"
            )
        return tensors

    def _check_input_dtypes(self, dtypes: Sequence[str], label: str | None) -> None:
        wanted = self.input_dtypes
        for index, dtype in enumerate(dtypes):
            if dtype not in wanted:
                raise TypeError(
                    f"{self._describe(label)} takes {' or '.join(wanted)} inputs, got {dtype} "
                    f"for input {index}"
                    + (
                        " (token ids go through gm.layers.Embedding first)"
                        if dtype == "int32"
                        else ""
                    )
                )

    def _probe_outputs(
        self,
        shapes: Sequence[tuple[int, ...]],
        dtypes: Sequence[str],
        specs: Sequence[WeightSpec],
        label: str | None,
    ) -> list[tuple[tuple[int, ...], str]]:
        graph, scope = _core.Graph(), label or self.kind
        input_ids = [
            graph.input(f"input_{i}", shape, dtype)
            for i, (shape, dtype) in enumerate(zip(shapes, dtypes))
        ]
        variables = {
            f"{scope}.{s.name}": graph.variable(f"{scope}.{s.name}", s.shape) for s in specs
        }
        ctx = EmitContext(graph, training=True, variables=variables)
        ctx.scope = scope
        try:
            emitted = self.emit(ctx, input_ids)
        except ValueError as err:
            raise ValueError(f"{self._describe(label)}: {err}") from None
        nodes = emitted_nodes(emitted, self.num_outputs, self._describe(label))
        return [(tuple(graph.shape(node)), graph.dtype(node)) for node in nodes]

    def _describe(self, label: str | None) -> str:
        if label is None:
            return f"{type(self).__name__} layer"
        return f"layer '{label}' ({type(self).__name__})"

    def __repr__(self) -> str:
        name = f"name={self.name!r}" if self.name else ""
        return f"{type(self).__name__}({name})"


def emitted_nodes(emitted: Any, count: int, label: str) -> tuple[int, ...]:
    """The node ids a layer's ``emit`` returned, as a tuple of ``count``.

    Args:
        emitted: ``emit``'s result: one node id, or a tuple or list of them.
        count: the layer's ``num_outputs``.
        label: the layer as messages name it.

    Returns:
        The node ids.

    Raises:
        ValueError: ``emit`` gave another number of nodes than ``num_outputs``.

    Example:
        >>> emitted_nodes(7, 1, "layer 'dense_0' (Dense)")
        (7,)
    """
    nodes = tuple(emitted) if isinstance(emitted, (tuple, list)) else (emitted,)
    if len(nodes) != count:
        raise ValueError(
            f"{label}'s emit() gave {len(nodes)} node(s), but the layer has num_outputs={count}"
        )
    return nodes


def _show(shapes: Sequence[tuple[int, ...]]) -> str:
    return ", ".join(str(tuple(show_dim(d) for d in s)) for s in shapes)
