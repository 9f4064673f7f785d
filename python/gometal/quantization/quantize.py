"""``gm.quantize``: static post-training int8 quantization of a float model.

The float model runs on the calibration batches; each ``Dense`` and ``Conv2D`` input's range
gives its affine per-tensor parameters, each weight is quantized symmetric per output
channel, and a new model is traced with ``QuantizedDense`` / ``QuantizedConv2D`` in their
place and copies of every other layer (so training the float model later leaves it alone).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..nn.layers.base import Layer
from ..nn.layers.conv import Conv2D
from ..nn.layers.core import Dense
from ..nn.model import Model
from ..nn.tensor import Input, SymbolicTensor
from .calibration import (
    RangeObserver,
    affine_parameters,
    check_method,
    observers_for,
    symmetric_weights,
)
from .folding import Chain, folded_weights, plan_chains
from .layers import ACTIVATION_DTYPES, QuantizedConv2D, QuantizedDense

# Activations the int8 kernels fuse into their epilogue.
FUSED_ACTIVATIONS = (None, "linear", "relu")


def quantize(
    model: Model,
    calibration_data: Any,
    per_channel: bool = True,
    method: str = "minmax",
    exclude: Sequence[str] = (),
    activation_dtype: str = "uint8",
    percentile: float = 99.99,
    batch_size: int = 256,
) -> Model:
    """Static post-training quantization: a new model whose ``Dense`` and ``Conv2D``
    layers compute in int8 (int32 sums) and whose other layers stay float32.

    A ``BatchNorm`` right after a quantized ``Conv2D`` folds into its weights, and a
    ``ReLU`` right after either moves into the int8 kernel (``folding.plan_chains``): those
    layers are absent from the quantized model. Layers that cannot be quantized (a
    ``Conv2D`` with groups, an activation other than relu) are kept float and named in a
    ``UserWarning``; excluded layers are kept float silently.

    Args:
        model: the float model.
        calibration_data: real inputs: an array of samples (cut into ``batch_size``
            batches) or a list of batches, each what ``model.predict`` takes.
        per_channel: one weight scale per output channel (else one per layer).
        method: how an input's range is chosen: ``"minmax"``, ``"percentile"`` or
            ``"entropy"`` (see ``gometal.quantization.calibration``).
        exclude: ``fnmatch`` patterns of layer names to keep float.
        activation_dtype: the inputs' quantized type, ``"uint8"`` or ``"int8"``.
        percentile: the percentile the ``"percentile"`` method keeps on each side.
        batch_size: rows per calibration batch when ``calibration_data`` is one array.

    Returns:
        The quantized model, every layer frozen; it predicts, evaluates (``gm.Trainer``),
        saves and loads like any model.

    Raises:
        ValueError: no calibration data, NaN or infinite values in it, an unknown method
            or dtype, or no layer left to quantize.

    Example:
        >>> int8_model = gm.quantize(model, x_train[:512], method="percentile")  # doctest: +SKIP
        >>> int8_model.predict(x_test).argmax(axis=1)  # doctest: +SKIP
    """
    if not isinstance(model, Model):
        raise TypeError(f"quantize: model must be a gm.Model, got {type(model).__name__}")
    method = check_method(method, percentile)
    if activation_dtype not in ACTIVATION_DTYPES:
        raise ValueError(
            f"quantize: activation_dtype must be 'uint8' or 'int8', got {activation_dtype!r}"
        )
    batches = calibration_batches(calibration_data, batch_size)
    targets, kept = plan_layers(model, exclude)
    if kept:
        reasons = "; ".join(f"{name}: {why}" for name, why in kept.items())
        warnings.warn(f"quantize: kept float: {reasons}", UserWarning, stacklevel=2)
    if not targets:
        raise ValueError(
            "quantize: the model has no Dense or Conv2D layer left to quantize "
            f"(layers: {[layer.name for layer in model.layers]})"
        )
    observers = calibrate(model, targets, batches, method)
    parameters = {
        name: affine_parameters(*observer.range(method, percentile), activation_dtype)
        for name, observer in observers.items()
    }
    return rebuild_quantized(model, targets, parameters, activation_dtype, per_channel)


def quantize_dynamic(model: Model, per_channel: bool = True, exclude: Sequence[str] = ()) -> Model:
    """Dynamic quantization: a new model whose ``Dense`` layers keep int8 weights and
    quantize each batch of their input to uint8 from its own range when they run (no
    calibration data); every other layer, ``Conv2D`` included, stays float32.

    Args:
        model: the float model.
        per_channel: one weight scale per output feature (else one per layer).
        exclude: ``fnmatch`` patterns of layer names to keep float.

    Returns:
        The quantized model, every layer frozen.

    Raises:
        ValueError: the model has no ``Dense`` layer left to quantize.

    Example:
        >>> int8_model = gm.quantization.quantize_dynamic(model)  # doctest: +SKIP
    """
    if not isinstance(model, Model):
        raise TypeError(f"quantize_dynamic: model must be a gm.Model, got {type(model).__name__}")
    targets, kept = plan_layers(model, exclude)
    kept = {name: why for name, why in kept.items() if isinstance(model.get_layer(name), Dense)}
    if kept:
        reasons = "; ".join(f"{name}: {why}" for name, why in kept.items())
        warnings.warn(f"quantize_dynamic: kept float: {reasons}", UserWarning, stacklevel=2)
    targets = [layer for layer in targets if isinstance(layer, Dense)]
    if not targets:
        raise ValueError(
            "quantize_dynamic: the model has no Dense layer left to quantize "
            f"(layers: {[layer.name for layer in model.layers]})"
        )
    dynamic = {str(layer.name): (None, 0) for layer in targets}
    return rebuild_quantized(model, targets, dynamic, "uint8", per_channel)


def calibration_batches(data: Any, batch_size: int) -> list[Any]:
    """The calibration batches, checked: not empty, every value finite.

    Args:
        data: an array of samples, or a list of batches (arrays, or lists/dicts of arrays
            for a model of several inputs).
        batch_size: rows per batch when ``data`` is one array.

    Returns:
        A list of batches as ``predict`` takes them.

    Raises:
        ValueError: no data, or a NaN or infinite value (its batch and position named).

    Example:
        >>> len(calibration_batches(np.zeros((10, 4), np.float32), 4))
        3
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"quantize: batch_size must be a positive int, got {batch_size!r}")
    if data is None:
        raise ValueError(
            "quantize: calibration_data is None; give real input batches to calibrate on"
        )
    if isinstance(data, (list, tuple)):
        batches = list(data)
    else:
        array = np.asarray(data)
        batches = (
            [array[i : i + batch_size] for i in range(0, len(array), batch_size)]
            if array.ndim
            else []
        )
    if not batches or all(np.size(batch) == 0 for batch in arrays_of_batches(batches)):
        raise ValueError(
            "quantize: calibration_data is empty; give real input batches to calibrate on"
        )
    for index, batch in enumerate(batches):
        for array in arrays_of_batches([batch]):
            values = np.asarray(array, dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"quantize: calibration_data holds {int(bad.sum())} NaN or infinite value(s); "
                    f"the first is {values[where]} in batch {index} at index {where}"
                )
    return batches


