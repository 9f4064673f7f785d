"""``Model``: a graph of layer calls from symbolic inputs to outputs.

The weights belong to the layers (``layers/weight_store.py``): a model built on layers that
another model already uses shares their current values, as in Keras. An engine that runs
the layers (a ``Trainer``'s, or the model's own inference engine) holds the values while it
uses them, so ``get_weights``, ``set_weights`` and ``predict`` always see the weights being
trained, by whichever trainer.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _core
from ..base.arrays import as_engine_rows, check_batch_size, check_input_batch, check_seed
from ..base.runtime import resolve_backend
from . import provided
from .layers.base import EmitContext, Layer, check_weight_values
from .layers.weight_store import EngineWeights, holding_weights
from .tensor import ModelGraph, SymbolicTensor

# Default rows per inference call: large enough to amortize the call, small enough that
# the engine's arena stays modest for big arrays.
DEFAULT_INFERENCE_BATCH_SIZE = 1024


def _as_tensor_list(value: Any, name: str) -> list[SymbolicTensor]:
    tensors = [value] if isinstance(value, SymbolicTensor) else list(value)
    if not tensors or not all(isinstance(t, SymbolicTensor) for t in tensors):
        raise TypeError(f"Model {name} must be a symbolic tensor or a non-empty list of them")
    return tensors


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


def _assign_names(layers: Sequence[Layer]) -> None:
    """Explicit names win; the rest get ``<kind>_<index>`` in topological order."""
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


def iter_batches(num_samples: int, batch_size: int) -> Iterator[slice]:
    """Yields row slices covering ``range(num_samples)`` in chunks of ``batch_size``."""
    for start in range(0, num_samples, batch_size):
        yield slice(start, min(start + batch_size, num_samples))


def inference_batch_size(batch_size: int | None) -> int:
    """Rows per inference call: ``batch_size`` checked, or the default for ``None``."""
    return DEFAULT_INFERENCE_BATCH_SIZE if batch_size is None else check_batch_size(batch_size)


def predict_with_engine(
    held: EngineWeights,
    x: Any,
    sample_shape: tuple[int, ...],
    batch_size: int | None,
    function: str = "predict",
) -> np.ndarray:
    """Validates ``x`` and runs a one-input, one-output engine function over it in batches."""
    rows = inference_batch_size(batch_size)
    # The engine rejects NaN and inf itself, naming the input, so no second pass here.
    # Converted a chunk at a time: a broadcast view or a float64 array is never copied whole.
    x = check_input_batch(x, sample_shape, check_finite=False)
    # One weight set for the whole call: a trainer sharing the layers waits until it ends.
    with held.use() as engine:
        chunks = [
            np.asarray(engine.run(function, [as_engine_rows(x[r])])[0])
            for r in iter_batches(len(x), rows)
        ]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)


class Model:
    """A model defined by symbolic inputs and outputs (the functional API).

    Args:
        inputs: the ``gm.Input`` tensor (or a list with one).
        outputs: the output symbolic tensor (or a list with one).
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
    """

    def __init__(self, inputs: Any, outputs: Any, seed: int = 0, backend: str | None = None):
        input_list = _as_tensor_list(inputs, "inputs")
        output_list = _as_tensor_list(outputs, "outputs")
        if len(input_list) != 1 or len(output_list) != 1:
            raise ValueError(
                f"models take exactly one input and one output for now, got {len(input_list)} "
                f"input(s) and {len(output_list)} output(s)"
            )
        self._graph = ModelGraph.trace(input_list, output_list)
        self._inputs, self._outputs = self._graph.inputs, self._graph.outputs
        self._calls = self._graph.calls
        self._check_inputs_are_sources()
        self._check_reachable_inputs()
        self._layers = list(self._graph.layers)
        _assign_names(self._layers)
        self._check_state_layers_called_once()
        self.seed = check_seed(seed)
        self.backend = resolve_backend(backend)
        self._weight_shapes: dict[str, tuple[int, ...]] = {}
        self._trainable: list[str] = []
        self._initialize_weights()
        # The engine predict runs on (a trainer's, or a lazily built inference one).
        self._held: EngineWeights | None = None

    # -- construction helpers --------------------------------------------------------------
    def _check_inputs_are_sources(self) -> None:
        for tensor in self._inputs:
            if tensor.producer is not None:
                raise ValueError(
                    f"model inputs must come from gm.Input, got the output of {tensor!r}"
                )
        if len({id(t) for t in self._inputs}) != len(self._inputs):
            raise ValueError("the same Input appears twice in the model inputs")

    def _check_reachable_inputs(self) -> None:
        known = {id(t) for t in self._inputs}
        sources = [t for t in self._outputs if t.producer is None]
        sources += [t for call in self._calls for t in call.inputs if t.producer is None]
        for tensor in sources:
            if id(tensor) not in known:
                raise ValueError(
                    f"the outputs depend on {tensor!r}, which is not among the model inputs"
                )

    def _check_state_layers_called_once(self) -> None:
        calls: dict[int, int] = defaultdict(int)
        for call in self._calls:
            calls[id(call.layer)] += 1
        for layer in self._layers:
            if layer.updates_state and calls[id(layer)] > 1:
                raise ValueError(
                    f"layer '{layer.name}' ({type(layer).__name__}) is called "
                    f"{calls[id(layer)]} times in this model, but it updates its own state "
                    "(running statistics) in training and can be called only once; use one "
                    "layer per call"
                )

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
            values[id(call.output)] = call.layer.emit(ctx, [values[id(t)] for t in call.inputs])
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
    def input(self) -> SymbolicTensor:
        """The model's input tensor, to build a new model on this one's layers."""
        return self._inputs[0]

    @property
    def output(self) -> SymbolicTensor:
        """The model's output tensor."""
        return self._outputs[0]

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

    def layer_output(self, name: str) -> SymbolicTensor:
        """The output tensor of the layer called ``name``, e.g. to put a new head on a model.

        A new ``gm.Model(model.input, new_head(model.layer_output(...)))`` shares the
        layers and their current (trained) weights; training either model updates both.

        Args:
            name: the name of a layer called once in this model.

        Returns:
            The symbolic output of that call.

        Raises:
            KeyError: no layer has that name.
            ValueError: the layer is called more than once, so its output is ambiguous.

        Example:
            >>> features = base.layer_output("flatten_0")  # doctest: +SKIP
            >>> model = gm.Model(base.input, gm.layers.Dense(10)(features))  # doctest: +SKIP
        """
        layer = self.get_layer(name)
        outputs = [call.output for call in self._calls if call.layer is layer]
        if len(outputs) != 1:
            raise ValueError(
                f"layer {name!r} is called {len(outputs)} times; its output is ambiguous"
            )
        return outputs[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample (no batch dimension)."""
        return self._inputs[0].sample_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one output sample (no batch dimension)."""
        return self._outputs[0].sample_shape

    @property
    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Weight name -> shape, in layer order (non-trainable weights included)."""
        return dict(self._weight_shapes)

    @property
    def trainable_weight_names(self) -> list[str]:
        """The weights the optimizer updates, in layer order (not running statistics)."""
        return list(self._trainable)

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
        x = graph.input("x", self._inputs[0].engine_shape, "float32")
        self.emit(EmitContext(graph, training=False, variables=self.declare_variables(graph)), [x])
        total = 0
        for node in range(len(graph)):
            total += 4 * math.prod(1 if d == -1 else int(d) for d in graph.shape(node))
        return total

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

    def predict(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Runs the inference forward pass (dropout off) and returns the raw outputs.

        Args:
            x: array-like of shape ``(N, *input_shape)``.
            batch_size: rows per engine call; ``None`` uses up to 1024.

        Returns:
            A float32 array of shape ``(N, *output_shape)``.

        Example:
            >>> model.predict(np.zeros((5, 64), np.float32)).shape
            (5, 10)
        """
        return predict_with_engine(self._engine_weights(), x, self.input_shape, batch_size)

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
        for line in self._summary_lines():
            emit(line)

    def _summary_lines(self) -> list[str]:
        rows = [(f"{self._inputs[0].name or 'input'} (Input)", self._inputs[0].engine_shape, 0)]
        first_output: dict[int, tuple[int, ...]] = {}
        for call in self._calls:
            first_output.setdefault(id(call.layer), call.output.engine_shape)
        for layer in self._layers:
            label = f"{layer.name} ({type(layer).__name__})"
            rows.append((label, first_output[id(layer)], layer.count_params()))
        cells = [(label, _format_batch_shape(shape), f"{count:,}") for label, shape, count in rows]
        headers = ("Layer (type)", "Output shape", "Params")
        widths = [max(len(headers[i]), *(len(c[i]) for c in cells)) for i in range(3)]
        line = "=" * (sum(widths) + 4)

        def fmt(cols: Sequence[str]) -> str:
            return f"{cols[0]:<{widths[0]}}  {cols[1]:<{widths[1]}}  {cols[2]:>{widths[2]}}"

        trainable = self.count_params()
        total = sum(int(np.prod(shape)) for shape in self._weight_shapes.values())
        lines = [fmt(headers), line, *(fmt(c) for c in cells), line]
        # Non-trainable values are whatever the optimizer leaves alone: batch-norm running
        # statistics, an imported model's constants.
        lines.append(f"Total params: {total:,} ({total * 4 / 1024:,.1f} KiB as float32)")
        lines.append(f"Trainable params: {trainable:,}")
        lines.append(f"Non-trainable params: {total - trainable:,}")
        return lines

    def save(self, path: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """Atomically writes the model's definition and weights (one safetensors file).

        Args:
            path: the file to create or replace, e.g. ``"model.safetensors"``.
            metadata: optional JSON-serializable dict stored with the model.

        Example:
            >>> model.save("mlp.safetensors")  # doctest: +SKIP
            >>> clone = gm.load_model("mlp.safetensors")  # doctest: +SKIP
        """
        provided.save_model(self, path, metadata)

    def load_weights(self, path: Any, *, allow_non_finite: bool = False) -> None:
        """Loads the weights of a model file or checkpoint with the same weight names.

        Args:
            path: a file written by ``model.save`` or ``trainer.save``.
            allow_non_finite: load weights holding NaN or infinities instead of refusing
                them.

        Raises:
            gm.serialization.CheckpointError: an invalid file, or weights that do not fit
                this model (every missing, unexpected or misshapen tensor is named).

        Example:
            >>> model.load_weights("mlp.safetensors")  # doctest: +SKIP
        """
        provided.load_weights(self, path, allow_non_finite=allow_non_finite)

    def export_onnx(self, path: Any, opset: int = 17) -> None:
        """Writes the model as an ONNX file with a dynamic batch dimension (atomically).

        Batch norm exports its running statistics and dropout is an identity, so a
        standard runtime (onnxruntime) gives the outputs of ``predict``.

        Args:
            path: the ``.onnx`` file to create or replace; its folder must exist.
            opset: the ONNX operator set version, 13 to 23.

        Raises:
            ValueError: ``opset`` is out of range.
            NotImplementedError: a layer type has no ONNX export rule (the layer is named).

        Example:
            >>> model.export_onnx("model.onnx")  # doctest: +SKIP
        """
        provided.export_onnx(self, path, opset)

    def __repr__(self) -> str:
        return (
            f"Model(input_shape={self.input_shape}, output_shape={self.output_shape}, "
            f"layers={len(self._layers)}, params={self.count_params():,})"
        )

    # -- engine ownership ------------------------------------------------------------------
    def _engine_weights(self) -> EngineWeights:
        if self._held is None:
            graph = _core.Graph()
            x = graph.input("x", self._inputs[0].engine_shape, "float32")
            ctx = EmitContext(graph, training=False, variables=self.declare_variables(graph))
            (output,) = self.emit(ctx, [x])
            engine = _core.Engine(graph, seed=self.seed, backend=self.backend)
            engine.define("predict", inputs=[x], outputs=[output], effects=[], advance_rng=False)
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


def _format_batch_shape(shape: Sequence[int]) -> str:
    dims = ["batch" if d == -1 else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
