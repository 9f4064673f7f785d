"""Export a ``gm.Model`` to an ONNX file that standard runtimes load and run.

Each layer call becomes one or a few standard ONNX operators in inference form, written
by the ONNX rule its class was registered with (``gm.layers.register_layer``; the
built-in layers' rules are in ``gometal.nn.layers.onnx_rules``). Weights become
initializers named as gometal names them (``dense_0.weight``). The input and output have
a symbolic batch dimension named ``batch``; a run-time sequence length is the symbolic
dimension ``seq`` (other run-time sizes keep their names), and int32 token ids stay INT32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...base.atomic import write_atomically
from ...base.version import __version__
from ...nn.layers.base import Layer
from ...nn.layers.registry import OnnxRule, entry_of, layer_entries
from ...nn.model import Model
from ...nn.tensor import BATCH, SEQ, LayerCall, SymbolicTensor, show_dim
from ..serialization.model_config import model_to_config
from . import _reexport_rules  # noqa: F401  (the rules of the layers an import makes)

MIN_OPSET = 13
# The newest opset every rule below was checked against; later opsets only widened types.
MAX_OPSET = min(23, onnx.defs.onnx_opset_version())
DEFAULT_OPSET = 17
BATCH_DIM = "batch"
# A run-time sequence length (``gm.Input((None, ...))``); other symbols keep their names.
SEQ_DIM = "seq"
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

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        output: str | Sequence[str],
        name: str,
        **attrs: Any,
    ):
        """Appends one node: one output, or a list of them ("" skips an optional one)."""
        outputs = [output] if isinstance(output, str) else list(output)
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))

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

    def int_constant(self, name: str, values: Sequence[int]) -> str:
        """Adds a ``Constant`` node producing ``values`` as a 1-D int64 tensor (shapes,
        axes, pads); returns its output."""
        output = self.unique(name)
        tensor = numpy_helper.from_array(np.asarray(list(values), dtype=np.int64), output)
        self.node("Constant", [], output, output, value=tensor)
        return output


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


def _export_rules(calls: Sequence[LayerCall]) -> list[OnnxRule]:
    """Each call's rule from the layer registry (exact classes: a subclass may compute
    something else)."""
    rules = []
    for call in calls:
        entry = entry_of(type(call.layer))
        if entry is None or entry.onnx is None:
            exportable = [name for name, e in layer_entries().items() if e.onnx is not None]
            raise NotImplementedError(
                f"layer '{call.layer.name}' of type {type(call.layer).__name__} has no ONNX "
                f"export rule; exportable layer types: {', '.join(sorted(exportable))} (a "
                "layer gets one with gm.layers.register_layer(cls, onnx=rule))"
            )
        rules.append(entry.onnx)
    return rules


def _onnx_dim(dim: int) -> int | str:
    """A sample dim as ONNX writes it: the size, or the run-time symbol's name."""
    shown = show_dim(dim)
    return SEQ_DIM if dim == SEQ else shown  # type: ignore[return-value]


def _value_info(name: str, tensor: SymbolicTensor) -> onnx.ValueInfoProto:
    # Inside an imported graph the batch may sit elsewhere (a time-major view) or be
    # missing (a constant): every dim is written as it is.
    dims: list[int | str] = [BATCH_DIM if d == BATCH else _onnx_dim(d) for d in tensor.engine_shape]
    # Token ids stay int32: Gather takes int32 indices, so no Cast is needed.
    element = TensorProto.INT32 if tensor.dtype == "int32" else TensorProto.FLOAT
    return helper.make_tensor_value_info(name, element, dims)


def to_onnx_model(model: Model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Builds the ONNX model of ``model`` in memory, with its current weights.

    Args:
        model: the model; when a trainer holds it, the weights come from its engine.
        opset: the ONNX operator set version, from ``MIN_OPSET`` to ``MAX_OPSET``.

    Returns:
        An ``onnx.ModelProto`` with one input (the model input's name, or ``"input"``)
        and one output (``"output"``), both with a symbolic ``batch`` dimension; a model
        with several inputs or outputs (or dicts of them) has one graph input and output
        each, under the model's input and output names.

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
    sources, sinks = model.graph.inputs, model.graph.outputs
    calls: list[LayerCall] = list(model.graph.calls)
    rules = _export_rules(calls)

    builder = _GraphBuilder(model.get_weights(), opset)
    builder.taken.update(model.weight_shapes)
    # One input and one output keep the names they always had; several take the model's.
    if model.structured:
        input_names = [builder.unique(name) for name in model.input_names]
        output_names = [builder.unique(name) for name in model.output_names]
    else:
        input_names = [builder.unique(sources[0].name or "input")]
        output_names = [builder.unique(OUTPUT_NAME)]
    names: dict[int, str] = {id(s): name for s, name in zip(sources, input_names)}
    # A model output is named as the output; the others are named after the call.
    named_by_call = {}
    for sink, name in zip(sinks, output_names):
        named_by_call.setdefault(id(sink), name)
    value_info: list[onnx.ValueInfoProto] = []
    for call, rule in zip(calls, rules):
        node_name = builder.unique(call.layer.name or call.layer.kind)
        tensor_names = []
        for tensor in call.outputs:
            tensor_name = named_by_call.get(id(tensor))
            if tensor_name is None:
                index = tensor.output_index
                tensor_name = builder.unique(call.layer.output_name(index)) if index else node_name
                value_info.append(_value_info(tensor_name, tensor))
            names[id(tensor)] = tensor_name
            tensor_names.append(tensor_name)
        inputs = [names[id(t)] for t in call.inputs]
        # A call of several outputs (return_state=True) gets the list of their names.
        rule(
            builder,
            call,
            inputs,
            tensor_names if len(tensor_names) > 1 else tensor_names[0],
            node_name,
        )
    for sink, name in zip(sinks, output_names):
        if names[id(sink)] != name:
            builder.node("Identity", [names[id(sink)]], name, builder.unique("identity"))

    graph = helper.make_graph(
        builder.nodes,
        "gometal",
        [_value_info(name, source) for name, source in zip(input_names, sources)],
        [_value_info(name, sink) for name, sink in zip(output_names, sinks)],
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
    try:
        config = model_to_config(model)
    except ValueError:
        # A layer that cannot be saved (a Lambda of an unregistered function) still
        # exports its computation; only the gometal definition is left out.
        config = None
    if config is not None:
        helper.set_model_props(proto, {CONFIG_KEY: json.dumps(config)})
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