def arrays_of_batches(batches: Sequence[Any]) -> list[Any]:
    """Every array in the batches (a batch may be a list or dict of arrays)."""
    arrays = []
    for batch in batches:
        if isinstance(batch, Mapping):
            arrays.extend(batch.values())
        elif isinstance(batch, (list, tuple)):
            arrays.extend(batch)
        else:
            arrays.append(batch)
    return arrays


def quantization_obstacle(layer: Layer) -> str | None:
    """Why ``layer`` (a ``Dense`` or ``Conv2D``) cannot run in int8, or ``None``."""
    activation = layer.get_config().get("activation")
    if activation not in FUSED_ACTIVATIONS:
        return f"activation {activation!r} (the int8 kernels fuse relu only)"
    if isinstance(layer, Conv2D) and layer.groups != 1:
        return f"groups={layer.groups} (the int8 convolution takes groups=1)"
    return None


def plan_layers(model: Model, exclude: Sequence[str]) -> tuple[list[Layer], dict[str, str]]:
    """The layers to quantize, and the weight layers kept float with the reason.

    Raises:
        TypeError: a pattern is not a string.

    Warns:
        UserWarning: a pattern of ``exclude`` matches no layer (the layers are named).
    """
    if isinstance(exclude, str):
        exclude = [exclude]
    names = [str(layer.name) for layer in model.layers]
    for pattern in exclude:
        if not isinstance(pattern, str):
            raise TypeError(f"quantize: exclude patterns must be strings, got {pattern!r}")
        if not fnmatch.filter(names, pattern):
            warnings.warn(
                f"quantize: the exclude pattern {pattern!r} matches no layer; the layers are {names}",
                UserWarning,
                stacklevel=3,
            )
    targets, kept = [], {}
    for layer in model.layers:
        if type(layer) not in (Dense, Conv2D):
            continue
        if any(fnmatch.fnmatchcase(str(layer.name), p) for p in exclude):
            continue
        obstacle = quantization_obstacle(layer)
        if obstacle is None:
            targets.append(layer)
        else:
            kept[str(layer.name)] = obstacle
    return targets, kept


