"""``Model``: a graph of layer calls from symbolic inputs to outputs.

The weights belong to the layers (``layers/weight_store.py``): a model built on layers that
another model already uses shares their current values, as in Keras. An engine that runs
the layers (a ``Trainer``'s, or the model's own inference engine) holds the values while it
uses them, so ``get_weights``, ``set_weights`` and ``predict`` always see the weights being
trained, by whichever trainer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _core
from ..base.arrays import check_seed
from ..base.runtime import resolve_backend
from . import provided
from .freezing import set_trainable
from .graph_checks import (
    assign_layer_names,
    check_model_graph,
    check_state_layers_called_once,
    graph_bytes_per_sample,
)
from .inference import (
    is_batch_stream,
    predict_stream,
    predict_structured,
    predict_with_engine,
)
from .layers.base import EmitContext, Layer, check_weight_values, emitted_nodes
from .layers.weight_store import EngineWeights, holding_weights
from .model_copies import holds_symbolic, rebuild_model
from .model_services import ModelServices
from .signature import Signature, input_names, output_names, parse_tensors
from .summary import summary_lines
from .tensor import ModelGraph, SymbolicTensor


class Model(ModelServices):
    """A model defined by symbolic inputs and outputs (the functional API).

    A model may take several inputs and give several outputs, as a list or as a dict
    keyed by name; it then takes its inputs (``predict``, training) as a list in order or
    a dict by name, and returns its outputs as it was given them. Names are the dict keys,
    or else the ``gm.Input`` names (``input_<i>`` when unnamed) and the names of the
    layers producing the outputs (see ``input_names``, ``output_names``). One input and
    one output (plain or in one-item lists) take and return plain arrays.

    Args:
        inputs: the ``gm.Input`` tensor, or a list of them, or a dict from names to them.
        outputs: the output symbolic tensor, or a list of them, or a dict from names to them.
        seed: seed for weight initialization; each weight draws from its own stream.
            Layers that already have weights (from another model) keep them.
        backend: the backend ``predict`` runs on before a trainer takes the model,
            ``"cpu"`` or ``"metal"``; ``None`` reads ``$GOMETAL_BACKEND`` (default cpu).

    Example:
        >>> x = gm.Input((64,))
        >>> y = gm.layers.Dense(10)(gm.layers.ReLU()(gm.layers.Dense(128)(x)))
        >>> model = gm.Model(x, y)
        >>> model.count_params()
        9610
        >>> image, meta = gm.Input((3, 8, 8), name="image"), gm.Input((4,), name="meta")
        >>> joined = gm.layers.Concatenate()([gm.layers.Flatten()(image), meta])
        >>> two = gm.Model([image, meta], {"label": gm.layers.Dense(5)(joined),
        ...                                "box": gm.layers.Dense(4)(joined)})
        >>> two.input_names, two.output_names
        (('image', 'meta'), ('label', 'box'))
    """

    def __init__(self, inputs: Any, outputs: Any, seed: int = 0, backend: str | None = None):
        input_list, input_keys = parse_tensors(inputs, "inputs")
        output_list, output_keys = parse_tensors(outputs, "outputs")
        self._graph = ModelGraph.trace(input_list, output_list)
        self._inputs, self._outputs = self._graph.inputs, self._graph.outputs
        self._calls = self._graph.calls
        check_model_graph(self._graph)
        self._layers = list(self._graph.layers)
        assign_layer_names(self._layers)
        check_state_layers_called_once(self._graph)
        names_in = input_names(input_list, input_keys)
        names_out = output_names(output_list, output_keys, input_list, names_in)
        self._input_signature = Signature(
            "input",
            tuple(names_in),
            tuple(t.sample_shape for t in input_list),
            input_keys is not None,
            tuple(t.dtype for t in input_list),
        )
        self._output_signature = Signature(
            "output",
            tuple(names_out),
            tuple(t.sample_shape for t in output_list),
            output_keys is not None,
        )
        self.seed = check_seed(seed)
        self.backend = resolve_backend(backend)
        self._weight_shapes: dict[str, tuple[int, ...]] = {}
        self._trainable: list[str] = []
        self._initialize_weights()
        # The engine predict runs on (a trainer's, or a lazily built inference one).
        self._held: EngineWeights | None = None

    # -- construction helpers --------------------------------------------------------------
    def _initialize_weights(self) -> None:
        """Draws first values for layers that have none; layers that already belong to
        another model keep theirs (shared, as in Keras). Each weight's random stream is its
        position in the model, so a fresh model's values depend only on the seed."""
        stream = 0
        for layer in self._layers:
            # Drawn when first read: weights set right away (an import) are never drawn.
            fresh: dict[str, Any] = {}
            for spec in layer.weight_specs:
                full_name = f"{layer.name}.{spec.name}"
                if not layer.weight_store.initialized:
                    fresh[spec.name] = functools.partial(
                        spec.initializer, self.seed, stream, spec.shape
                    )
                self._weight_shapes[full_name] = spec.shape
                if spec.trainable:
                    self._trainable.append(full_name)
                stream += 1
            if fresh:
                layer.weight_store.initialize(fresh)

    # -- graph emission (used by Trainer and the inference engine) -------------------------
    def declare_variables(self, graph: _core.Graph) -> dict[str, int]:
        """Declares one engine variable per weight (trainable or not) in ``graph``; returns
        name -> node id."""
        return {name: graph.variable(name, shape) for name, shape in self._weight_shapes.items()}

    def emit(self, ctx: EmitContext, input_ids: Sequence[int]) -> list[int]:
        """Emits the forward pass into ``ctx.graph``; returns the output node ids.

        Args:
            ctx: the emission context (graph, training flag, variables, effects).
            input_ids: node ids of the model inputs, in order.

        Returns:
            The node ids of the model outputs.

        Example:
            >>> (out,) = model.emit(EmitContext(g, False, variables), [x])  # doctest: +SKIP
        """
        values = {id(t): node for t, node in zip(self._inputs, input_ids)}
        for call in self._calls:
            ctx.scope = call.layer.name or ""
            emitted = call.layer.emit(ctx, [values[id(t)] for t in call.inputs])
            nodes = emitted_nodes(emitted, len(call.outputs), f"layer '{call.layer.name}'")
            values.update((id(t), node) for t, node in zip(call.outputs, nodes))
        ctx.scope = ""
        return [values[id(t)] for t in self._outputs]

    # -- public API ------------------------------------------------------------------------
    @property
    def graph(self) -> ModelGraph:
        """The model's graph, read-only: its input and output tensors and its layer calls
        in dependency order.

        Example:
            >>> [call.layer.name for call in model.graph.calls]  # doctest: +SKIP
            ['dense_0', 'relu_0', 'dense_1']
        """
        return self._graph

    @property
    def layers(self) -> list[Layer]:
        """The layers in topological order (each once, even if called several times)."""
        return list(self._layers)

    @property
    def inputs(self) -> tuple[SymbolicTensor, ...]:
        """The model's input tensors, in order (named by ``input_names``)."""
        return self._inputs

    @property
    def outputs(self) -> tuple[SymbolicTensor, ...]:
        """The model's output tensors, in order (named by ``output_names``)."""
        return self._outputs

    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs' names: dict keys, else ``gm.Input`` names (``input_<i>`` unnamed)."""
        return self._input_signature.names

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs' names: dict keys, else the names of the layers producing them."""
        return self._output_signature.names

    @property
    def input_signature(self) -> Signature:
        """The inputs' names, sample shapes, and whether they go in as a list or dict."""
        return self._input_signature

    @property
    def output_signature(self) -> Signature:
        """The outputs' names, sample shapes, and whether they come back as a list or dict."""
        return self._output_signature

    def _only(self, tensors: tuple[SymbolicTensor, ...], signature: Signature, what: str) -> Any:
        if len(tensors) != 1:
            raise ValueError(
                f"model.{what} is ambiguous: this model has {len(tensors)} {signature.role}s "
                f"({', '.join(signature.names)}); use model.{signature.role}s"
            )
        return tensors[0]

    @property
    def input(self) -> SymbolicTensor:
        """The model's input tensor, to build a new model on this one's layers.

        Raises:
            ValueError: the model has several inputs (see ``inputs``).
        """
        return self._only(self._inputs, self._input_signature, "input")

    @property
    def output(self) -> SymbolicTensor:
        """The model's output tensor.

        Raises:
            ValueError: the model has several outputs (see ``outputs``).
        """
        return self._only(self._outputs, self._output_signature, "output")

    def get_layer(self, name: str) -> Layer:
        """The layer called ``name``.

        Args:
            name: a layer name, as ``summary()`` lists them.

        Returns:
            The layer.

        Raises:
            KeyError: no layer has that name (the message lists the names).

        Example:
            >>> model.get_layer("dense_0").units  # doctest: +SKIP
        """
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[layer.name for layer in self._layers]}")

    def layer_output(self, name: str) -> Any:
        """The output tensor of the layer called ``name``, e.g. to put a new head on a model.

        A new ``gm.Model(model.input, new_head(model.layer_output(...)))`` shares the
        layers and their current (trained) weights; training either model updates both.

        Args:
            name: the name of a layer called once in this model.

        Returns:
            The symbolic output of that call; the tuple of its outputs for a layer with
            several (``return_state=True``).

        Raises:
            KeyError: no layer has that name.
            ValueError: the layer is called more than once, so its output is ambiguous.

        Example:
            >>> features = base.layer_output("flatten_0")  # doctest: +SKIP
            >>> model = gm.Model(base.input, gm.layers.Dense(10)(features))  # doctest: +SKIP
        """
        layer = self.get_layer(name)
        calls = [call for call in self._calls if call.layer is layer]
        if len(calls) != 1:
            raise ValueError(
                f"layer {name!r} is called {len(calls)} times; its output is ambiguous"
            )
        return calls[0].outputs if len(calls[0].outputs) > 1 else calls[0].output

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample (no batch dimension).

        Raises:
            ValueError: the model has several inputs (``input_signature.sample_shapes``
                holds each one's).
        """
        return self._only(self._inputs, self._input_signature, "input_shape").sample_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one output sample (no batch dimension).

        Raises:
            ValueError: the model has several outputs (``output_signature.sample_shapes``
                holds each one's).
        """
        return self._only(self._outputs, self._output_signature, "output_shape").sample_shape

    @property
    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Weight name -> shape, in layer order (non-trainable weights included)."""
        return dict(self._weight_shapes)

    @property
    def trainable_weight_names(self) -> list[str]:
        """The weights the optimizer updates, in layer order (not running statistics,
        nor the weights of frozen layers)."""
        frozen = {f"{layer.name}." for layer in self._layers if not layer.trainable}
        if not frozen:
            return list(self._trainable)
        return [name for name in self._trainable if name[: name.index(".") + 1] not in frozen]

    def freeze(self, *patterns: str) -> list[str]:
        """Freezes the layers whose names match any of ``patterns`` (all layers without
        any): their weights stop training (``layer.trainable = False``).

        Args:
            patterns: ``fnmatch`` patterns of layer names, e.g. ``"conv2d_*"``.

        Returns:
            The names of the layers frozen, in layer order.

        Raises:
            ValueError: a pattern matches no layer (the layer names are listed).

        Example:
            >>> model.freeze("conv2d_*")  # doctest: +SKIP
            ['conv2d_0', 'conv2d_1']
        """
        return set_trainable(self._layers, patterns, False)

    def unfreeze(self, *patterns: str) -> list[str]:
        """Makes the layers whose names match any of ``patterns`` (all without any)
        trainable again; see ``freeze``.

        Example:
            >>> model.unfreeze()  # doctest: +SKIP
        """
        return set_trainable(self._layers, patterns, True)

    def bytes_per_sample(self) -> int:
        """Bytes one sample's forward pass holds: every intermediate the layers emit, as the
        engine shapes them, counted once (no buffer reuse, no convolution scratch).

        Files define models that can be huge in few bytes (a padding of 10^5), so loaders
        compare this with a cap before any plan is compiled.

        Returns:
            The sum over the forward graph's nodes of one sample's size (4 bytes per element).

        Example:
            >>> gm.ModelBuilder((4,)).dense(3).build().bytes_per_sample()
            68
        """
        graph = _core.Graph()
        xs = self.declare_inputs(graph)
        self.emit(EmitContext(graph, training=False, variables=self.declare_variables(graph)), xs)
        return graph_bytes_per_sample(graph)

    def count_params(self) -> int:
        """The number of trainable scalar weights (PyTorch's ``parameters()`` count).

        Non-trainable weights such as batch-norm running statistics are not counted, as
        torch leaves its buffers out; ``summary`` lists them separately.
        """
        return sum(layer.count_params() for layer in self._layers)

    def get_weights(self) -> dict[str, np.ndarray]:
        """Returns copies of all weights, in layer order.

        Returns:
            ``{"dense_0.weight": array, "dense_0.bias": array, ...}``; Dense weights use
            PyTorch's ``(out_features, in_features)`` layout. Non-trainable weights (batch
            norm's ``running_mean`` and ``running_var``) are included, in the order of
            PyTorch's ``state_dict``.

        Example:
            >>> model.get_weights()["dense_0.weight"].shape
            (128, 64)
        """
        weights: dict[str, np.ndarray] = {}
        with holding_weights(self._layers):  # all from one moment, never half a step
            for layer in self._layers:
                for local, value in layer.get_weights().items():
                    weights[f"{layer.name}.{local}"] = value
        return weights

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Overwrites some or all weights.

        Args:
            weights: name -> array-like with the weight's exact shape. Names not given
                keep their values.

        Raises:
            ValueError: for an unknown name or a wrong shape (nothing is changed then).

        Example:
            >>> model.set_weights({"dense_0.bias": np.zeros(128)})
        """
        converted = check_weight_values(weights, self._weight_shapes, "this model")
        with holding_weights(self._layers):  # no engine runs on a half-written set
            for layer in self._layers:
                prefix = f"{layer.name}."
                mine = {k[len(prefix) :]: v for k, v in converted.items() if k.startswith(prefix)}
                if mine:
                    layer.weight_store.set(mine)

    def reset_states(self) -> list[str]:
        """Zeroes the carried states of every stateful layer (``gm.layers.LSTM(...,
        stateful=True)``), as Keras's ``model.reset_states()``; ``fit`` does it at the start
        of each epoch of a stateful loader (``gm.text.TokenStreamLoader``).

        Returns:
            The names of the layers reset.

        Example:
            >>> model.reset_states()  # doctest: +SKIP
            ['lstm_0']
        """
        stateful = [layer for layer in self._layers if getattr(layer, "stateful", False)]
        for layer in stateful:
            layer.reset_states()
        return [layer.name for layer in stateful]

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """Runs the inference forward pass (dropout off) and returns the raw outputs.

        Args:
            x: array-like of shape ``(N, *input_shape)``; for several inputs, a list of
                such arrays in the model's input order or a dict keyed by input name,
                all with the same ``N``; or a loader or generator of such batches (or of
                ``(x, y)`` batches, whose targets are ignored).
            batch_size: rows per engine call; ``None`` uses up to 1024.

        Returns:
            A float32 array of shape ``(N, *output_shape)``; for several outputs, a list
            of them, or a dict keyed by output name when the outputs were a dict.

        Raises:
            TypeError, ValueError: a wrong type or shape, a missing or unknown input name,
                or inputs of different lengths (the input is named).

        Example:
            >>> model.predict(np.zeros((5, 64), np.float32)).shape
            (5, 10)
            >>> two.predict({"image": images, "meta": meta})["box"].shape  # doctest: +SKIP
            (5, 4)
        """
        if is_batch_stream(x):
            return predict_stream(
                lambda batch: self.predict(batch, batch_size), x, self._output_signature
            )
        held = self._engine_weights()
        if not self.structured:
            return predict_with_engine(
                held, x, self.input_shape, batch_size, dtype=self._input_signature.dtype(0)
            )
        return predict_structured(
            held, self._input_signature, self._output_signature, x, batch_size
        )

    def __call__(self, x: Any, batch_size: int | None = None) -> Any:
        """``model(x)``: the eager forward pass on arrays, the same as ``predict(x)``.

        Args:
            x: NumPy arrays (or array-likes) as ``predict`` takes them.
            batch_size: rows per engine call, as for ``predict``.

        Returns:
            NumPy outputs, as ``predict`` returns them.

        Raises:
            TypeError: ``x`` holds symbolic tensors (``gm.Input``): a model is not a layer
                and does not join another model's graph; call its layers instead.

        Example:
            >>> model(np.zeros((5, 64), np.float32)).shape
            (5, 10)
        """
        if holds_symbolic(x):
            raise TypeError(
                "a gm.Model runs on arrays (model(x) is model.predict(x)); it cannot be "
                "called on symbolic tensors to join another model's graph: call its layers "
                "on them instead"
            )
        return self.predict(x, batch_size)

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles carry the definition and the weights, never engine memory,
        # so a copy is a new model with its own layers and weights.
        frozen = [layer.name for layer in self._layers if not layer.trainable]
        config = provided.model_to_config(self)
        return (rebuild_model, (config, self.get_weights(), self.backend, frozen))

    @property
    def structured(self) -> bool:
        """Whether inputs or outputs go as lists or dicts (several of them, or a dict)."""
        return self._input_signature.structured or self._output_signature.structured

    def summary(self, print_fn: Callable[[str], Any] | None = None) -> None:
        """Prints a table of layers, output shapes and parameter counts, as Keras does.

        Args:
            print_fn: called with each line instead of ``print`` (e.g. ``lines.append``
                to keep the text, or a logger's method).

        Example:
            >>> model.summary()  # doctest: +SKIP
            >>> lines = []; model.summary(print_fn=lines.append)  # doctest: +SKIP
        """
        if print_fn is not None and not callable(print_fn):
            raise TypeError(
                f"summary's print_fn must be callable (e.g. print or a list's append), "
                f"got {type(print_fn).__name__}"
            )
        emit = print if print_fn is None else print_fn
        for line in summary_lines(self):
            emit(line)

    def __repr__(self) -> str:
        size = f"layers={len(self._layers)}, params={self.count_params():,}"
        if not self.structured:
            return (
                f"Model(input_shape={self.input_shape}, output_shape={self.output_shape}, {size})"
            )
        return (
            f"Model(inputs=[{self._input_signature.describe()}], "
            f"outputs=[{self._output_signature.describe()}], {size})"
        )

    # -- engine ownership ------------------------------------------------------------------
    def declare_inputs(self, graph: _core.Graph) -> list[int]:
        """Declares the model's inputs in ``graph``: ``x`` for one input, else one per
        input named as messages name it (``x['image']``); returns their node ids.

        Example:
            >>> xs = model.declare_inputs(graph)  # doctest: +SKIP
        """
        signature = self._input_signature
        return [
            graph.input(signature.label("x", index), tensor.engine_shape, tensor.dtype)
            for index, tensor in enumerate(self._inputs)
        ]

    def _engine_weights(self) -> EngineWeights:
        if self._held is None:
            graph = _core.Graph()
            xs = self.declare_inputs(graph)
            ctx = EmitContext(graph, training=False, variables=self.declare_variables(graph))
            outputs = self.emit(ctx, xs)
            engine = _core.Engine(graph, seed=self.seed, backend=self.backend)
            engine.define("predict", inputs=xs, outputs=outputs, effects=[], advance_rng=False)
            self._held = EngineWeights(engine, self._layers)
        return self._held

    def attach_engine(self, held: EngineWeights) -> None:
        """Runs ``predict`` on ``held`` from now on, instead of a separate inference engine.

        A ``Trainer`` attaches its engine, which defines ``predict`` for this model, so
        the model predicts with the weights being trained and compiles nothing more.

        Args:
            held: an engine, holding this model's layers, that defines ``predict``.

        Example:
            >>> model.attach_engine(trainer_weights)  # doctest: +SKIP
        """
        self._held = held
