"""Export a ``gm.Model`` to an ONNX file that standard runtimes load and run.

Each layer call becomes one or a few standard ONNX operators in inference form: batch
norm normalizes with its running statistics, dropout is an identity. Weights become
initializers named as gometal names them (``dense_0.weight``), in PyTorch's layouts, so
``Gemm`` takes the dense weight with ``transB=1`` and ``Conv`` takes ``(O, C/groups, kh,
kw)`` as it is. The input and output have a symbolic batch dimension named ``batch``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...base.atomic import write_atomically
from ...base.version import __version__
from ...nn import layers as _layers
from ...nn.layers.base import Layer
from ...nn.model import Model
from ...nn.tensor import LayerCall, SymbolicTensor
from ..serialization.model_config import model_to_config

MIN_OPSET = 13
# The newest opset every rule below was checked against; later opsets only widened types.
MAX_OPSET = min(23, onnx.defs.onnx_opset_version())
DEFAULT_OPSET = 17
BATCH_DIM = "batch"
OUTPUT_NAME = "output"
# metadata_props key holding the model's gometal definition (``model_to_config``), so an
# importer can rebuild layer arguments ONNX has no slot for (e.g. a dropout rate).
CONFIG_KEY = "gometal.model_config"


class _GraphBuilder:
    """Collects the nodes, initializers and tensor names of the graph being exported."""

    def __init__(self, weights: dict[str, np.ndarray], opset: int):
        self.weights = weights
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.taken: set[str] = set()

    def unique(self, name: str) -> str:
        """Returns ``name``, or ``name_<k>`` if taken, and records it as taken."""
        candidate, k = name, 1
        while candidate in self.taken:
            candidate = f"{name}_{k}"
            k += 1
        self.taken.add(candidate)
        return candidate

    def node(self, op_type: str, inputs: Sequence[str], output: str, name: str, **attrs: Any):
        """Appends one node with a single output."""
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))

    def weight(self, layer: Layer, local: str) -> str:
        """Returns the initializer name of ``<layer>.<local>``, adding it on first use."""
        full = f"{layer.name}.{local}"
        if full not in self.initializers:
            array = np.ascontiguousarray(self.weights[full], dtype=np.float32)
            self.initializers[full] = numpy_helper.from_array(array, full)
        return full

    def constant(self, name: str, value: np.ndarray) -> str:
        """Adds a ``Constant`` node producing ``value`` (float32); returns its output."""
        output = self.unique(name)
        tensor = numpy_helper.from_array(np.asarray(value, dtype=np.float32), output)
        self.node("Constant", [], output, output, value=tensor)
        return output


# A rule appends the nodes of one layer call: (builder, call, input names, output name,
# node name). The output name is fixed by the caller so calls chain by name.
ExportRule = Callable[[_GraphBuilder, LayerCall, list[str], str, str], None]


def _dense(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    layer = call.layer
    operands = [inputs[0], b.weight(layer, "weight")]
    if layer.use_bias:
        operands.append(b.weight(layer, "bias"))
    # The weight is (out_features, in_features), as nn.Linear: y = x @ W^T + b.
    b.node("Gemm", operands, out, name, transB=1)


def _simple(op_type: str, **attrs_of: Callable[[Layer], Any]) -> ExportRule:
    """A rule for layers that map to one ONNX operator with attributes read off the layer."""

    def rule(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
        attrs = {key: get(call.layer) for key, get in attrs_of.items()}
        b.node(op_type, inputs, out, name, **attrs)

    return rule


def _swish(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    gate = b.unique(f"{name}/sigmoid")
    b.node("Sigmoid", inputs, gate, gate)
    b.node("Mul", [inputs[0], gate], out, name)


def _gelu(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    if b.opset >= 20:
        b.node("Gelu", inputs, out, name, approximate="none")
        return
    # Before opset 20: 0.5 * x * (1 + erf(x / sqrt(2))), the exact form the layer computes.
    x = inputs[0]
    scaled = b.unique(f"{name}/scaled")
    inv_sqrt2 = b.constant(f"{name}/inv_sqrt2", np.float32(1.0 / math.sqrt(2.0)))
    b.node("Mul", [x, inv_sqrt2], scaled, scaled)
    erf = b.unique(f"{name}/erf")
    b.node("Erf", [scaled], erf, erf)
    gate = b.unique(f"{name}/gate")
    b.node("Add", [erf, b.constant(f"{name}/one", np.float32(1.0))], gate, gate)
    half = b.unique(f"{name}/half_x")
    b.node("Mul", [x, b.constant(f"{name}/half", np.float32(0.5))], half, half)
    b.node("Mul", [half, gate], out, name)


def _conv2d(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    layer = call.layer
    operands = [inputs[0], b.weight(layer, "weight")]
    if layer.use_bias:
        operands.append(b.weight(layer, "bias"))
    ph, pw = layer.padding
    b.node(
        "Conv",
        operands,
        out,
        name,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=[ph, pw, ph, pw],
        dilations=list(layer.dilation),
        group=layer.groups,
    )


def _pool(op_type: str, **extra: Any) -> ExportRule:
    def rule(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
        layer = call.layer
        ph, pw = layer.padding
        b.node(
            op_type,
            inputs,
            out,
            name,
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=[ph, pw, ph, pw],
            **extra,
        )

    return rule


def _global_avg_pool2d(
    b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    pooled = b.unique(f"{name}/pooled")
    b.node("GlobalAveragePool", inputs, pooled, pooled)
    # GlobalAveragePool keeps (N, C, 1, 1); the layer returns (N, C).
    b.node("Flatten", [pooled], out, name, axis=1)


def _flatten(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    if call.inputs[0].ndim == 2:
        b.node("Identity", inputs, out, name)
    else:
        b.node("Flatten", inputs, out, name, axis=1)


def _batch_norm(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    layer = call.layer
    channels = call.inputs[0].engine_shape[1]
    if layer.affine:
        scale, shift = b.weight(layer, "weight"), b.weight(layer, "bias")
    else:
        # ONNX requires scale and bias; identity values keep the layer's math.
        scale = b.constant(f"{name}/unit_scale", np.ones(channels, np.float32))
        shift = b.constant(f"{name}/zero_shift", np.zeros(channels, np.float32))
    operands = [
        inputs[0],
        scale,
        shift,
        b.weight(layer, "running_mean"),
        b.weight(layer, "running_var"),
    ]
    # ONNX's momentum weighs the running value, gometal's (as torch's) the batch value.
    b.node(
        "BatchNormalization",
        operands,
        out,
        name,
        epsilon=layer.eps,
        momentum=1.0 - layer.momentum,
    )


def _fold(op_type: str) -> ExportRule:
    """A rule folding two or more inputs with a broadcasting binary operator."""

    def rule(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
        acc = inputs[0]
        for i, other in enumerate(inputs[1:], start=1):
            last = i == len(inputs) - 1
            target = out if last else b.unique(f"{name}/partial_{i}")
            b.node(op_type, [acc, other], target, name if last else target)
            acc = target

    return rule


def _identity(b: _GraphBuilder, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    # Dropout is the identity at inference, as torch exports it in eval mode.
    b.node("Identity", inputs, out, name)


# Exact classes, not isinstance: a subclass may compute something else.
_RULES: dict[type[Layer], ExportRule] = {
    _layers.Dense: _dense,
    _layers.ReLU: _simple("Relu"),
    _layers.LeakyReLU: _simple("LeakyRelu", alpha=lambda layer: layer.negative_slope),
    _layers.ELU: _simple("Elu", alpha=lambda layer: layer.alpha),
    _layers.Sigmoid: _simple("Sigmoid"),
    _layers.Tanh: _simple("Tanh"),
    _layers.Swish: _swish,
    _layers.GELU: _gelu,
    _layers.Softmax: _simple("Softmax", axis=lambda layer: layer.axis),
    _layers.Conv2D: _conv2d,
    _layers.MaxPool2D: _pool("MaxPool"),
    _layers.AvgPool2D: _pool("AveragePool", count_include_pad=1),
    _layers.GlobalAvgPool2D: _global_avg_pool2d,
    _layers.BatchNorm: _batch_norm,
    _layers.Dropout: _identity,
    _layers.Flatten: _flatten,
    _layers.Add: _fold("Add"),
    _layers.Multiply: _fold("Mul"),
    _layers.Concatenate: _simple("Concat", axis=lambda layer: layer.axis),
}


def _check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, got {opset!r} ({type(opset).__name__})")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(
            f"opset must be between {MIN_OPSET} and {MAX_OPSET} (the ONNX operator set "
            f"versions gometal exports), got {opset}"
        )
    return int(opset)


def _check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _check_rules(calls: Sequence[LayerCall]) -> None:
    for call in calls:
        if type(call.layer) not in _RULES:
            supported = ", ".join(sorted(cls.__name__ for cls in _RULES))
            raise NotImplementedError(
                f"layer '{call.layer.name}' of type {type(call.layer).__name__} has no ONNX "
                f"export rule; exportable layer types: {supported}"
            )


def _value_info(name: str, tensor: SymbolicTensor) -> onnx.ValueInfoProto:
    dims: list[int | str] = [BATCH_DIM, *tensor.sample_shape]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def to_onnx_model(model: Model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Builds the ONNX model of ``model`` in memory, with its current weights.

    Args:
        model: the model; when a trainer holds it, the weights come from its engine.
        opset: the ONNX operator set version, from ``MIN_OPSET`` to ``MAX_OPSET``.

    Returns:
        An ``onnx.ModelProto`` with one input (the model input's name, or ``"input"``)
        and one output (``"output"``), both with a symbolic ``batch`` dimension.

    Raises:
        TypeError: ``model`` is not a ``gm.Model`` or ``opset`` is not an int.
        ValueError: ``opset`` is out of range.
        NotImplementedError: a layer type has no export rule (the layer is named).

    Example:
        >>> proto = to_onnx_model(model, opset=17)  # doctest: +SKIP
        >>> onnx.checker.check_model(proto, full_check=True)  # doctest: +SKIP
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a gm.Model, got {type(model).__name__}")
    opset = _check_opset(opset)
    # The model's call graph is internal to gometal; the exporter is its one outside reader.
    (source,), (sink,) = model._inputs, model._outputs
    calls: list[LayerCall] = list(model._calls)
    _check_rules(calls)

    builder = _GraphBuilder(model.get_weights(), opset)
    builder.taken.update(model.weight_shapes)
    input_name = builder.unique(source.name or "input")
    output_name = builder.unique(OUTPUT_NAME)
    names: dict[int, str] = {id(source): input_name}
    value_info: list[onnx.ValueInfoProto] = []
    for call in calls:
        node_name = builder.unique(call.layer.name or call.layer.kind)
        if call.output is sink:
            tensor_name = output_name
        else:
            tensor_name = node_name
            value_info.append(_value_info(tensor_name, call.output))
        names[id(call.output)] = tensor_name
        inputs = [names[id(t)] for t in call.inputs]
        _RULES[type(call.layer)](builder, call, inputs, tensor_name, node_name)
    if sink is source:
        builder.node("Identity", [input_name], output_name, builder.unique("identity"))

    graph = helper.make_graph(
        builder.nodes,
        "gometal",
        [_value_info(input_name, source)],
        [_value_info(output_name, sink)],
        initializer=list(builder.initializers.values()),
        value_info=value_info,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="gometal",
        producer_version=__version__,
        doc_string=f"gometal {model!r}",
    )
    # The oldest IR version that carries this opset, so older runtimes load the file too.
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    helper.set_model_props(proto, {CONFIG_KEY: json.dumps(model_to_config(model))})
    return proto


def export(model: Model, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> None:
    """Writes ``model`` as an ONNX file with a dynamic batch dimension.

    The file is replaced atomically: a reader sees the old file or the complete new one.
    Batch norm layers export their running statistics and dropout is an identity, so
    onnxruntime gives the outputs of ``model.predict``.

    Args:
        model: the model to export (with its current weights, trained or not).
        path: the ``.onnx`` file to create or replace; its folder must exist.
        opset: the ONNX operator set version, from 13 to 23 (default 17).

    Raises:
        TypeError: a wrong type for ``model``, ``path`` or ``opset``.
        ValueError: ``opset`` is out of range.
        NotImplementedError: a layer type has no export rule (the layer is named).
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.

    Example:
        >>> gm.onnx.export(model, "model.onnx", opset=17)  # doctest: +SKIP
        >>> session = onnxruntime.InferenceSession("model.onnx")  # doctest: +SKIP
    """
    target = _check_path(path)
    proto = to_onnx_model(model, opset)
    write_atomically(target, proto.SerializeToString())
