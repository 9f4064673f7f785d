"""A model's definition as JSON: its layers, the call graph between them, inputs and seed.

``model_to_config`` lists every layer once (class name and ``get_config()``, which holds
the layer's name) and every layer call in dependency order, each naming the tensors it
consumes: tensor 0 is the model input and the calls' outputs follow in order, one index
each (``i + 1`` is the output of call ``i`` when every call gives one; a call of several,
``return_state=True``, takes as many consecutive indices). A model with several inputs or
outputs (or given them as dicts) writes ``inputs`` and ``outputs`` lists instead of
``input`` and ``output``: tensors ``0 .. k-1`` are its ``k`` inputs, the calls' outputs
following.
``model_from_config`` replays those calls. Layer classes come from the layer registry
(``gm.layers.register_layer``): a name that is not registered is an error, never an import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...nn.layers.base import Layer
from ...nn.layers.registry import entry_of, registered_layers
from ...nn.model import Model
from ...nn.tensor import Input, SymbolicTensor, show_dim
from .container import CheckpointError

# The most memory one sample's forward pass may need in a model read from a file, as the
# ONNX importer's cap (gometal.onnx.MAX_SAMPLE_BYTES).
MAX_SAMPLE_BYTES = 1024**3


def _layer_entry(layer: Layer) -> dict[str, Any]:
    cls = type(layer)
    if entry_of(cls) is None:
        raise TypeError(
            f"layer '{layer.name}' is a {cls.__name__}, which is not registered for saving; "
            "register it with gm.layers.register_layer"
        )
    config = dict(layer.get_config())
    config["name"] = layer.name
    entry: dict[str, Any] = {"class_name": cls.__name__, "config": config}
    if not layer.trainable:
        entry["trainable"] = False  # frozen layers stay frozen, as in a Keras model file
    return entry


def model_to_config(model: Model) -> dict[str, Any]:
    """Describes ``model``'s definition (not its weights) as JSON-serializable data.

    Args:
        model: the model.

    Returns:
        ``{"input", "layers", "calls", "output", "seed"}``; for several inputs or outputs
        ``{"inputs", "keyed_inputs", "layers", "calls", "outputs", "keyed_outputs",
        "seed"}``.

    Raises:
        TypeError: a layer's class is not registered (see ``register_layer``).

    Example:
        >>> model_to_config(model)["layers"][0]["class_name"]  # doctest: +SKIP
        'Dense'
    """
    graph = model.graph
    sources, results = graph.inputs, graph.outputs
    tensor_ids = {id(source): index for index, source in enumerate(sources)}
    calls = []
    for call in graph.calls:
        calls.append({"layer": call.layer.name, "inputs": [tensor_ids[id(t)] for t in call.inputs]})
        for tensor in call.outputs:
            tensor_ids[id(tensor)] = len(tensor_ids)
    config: dict[str, Any] = {}
    if not model.structured:
        (source,), (result,) = sources, results
        config["input"] = {"name": source.name, **_input_entry(source)}
    else:
        config["inputs"] = [
            {"name": name, "input_name": source.name, **_input_entry(source)}
            for name, source in zip(model.input_names, sources)
        ]
        config["keyed_inputs"] = model.input_signature.keyed
    config["layers"] = [_layer_entry(layer) for layer in model.layers]
    config["calls"] = calls
    if not model.structured:
        config["output"] = tensor_ids[id(result)]
    else:
        config["outputs"] = [
            {"name": name, "tensor": tensor_ids[id(result)]}
            for name, result in zip(model.output_names, results)
        ]
        config["keyed_outputs"] = model.output_signature.keyed
    config["seed"] = model.seed
    return config


def _field(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise CheckpointError(f"model definition: {where} has no {key!r} entry")
    value = mapping[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise CheckpointError(f"model definition: {where}.{key} must not be a boolean")
    if not isinstance(value, kind):
        raise CheckpointError(
            f"model definition: {where}.{key} has type {type(value).__name__}, expected "
            f"{kind.__name__ if isinstance(kind, type) else ' or '.join(k.__name__ for k in kind)}"
        )
    return value


def _build_layers(entries: Sequence[Any]) -> dict[str, Layer]:
    built: dict[str, Layer] = {}
    known = registered_layers()
    for index, entry in enumerate(entries):
        where = f"layers[{index}]"
        class_name = _field(entry, "class_name", str, where)
        config = _field(entry, "config", dict, where)
        cls = known.get(class_name)
        if cls is None:
            raise CheckpointError(
                f"model definition: {where} is an unknown layer class {class_name!r}; known "
                f"classes: {', '.join(sorted(known))} (custom layers must be registered "
                "with gm.layers.register_layer before loading)"
            )
        name = config.get("name")
        if not isinstance(name, str) or name in built:
            raise CheckpointError(
                f"model definition: {where} needs a unique string name, got {name!r}"
            )
        try:
            built[name] = cls.from_config(config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"model definition: cannot rebuild layer {name!r} ({class_name}) from {config}: {err}"
            ) from None
        trainable = entry.get("trainable", True)
        if not isinstance(trainable, bool):
            raise CheckpointError(f"model definition: {where}.trainable must be a boolean")
        if not trainable:
            built[name].trainable = False
    return built


def _replay_calls(
    sources: Sequence[SymbolicTensor], layers_by_name: Mapping[str, Layer], calls: Sequence[Any]
) -> list[SymbolicTensor]:
    tensors = list(sources)
    for index, call in enumerate(calls):
        where = f"calls[{index}]"
        name = _field(call, "layer", str, where)
        refs = _field(call, "inputs", list, where)
        if name not in layers_by_name:
            raise CheckpointError(f"model definition: {where} calls an unlisted layer {name!r}")
        if not refs or any(
            isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < len(tensors) for r in refs
        ):
            raise CheckpointError(
                f"model definition: {where}.inputs must be indices of earlier tensors "
                f"(0 to {len(tensors) - 1}), got {refs}"
            )
        layer = layers_by_name[name]
        if layer.num_inputs is not None and len(refs) != layer.num_inputs:
            raise CheckpointError(
                f"model definition: {where} gives {len(refs)} inputs to {name!r}, which takes "
                f"{layer.num_inputs}"
            )
        inputs = [tensors[r] for r in refs]
        try:
            result = layer(inputs[0] if layer.num_inputs == 1 else inputs)
            tensors.extend(result if isinstance(result, tuple) else [result])
        except (TypeError, ValueError, OverflowError, RuntimeError) as err:
            # RuntimeError: the engine refusing a value a custom layer passed it.
            raise CheckpointError(f"model definition: {where} ({name}) fails: {err}") from None
    return tensors


def _input_entry(source: SymbolicTensor) -> dict[str, Any]:
    # A run-time length is written as the user writes it: None for seq, else its name.
    entry: dict[str, Any] = {"shape": [show_dim(d) for d in source.sample_shape]}
    if source.dtype != "float32":
        entry["dtype"] = source.dtype
    return entry


def _read_input(entry: Any, where: str) -> SymbolicTensor:
    shape = _field(entry, "shape", list, where)
    dtype = entry.get("dtype", "float32")
    key = "input_name" if "input_name" in entry else "name"
    input_name = entry.get(key)
    if input_name is not None and not isinstance(input_name, str):
        raise CheckpointError(
            f"model definition: {where}.{key} must be a string, got {input_name!r}"
        )
    try:
        return Input(tuple(shape), name=input_name, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"model definition: bad {where} shape {shape}: {err}") from None


def _read_outputs(config: Mapping[str, Any], tensors: Sequence[SymbolicTensor]) -> Any:
    entries = _field(config, "outputs", list, "model")
    if not entries:
        raise CheckpointError("model definition: outputs is empty")
    outputs = []
    for index, entry in enumerate(entries):
        tensor = _field(entry, "tensor", int, f"outputs[{index}]")
        if not 0 <= tensor < len(tensors):
            raise CheckpointError(
                f"model definition: outputs[{index}].tensor {tensor} is not a tensor index"
            )
        outputs.append(tensors[tensor])
    if not _field(config, "keyed_outputs", bool, "model"):
        return outputs
    names = [_field(e, "name", str, f"outputs[{i}]") for i, e in enumerate(entries)]
    return dict(zip(names, outputs))


def _check_declared_weights(
    layers_by_name: Mapping[str, Layer], weight_shapes: Mapping[str, tuple[int, ...]] | None
) -> None:
    # Before the model allocates its initial weights: a forged definition cannot make it
    # allocate more than the file itself holds.
    if weight_shapes is None:
        return
    for layer in layers_by_name.values():
        for spec in layer.weight_specs:
            full_name = f"{layer.name}.{spec.name}"
            found = weight_shapes.get(full_name)
            if found is None or tuple(found) != tuple(spec.shape):
                shown = "missing from the file" if found is None else f"found {tuple(found)}"
                raise CheckpointError(
                    f"the model definition declares weight {full_name!r} of shape "
                    f"{tuple(spec.shape)}, {shown}"
                )


def model_from_config(
    config: Mapping[str, Any], weight_shapes: Mapping[str, tuple[int, ...]] | None = None
) -> Model:
    """Rebuilds a model from ``model_to_config`` output (with fresh initial weights).

    Args:
        config: the definition.
        weight_shapes: when given, the shapes of the weights that will be loaded: every
            weight the definition declares must be there with its shape, checked before
            any weight is allocated.

    Returns:
        The model, its layers named as saved.

    Raises:
        CheckpointError: the definition is malformed, names an unknown layer class, or
            does not fit ``weight_shapes``.

    Example:
        >>> clone = model_from_config(model_to_config(model))  # doctest: +SKIP
    """
    if not isinstance(config, Mapping):
        raise CheckpointError("model definition: expected a JSON object")
    structured = "inputs" in config
    if structured:
        entries = _field(config, "inputs", list, "model")
        if not entries:
            raise CheckpointError("model definition: inputs is empty")
        sources = [_read_input(entry, f"inputs[{i}]") for i, entry in enumerate(entries)]
    else:
        sources = [_read_input(_field(config, "input", dict, "model"), "input")]
    layers_by_name = _build_layers(_field(config, "layers", list, "model"))
    tensors = _replay_calls(sources, layers_by_name, _field(config, "calls", list, "model"))
    if structured:
        outputs = _read_outputs(config, tensors)
    else:
        output = _field(config, "output", int, "model")
        if not 0 <= output < len(tensors):
            raise CheckpointError(f"model definition: output {output} is not a tensor index")
        outputs = tensors[output]
    uncalled = [name for name, layer in layers_by_name.items() if not layer.built]
    if uncalled:
        raise CheckpointError(f"model definition: layers {uncalled} are never called")
    _check_declared_weights(layers_by_name, weight_shapes)
    seed = _field(config, "seed", int, "model")
    inputs: Any = sources[0]
    if structured:
        inputs = sources
        if _field(config, "keyed_inputs", bool, "model"):
            inputs = {_field(e, "name", str, "input"): s for e, s in zip(entries, sources)}
    try:
        model = Model(inputs, outputs, seed=seed)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"model definition: cannot build the model: {err}") from None
    # A few bytes of definition can describe an enormous model (a padding of 10^5): refuse
    # it here, before any plan allocates for it.
    needed = model.bytes_per_sample()
    if needed > MAX_SAMPLE_BYTES:
        raise CheckpointError(
            f"model definition: one sample's forward pass needs {needed:,} bytes, over the "
            f"{MAX_SAMPLE_BYTES:,} allowed (gometal.serialization.MAX_SAMPLE_BYTES)"
        )
    return model
