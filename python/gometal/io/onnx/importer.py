"""``load``: an ONNX file as a trainable ``gm.Model``.

Each ONNX node becomes one gometal layer call: a built-in layer where one matches the
operator exactly (``Conv`` -> ``Conv2D``, ``Gemm`` -> ``Dense``, ``BatchNormalization`` ->
``BatchNorm`` …), otherwise a small layer from ``gometal.onnx._layers``. Initializers
that feed the weight inputs of ``Conv``, ``Gemm``, ``MatMul`` and ``BatchNormalization``
become the layers' weights (trainable; batch-norm statistics non-trainable), so the model
fine-tunes with ``gm.Trainer``; so does a vector initializer added to a ``MatMul`` by a
weight (the bias of ``nn.Linear`` on a sequence), and the table of a ``Gather`` of token
ids (an ``Embedding``). Other constants become non-trainable ``OnnxConstant`` layers.
Integer tensors computed from shapes (``x.view(x.size(0), -1)``, ``batch * heads``) are
evaluated at import (see ``_shape_ops``), as are the small float tensors computed from
them (attention's scale and causal mask, see ``_mask_ops``). Tensors that torch's
exporters hold sequence-first are kept batch-first as views (see ``_views`` and
``_view_ops``). ``RNN``, ``GRU`` and ``LSTM`` nodes become gometal's recurrent layers
(see ``_recurrent_ops``); a graph may have several inputs and outputs (see ``_model_io``).
GELU written out as primitives before opset 20 imports as one GELU (see ``_gelu_chains``).
The file is read defensively (see ``_safety``), and
what one sample needs in memory is counted node by node, from shapes and attributes,
before anything is allocated (see ``_budget``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...nn import layers as L
from ...nn.model import Model
from ...nn.tensor import BATCH, SymbolicTensor
from . import _layers as X
from ._budget import sample_bytes
from ._gelu_chains import fuse_gelu_chains
from ._layer_ops import LayerOperators
from ._mask_ops import MASK_OPS, CausalScores, MaskOperators, Triangle, ZeroFill
from ._model_io import ModelInputsOutputs
from ._node_checks import (
    nan_tensor_warning,
    node_arity_problem,
    non_finite_attribute,
)
from ._padding_ops import PaddingOperators
from ._position_ops import PositionOperators, TableRows
from ._reader import show_shape
from ._recurrent_ops import (
    RECURRENT_HANDLERS,
    RECURRENT_OPS,
    STATE_OPS,
    NodeOutputs,
    RecurrentOperators,
)
from ._resampling_ops import RESAMPLING_HANDLERS, RESAMPLING_OPS, ResamplingOperators
from ._safety import OnnxImportError, check_sample_bytes, read_model_proto, tensor_to_array
from ._shape_ops import ShapeOperators
from ._shape_rules import resolve_reshape
from ._shape_values import BATCH_SIZE, ShapeValue
from ._spatial_ops import SpatialOperators
from ._views import View, identity

__all__ = ["ATTENTION_OPS", "RECURRENT_OPS", "SUPPORTED_OPS", "OnnxImportError", "load"]

SUPPORTED_OPS = frozenset(
    {
        "Conv", "BatchNormalization", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu",
        "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "MaxPool",
        "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose", "Concat",
        "Dropout", "Identity", "Constant", "Clip", "Gelu", "Erf", "ReduceMean", "Shape",
        "Gather", "Slice", "Unsqueeze", "Squeeze", "LayerNormalization", "GroupNormalization",
        "InstanceNormalization", "PRelu", "HardSwish", "Mish",
    }
) | RESAMPLING_OPS  # fmt: skip
# Operators read in the forms exporters write around attention (see ``_mask_ops``): the
# scale and the causal mask computed from shapes, Cast, Sqrt. They are kept apart from
# SUPPORTED_OPS, the set the ONNX node-case harness runs, until it lists their cases.
ATTENTION_OPS = MASK_OPS
# RNN, GRU and LSTM (and the ConstantOfShape torch writes for their zero states) have a
# node-case harness of their own (test_onnx_node_cases_recurrent).
_ALL_OPS = SUPPORTED_OPS | ATTENTION_OPS | RECURRENT_OPS | STATE_OPS


def load(path: str | os.PathLike[str], dynamic_batch: bool | None = None) -> Model:
    """Imports an ONNX model as a trainable ``gm.Model``.

    Dimension 0 of the input is the batch, and it is dynamic even where the file fixes it
    (``torch.onnx.export`` without ``dynamic_axes`` writes the example's batch size into
    the input and into Reshape targets such as ``[2, -1]``): those sizes are read as the
    batch, so the model predicts and trains on any batch size. A graph that truly depends
    on its fixed batch (a mean over the batch, a Reshape that merges it) is refused at
    load with the fixed size and what to do, rather than failing later at predict.

    The input may also have one named run-time size besides the batch (a sequence length,
    ``dynamic_axes={"x": {0: "batch", 1: "seq"}}``), and may hold token ids (int32 or
    int64, read as int32) that index an embedding table. A ``torch.onnx.export``ed
    ``nn.TransformerEncoder`` (either exporter) imports this way, causal mask included.

    Further inputs and several outputs make a model of several inputs and outputs, in
    the graph's order. A further input holds the batch on the axis named as the first
    input's batch, and the model takes it batch-first: torch's initial states ``h_0``
    (layers, N, H) go in as ``h_0.transpose(0, 1)``, and a boolean key-padding mask as
    float32 0 or 1. Final states ``h_n``/``c_n`` come back batch-first the same way.
    ``nn.RNN``/``nn.GRU``/``nn.LSTM`` import as gometal's ``SimpleRNN``/``GRU``/``LSTM``.

    Args:
        path: the ``.onnx`` file; external data must lie in its folder.
        dynamic_batch: ``None`` (default) and ``True`` make dimension 0 a dynamic batch,
            as above. ``False`` keeps the size the file fixes: the model then takes
            batches of exactly that size, and a different one is a clear error at
            predict; a file with a symbolic dimension 0 is refused.

    Returns:
        The model, holding the imported weights.

    Raises:
        OnnxImportError: the one error type of a file that cannot be imported: malformed,
            unsafe or unsupported (unsupported operators are all listed in one error, with
            their node names); a graph that needs more than ``MAX_SAMPLE_BYTES`` per
            sample (the error names the node, the size and the cap); a non-finite float
            attribute; a graph that would move the batch off dimension 0; or a fixed
            batch that the graph cannot take as a dynamic one (the error names the input,
            the size and how to re-export or load the file).

    Warns:
        RuntimeWarning: initializers or ``Constant`` values hold NaN (named, with counts);
            the model loads, and predictions through them are NaN.

    Example:
        >>> model = load("mlp.onnx")  # doctest: +SKIP
        >>> model.predict(np.zeros((4, 784), np.float32)).shape  # doctest: +SKIP
        (4, 10)
    """
    if dynamic_batch is not None and not isinstance(dynamic_batch, bool):
        raise TypeError(f"dynamic_batch must be None, True or False, got {dynamic_batch!r}")
    proto, folder = read_model_proto(path)
    importer = _Importer(proto, folder, dynamic_batch)
    try:
        return importer.build()
    except OnnxImportError as err:
        if importer.export_batch is None:
            raise
        reason = str(err)
    # Only the batch differs between the two imports: if the file imports with its batch
    # fixed, that batch is what the graph depends on; if not, its own error is raised.
    _Importer(proto, folder, False).build()
    raise OnnxImportError(_fixed_batch_message(importer, reason))


def _fixed_batch_message(importer: _Importer, reason: str) -> str:
    assert importer.source is not None and importer.export_batch is not None
    name, size = importer.source.name, importer.export_batch
    declared = (size, *importer.source.engine_shape[1:])
    return (
        f"input {name!r} has a fixed batch size of {size} (declared shape {declared}) and "
        f"the graph cannot take other batch sizes: {reason}. Re-export the model with a "
        f"dynamic batch (torch.onnx.export(..., dynamic_axes={{{name!r}: {{0: 'batch'}}}}), "
        "or dynamic_shapes with torch.export.Dim('batch') on dimension 0 for the dynamo "
        f"exporter), or load it with dynamic_batch=False to keep batches of exactly {size}"
    )


def _attributes(node: Any) -> dict[str, Any]:
    import onnx

    values: dict[str, Any] = {}
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            continue  # tensors are read through _safety by the Constant handler
        values[attribute.name] = onnx.helper.get_attribute_value(attribute)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


class _Importer(
    RecurrentOperators,
    PositionOperators,
    ResamplingOperators,
    PaddingOperators,
    LayerOperators,
    ModelInputsOutputs,
):
    """Walks the ONNX graph once, in its (topological) node order."""

    def __init__(self, proto: Any, folder: Path, dynamic_batch: bool | None):
        super().__init__(proto, folder)
        self.dynamic_batch = dynamic_batch

    # -- entry point -----------------------------------------------------------------------
    def build(self) -> Model:
        fuse_gelu_chains(self.graph, self.folder)
        self._check_operators()
        for tensor in self.graph.initializer:
            self.consts[tensor.name] = tensor_to_array(
                tensor, self.folder, f"initializer {tensor.name!r}"
            )
        nan_tensor_warning(dict(self.consts), "initializer")
        inputs = self.make_inputs()
        self.source = inputs[0]
        for tensor in inputs:
            self.budget.spend(
                f"input {tensor.name!r}", sample_bytes(tensor.engine_shape),
                f"one sample of shape {show_shape(tensor.engine_shape)}",
            )  # fmt: skip
        used = {name for node in self.graph.node for name in node.input}
        used |= {o.name for o in self.graph.output}
        for node in self.graph.node:
            self.node = node
            self._check_node(node, used)
            attrs = _attributes(node)
            try:
                result = self._handler(node, attrs)(self, node, attrs)
            except OnnxImportError:
                raise
            except (ValueError, TypeError) as err:
                self.fail(str(err))
            except (IndexError, KeyError, ArithmeticError) as err:
                # The known ways here are checked before; any other still names the node.
                self.fail(f"cannot be imported ({type(err).__name__}: {err})")
            if isinstance(result, NodeOutputs):
                for name, value in zip(node.output, result.values):
                    if name and value is not None:
                        self._store(name, value)
            else:
                self._store(node.output[0], result)
            self.track_scores(node)
        self.node = None
        return self.finish(inputs)

    def _handler(self, node: Any, attrs: dict[str, Any]) -> Callable[..., Any]:
        deferred = [self.deferred[name] for name in node.input if name in self.deferred]
        if node.op_type == "Add" and any(isinstance(d, TableRows) for d in deferred):
            return PositionOperators.add_rows
        if deferred and node.op_type not in RECURRENT_OPS:
            return self.deferred_handler(node)
        direct = self._HANDLERS[node.op_type]
        return self.view_handler(node, direct) if self.routes_to_views(node, attrs) else direct

    def _check_node(self, node: Any, used: set[str]) -> None:
        problem = node_arity_problem(node, self.opset) or non_finite_attribute(node)
        if problem:
            self.fail(problem)
        for extra in node.output[1:]:
            if extra and extra in used and node.op_type not in RECURRENT_OPS:
                self.fail(f"its extra output {extra!r} is used; only the first is supported")
        for name in node.input:
            known = any(
                name in d for d in (self.values, self.consts, self.shape_values, self.deferred)
            )
            if name and not known:
                self.fail(f"input {name!r} is produced by no earlier node nor initializer")

    def _store(self, name: str, result: Any) -> None:
        if isinstance(result, ShapeValue) and not result.has_batch:
            result = result.to_array()
        if isinstance(result, np.generic):
            result = np.asarray(result)  # NumPy folds rank-0 results into scalars
        if isinstance(result, (Triangle, CausalScores, ZeroFill, TableRows)):
            self.deferred[name] = result
            return
        if isinstance(result, View):
            if result.groups != identity(len(result.tensor.engine_shape)):
                self.views[name] = result.groups
                inherited = [self.view_origins[i] for i in self.node.input if i in self.views]
                self.view_origins[name] = inherited[0] if inherited else self.where()
            result = result.tensor
        if isinstance(result, ShapeValue):
            self.shape_values[name] = result
        elif isinstance(result, np.ndarray):
            self.consts[name] = result
        else:
            shape = result.engine_shape
            if BATCH in shape[1:]:
                # predict and training split and join batches along dimension 0.
                self.fail(
                    f"its output would have shape {show_shape(shape)}, with the dynamic batch "
                    f"on dimension {shape.index(BATCH)}; gometal keeps the batch on dimension 0"
                )
            # A bound per sample keeps hostile graphs (say, a Concat of many copies of
            # a large input) from planning a huge arena later.
            sample = shape[1:] if shape and shape[0] == BATCH else shape
            check_sample_bytes(sample, self.where())
            self.values[name] = result

    # -- checks ----------------------------------------------------------------------------
    def _check_operators(self) -> None:
        bad = [
            (node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}",
             node.name or f"#{index}")
            for index, node in enumerate(self.graph.node)
            if node.domain not in ("", "ai.onnx") or node.op_type not in _ALL_OPS
        ]  # fmt: skip
        if bad:
            types = sorted({t for t, _ in bad})
            listed = ", ".join(f"{t} (node {n!r})" for t, n in bad)
            raise OnnxImportError(
                f"unsupported ONNX operator type(s) {types}: {listed}; supported: "
                f"{sorted(_ALL_OPS)}"
            )
        if self.graph.sparse_initializer:
            raise OnnxImportError("sparse initializers are not supported")

    # -- operators -------------------------------------------------------------------------
    def _constant(self, node: Any, attrs: dict[str, Any]) -> np.ndarray:
        value = self._constant_value(node, attrs)
        nan_tensor_warning({node.output[0]: value}, "Constant")
        return value

    def _constant_value(self, node: Any, attrs: dict[str, Any]) -> np.ndarray:
        for attribute in node.attribute:
            if attribute.name == "value":
                return tensor_to_array(attribute.t, self.folder, f"Constant {node.name!r}")
        if "value_float" in attrs:
            return np.array(attrs["value_float"], np.float32)
        if "value_floats" in attrs:
            return np.array(attrs["value_floats"], np.float32)
        if "value_int" in attrs:
            return np.array(attrs["value_int"], np.int64)
        if "value_ints" in attrs:
            return np.array(attrs["value_ints"], np.int64)
        self.fail(f"only tensor, float(s) and int(s) values are supported, got {sorted(attrs)}")
        raise AssertionError  # unreachable

    def _identity(self, node: Any, attrs: dict[str, Any]) -> Any:
        name = node.input[0]
        if name in self.consts:
            if name in self.parameters:
                self.parameters.add(node.output[0])
            return self.consts[name]
        if name in self.shape_values:
            return self.shape_values[name]
        return self.values[name]

    def _binary(self, node: Any, attrs: dict[str, Any]) -> Any:
        if all(self.is_integer_operand(name) for name in node.input[:2]):
            return self.integer_binary(node)
        folded = self.float_fold(node)
        if folded is not None:
            return folded
        first, second = node.input[0], node.input[1]
        a, b = self._operand(first, second), self._operand(second, first)
        primitive = node.op_type.lower()
        if primitive == "add":
            return self.call(L.Add(name=self.layer_name()), [a, b])
        if primitive == "mul":
            return self.call(L.Multiply(name=self.layer_name()), [a, b])
        return self.call(X.OnnxBinary(primitive, name=self.layer_name()), [a, b])

    def _operand(self, name: str, other: str) -> SymbolicTensor:
        if self.node.op_type == "Add" and self.is_bias(name, other):
            return self.bias_tensor(self.consts[name], name)
        return self.runtime(name)

    def _unary(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        x, name = self.runtime(node.input[0]), self.layer_name()
        kind = node.op_type
        if kind == "Relu":
            layer: Any = L.ReLU(name=name)
        elif kind == "Sigmoid":
            layer = L.Sigmoid(name=name)
        elif kind == "Tanh":
            layer = L.Tanh(name=name)
        elif kind == "Erf":
            layer = X.OnnxUnary("erf", name=name)
        elif kind == "LeakyRelu":
            layer = L.LeakyReLU(float(attrs.get("alpha", 0.01)), name=name)
        elif kind == "Elu":
            layer = L.ELU(float(attrs.get("alpha", 1.0)), name=name)
        else:  # Gelu
            approximate = attrs.get("approximate", "none")
            if approximate not in ("none", "tanh"):
                self.fail(f"approximate must be 'none' or 'tanh', got {approximate!r}")
            layer = L.GELU(name=name) if approximate == "none" else X.OnnxGeluTanh(name=name)
        return self.call(layer, x)

    def _clip(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        if self.opset < 11:
            low, high = attrs.get("min"), attrs.get("max")
        else:
            bounds = []
            for index, what in ((1, "min"), (2, "max")):
                name = node.input[index] if len(node.input) > index else ""
                value = self.const(name, f"Clip {what}") if name else None
                if value is not None and value.size != 1:
                    self.fail(f"Clip {what} must be a scalar, got shape {value.shape}")
                bounds.append(None if value is None else float(value.reshape(())))
            low, high = bounds
        x = self.runtime(node.input[0])
        return self.call(X.OnnxClip(low, high, name=self.layer_name()), x)

    def _softmax(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        x = self.runtime(node.input[0])
        rank = len(x.engine_shape)
        axis = int(attrs.get("axis", -1 if self.opset >= 13 else 1))
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            self.fail(f"axis {attrs.get('axis')} is out of range for rank {rank}")
        axes = [axis] if self.opset >= 13 else list(range(axis, rank))
        if axes[0] == 0 and x.engine_shape[0] == BATCH:
            self.fail("softmax over the dynamic batch axis is not supported")
        log = node.op_type == "LogSoftmax"
        if len(axes) == 1 and axis != 0 and not log:
            return self.call(L.Softmax(axis, name=self.layer_name()), x)
        return self.call(X.OnnxSoftmax(axes, log=log, name=self.layer_name()), x)

    def _batch_norm(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        if not int(attrs.get("spatial", 1)):
            self.fail("spatial=0 (per-element statistics) is not supported")
        if int(attrs.get("training_mode", 0)):
            self.fail("training_mode=1 is not supported; export the model in eval mode")
        x = self.runtime(node.input[0])
        scale, bias, mean, var = (
            self.float_const(node.input[i], what)
            for i, what in ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var"))
        )
        layer = L.BatchNorm(
            float(attrs.get("epsilon", 1e-5)),
            1.0 - float(attrs.get("momentum", 0.9)),
            name=self.layer_name(),
        )
        weights = {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var}
        return self.call(layer, x, weights)

    def _gemm(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        a = self.runtime(node.input[0])
        b = self.float_const(node.input[1], "Gemm input B")
        if len(a.engine_shape) != 2 or b.ndim != 2:
            self.fail(f"Gemm needs 2-D A and B, got {show_shape(a.engine_shape)} and {b.shape}")
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if int(attrs.get("transA", 0)):
            a = self.call(X.OnnxTranspose([1, 0], name=self.name(f"{self.node.name}_transA")), a)
        weight = b if int(attrs.get("transB", 0)) else b.T
        if alpha != 1.0:
            weight = weight * np.float32(alpha)
        units = weight.shape[0]
        c_name = node.input[2] if len(node.input) > 2 else ""
        c = self.float_const(c_name, "Gemm input C") if c_name else None
        vector_c = c is not None and (c.ndim <= 1 or c.shape[0] == 1)
        weights = {"weight": weight}
        if vector_c:
            weights["bias"] = beta * np.broadcast_to(c.reshape(-1), (units,))
        out = self.call(L.Dense(units, use_bias=vector_c, name=self.layer_name()), a, weights)
        if c is not None and not vector_c:
            matrix = X.OnnxConstant(c.shape, name=self.name(f"{self.node.name}_C"))
            bias = self.call(matrix, self.source, {"value": beta * c})
            out = self.call(L.Add(name=self.name(f"{self.node.name}_addC")), [out, bias])
        return out

    def _matmul(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        a = self.runtime(node.input[0])
        b = self.float_const(node.input[1], "MatMul input B")
        self.weight_products.add(node.output[0])
        return self.call(X.OnnxMatMul(b.shape, name=self.layer_name()), a, {"weight": b})

    def _flatten(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        x = self.runtime(node.input[0])
        shape = x.engine_shape
        axis = int(attrs.get("axis", 1))
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis <= len(shape):
            self.fail(f"axis {attrs.get('axis')} is out of range for rank {len(shape)}")
        inner = int(np.prod(shape[axis:], dtype=np.int64)) if axis < len(shape) else 1
        if shape[0] == BATCH:
            if axis != 1:
                self.fail(f"axis {axis} would merge the dynamic batch axis; only axis 1 works")
            return self.call(L.Flatten(name=self.layer_name()), x)
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        return self.reshape_to(x, [outer, inner])

    def _reshape(self, node: Any, attrs: dict[str, Any]) -> Any:
        folded = self.folded_layout(node, attrs)
        if folded is not None:
            return folded
        x = self.runtime(node.input[0])
        if self.opset < 5:
            requested: list[Any] = [int(v) for v in attrs.get("shape", [])]
        else:
            value = self.shape_operand(node.input[1], "Reshape shape")
            if value.scalar:
                self.fail(f"shape must be a 1-D integer tensor, got the scalar {value}")
            requested = list(value.entries)
        batch_first = x.engine_shape[:1] == (BATCH,)
        if batch_first and self.export_batch is not None and requested[:1] == [self.export_batch]:
            # The exporter wrote the example's batch size here; it stands for the batch.
            requested[0] = BATCH_SIZE
        target = resolve_reshape(x.engine_shape, requested, bool(attrs.get("allowzero", 0)))
        return self.reshape_to(x, target)

    def _transpose(self, node: Any, attrs: dict[str, Any]) -> Any:
        folded = self.folded_layout(node, attrs)
        if folded is not None:
            return folded
        x = self.runtime(node.input[0])
        rank = len(x.engine_shape)
        perm = [int(p) for p in attrs.get("perm", list(range(rank))[::-1])]
        if sorted(perm) != list(range(rank)):
            self.fail(f"perm {perm} is not a permutation of the {rank} axes")
        if x.engine_shape[0] == BATCH and perm[0] != 0:
            self.fail(f"perm {perm} moves the dynamic batch axis")
        return self.call(X.OnnxTranspose(perm, name=self.layer_name()), x)

    def _concat(self, node: Any, attrs: dict[str, Any]) -> Any:
        if all(self.is_integer_operand(name) for name in node.input if name):
            return self.integer_concat(node, attrs)
        inputs = [self.runtime(name) for name in node.input if name]
        if len(inputs) == 1:
            return self.call(X.OnnxUnary("identity", name=self.layer_name()), inputs[0])
        if "axis" not in attrs:
            self.fail("the axis attribute is required")
        return self.call(L.Concatenate(int(attrs["axis"]), name=self.layer_name()), inputs)

    def _dropout(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        x = self.runtime(node.input[0])
        ratio = float(attrs.get("ratio", 0.5))
        if len(node.input) > 1 and node.input[1]:
            ratio = float(self.const(node.input[1], "Dropout ratio").reshape(()))
        training = len(node.input) > 2 and node.input[2] and ratio != 0.0
        if training and bool(self.const(node.input[2], "Dropout training_mode").reshape(())):
            self.fail("training_mode=True with ratio > 0 is random; not supported")
        if not 0.0 <= ratio < 1.0:
            self.fail(f"ratio must be in [0, 1), got {ratio}")
        # Identity in predict, as ONNX inference; real dropout while fine-tuning.
        return self.call(L.Dropout(ratio, name=self.layer_name()), x)

    _HANDLERS: ClassVar[dict[str, Callable[..., Any]]] = {
        "Constant": _constant,
        "Identity": _identity,
        "Add": _binary,
        "Sub": _binary,
        "Mul": _binary,
        "Div": _binary,
        "Relu": _unary,
        "Sigmoid": _unary,
        "Tanh": _unary,
        "Erf": _unary,
        "LeakyRelu": _unary,
        "Elu": _unary,
        "Gelu": _unary,
        "Clip": _clip,
        "Softmax": _softmax,
        "LogSoftmax": _softmax,
        "Conv": SpatialOperators.op_conv,
        "BatchNormalization": _batch_norm,
        "Gemm": _gemm,
        "MatMul": _matmul,
        "MaxPool": SpatialOperators.op_pool,
        "AveragePool": SpatialOperators.op_pool,
        "GlobalAveragePool": SpatialOperators.op_global_pool,
        "Flatten": _flatten,
        "Reshape": _reshape,
        "Transpose": _transpose,
        "Concat": _concat,
        "Dropout": _dropout,
        "ReduceMean": ShapeOperators.op_reduce_mean,
        "Shape": ShapeOperators.op_shape,
        "Gather": ShapeOperators.op_gather,
        "Slice": PositionOperators.op_slice_rows,
        "Unsqueeze": ShapeOperators.op_unsqueeze,
        "Squeeze": ShapeOperators.op_squeeze,
        "LayerNormalization": LayerOperators.op_layer_norm,
        "GroupNormalization": LayerOperators.op_group_norm,
        "InstanceNormalization": LayerOperators.op_instance_norm,
        "PRelu": LayerOperators.op_prelu,
        "HardSwish": LayerOperators.op_activation,
        "Mish": LayerOperators.op_activation,
        "Cast": PaddingOperators.op_cast_padding,
        "Sqrt": MaskOperators.op_sqrt,
        "Mod": MaskOperators.op_mod,
        "Expand": PaddingOperators.op_expand_padding,
        "Trilu": MaskOperators.op_trilu,
        "Equal": MaskOperators.op_equal,
        "Where": PaddingOperators.op_where_padding,
        **RESAMPLING_HANDLERS,
        **RECURRENT_HANDLERS,
    }