def calibrate(
    model: Model, targets: Sequence[Layer], batches: Sequence[Any], method: str
) -> dict[str, RangeObserver]:
    """Runs the float model over the batches and observes each target layer's inputs (all
    its calls together)."""
    wanted = {id(layer) for layer in targets}
    tensors: list[SymbolicTensor] = []
    owners: list[str] = []
    for call in model.graph.calls:
        if id(call.layer) in wanted and not any(t is call.inputs[0] for t in tensors):
            tensors.append(call.inputs[0])
            owners.append(str(call.layer.name))
    probe = Model(list(model.inputs), tensors, backend=model.backend)
    observers = observers_for([str(layer.name) for layer in targets])
    passes = ("observe",) if method == "minmax" else ("observe", "observe_histogram")
    for step in passes:
        for batch in batches:
            outputs = probe.predict(batch)
            outputs = outputs if isinstance(outputs, list) else [outputs]
            for owner, values in zip(owners, outputs):
                getattr(observers[owner], step)(np.asarray(values))
    return observers


def copy_layer(layer: Layer) -> Layer:
    """A new layer of the same class and config (its weights are set later)."""
    return type(layer).from_config(layer.get_config())


def quantized_layer(
    layer: Layer, scale: float | None, zero_point: int, dtype: str, chain: Chain
) -> Layer:
    """The int8 layer taking the place of ``layer`` and the calls its chain absorbs."""
    common = {
        "input_scale": scale,
        "input_zero_point": zero_point,
        "input_dtype": dtype,
        "use_bias": layer.get_config()["use_bias"] or chain.batch_norm is not None,
        "relu": chain.relu,
        "name": layer.name,
    }
    if isinstance(layer, Dense):
        return QuantizedDense(layer.units, **common)
    return QuantizedConv2D(
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        **common,
    )


def rebuild_quantized(
    model: Model,
    targets: Sequence[Layer],
    parameters: Mapping[str, tuple[float | None, int]],
    dtype: str,
    per_channel: bool,
) -> Model:
    """Traces the quantized model over new inputs and fills its weights; the calls a
    quantized layer absorbs (``folding.plan_chains``) are left out."""
    chains = plan_chains(model, targets)
    absorbed = {id(call) for chain in chains.values() for call in chain.absorbed}
    gone = {id(call.layer) for chain in chains.values() for call in chain.absorbed}
    replacements: dict[int, Layer] = {}
    weights: dict[str, np.ndarray] = {}
    for layer in model.layers:
        name = str(layer.name)
        if id(layer) in gone:
            continue
        values = layer.get_weights()
        chain = chains.get(id(layer))
        if chain is not None:
            replacements[id(layer)] = quantized_layer(layer, *parameters[name], dtype, chain)
            values = folded_weights(layer, chain)
            quantized, scales = symmetric_weights(values["weight"], per_channel)
            values = {**values, "weight": quantized, "weight_scale": scales}
        else:
            replacements[id(layer)] = copy_layer(layer)
        weights.update({f"{name}.{local}": value for local, value in values.items()})
    signature = model.input_signature
    inputs = [Input(tuple(t.shape[1:]), name=t.name, dtype=t.dtype) for t in model.inputs]
    tensors = {id(old): new for old, new in zip(model.inputs, inputs)}
    for call in model.graph.calls:
        if id(call) in absorbed:
            tensors[id(call.output)] = tensors[id(call.inputs[0])]
            continue
        new_inputs = [tensors[id(t)] for t in call.inputs]
        layer = replacements[id(call.layer)]
        produced = layer(
            new_inputs[0] if len(new_inputs) == 1 and layer.num_inputs == 1 else new_inputs
        )
        # A call with several outputs (return_state=True) gives them as a tuple.
        new_outputs = produced if isinstance(produced, tuple) else (produced,)
        tensors.update((id(old), new) for old, new in zip(call.outputs, new_outputs))
    outputs = [tensors[id(t)] for t in model.outputs]
    given_inputs: Any = dict(zip(signature.names, inputs)) if signature.keyed else inputs
    out_signature = model.output_signature
    given_outputs: Any = dict(zip(out_signature.names, outputs)) if out_signature.keyed else outputs
    quantized_model = Model(given_inputs, given_outputs, seed=model.seed, backend=model.backend)
    quantized_model.set_weights(weights)
    # Inference only: the int8 ops have no gradient, so nothing of the model is trained
    # (a Trainer still evaluates it).
    quantized_model.freeze()
    return quantized_model
