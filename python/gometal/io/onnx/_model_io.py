"""The graph's inputs and outputs as the model's: one or several of each.

The first runtime input's dimension 0 is the batch. A further input (an RNN's initial
states ``(D * layers, N, H)``, an attention's key-padding mask ``(N, T)``) holds the batch
on the axis that carries the first input's batch name (or, in a file that fixes sizes,
the one axis of the batch's size); the model takes it batch-first, that axis moved to the
front (torch's ``h_0.transpose(0, 1)``), and the importer keeps it as a view in ONNX's
order. Outputs with the batch on another axis (final states ``(D * layers, N, H)``) come
back batch-first in the same way where they are a recurrent node's outputs (or a ``Concat``
of them); other outputs must hold the batch on axis 0.
"""

from __future__ import annotations

from typing import Any

from ...nn.model import Model
from ...nn.tensor import BATCH, SymbolicTensor
from . import _layers as X
from ._node_checks import check_declared_output
from ._reader import GraphReader, show_shape
from ._safety import OnnxImportError
from ._shape_rules import input_dtype, input_engine_shape
from ._view_layers import OnnxRelayout
from ._views import arrangement

# Bounds the inputs and outputs a graph may declare (a hostile file may list thousands).
MAX_MODEL_INPUTS = 16
MAX_MODEL_OUTPUTS = 16


def _batch_axis(value: Any, batch_name: str, batch_size: int | None) -> int:
    """The axis of input ``value`` that holds the batch (see the module docstring)."""
    dims = list(value.type.tensor_type.shape.dim)
    named = [i for i, d in enumerate(dims) if batch_name and d.dim_param == batch_name]
    if len(named) == 1:
        return named[0]
    if batch_size is not None:
        sized = [
            i for i, d in enumerate(dims) if d.HasField("dim_value") and d.dim_value == batch_size
        ]
        if len(sized) == 1:
            return sized[0]
    shown = [d.dim_param or d.dim_value for d in dims]
    raise OnnxImportError(
        f"input {value.name!r} of shape {shown}: no single axis holds the batch of the first "
        f"input ({batch_name or batch_size!r}); name the batch axis of every input alike when "
        "exporting (dynamic_axes or dynamic_shapes)"
    )


def _moved_to_front(value: Any, axis: int) -> Any:
    """A copy of ``value`` with dimension ``axis`` first."""
    dims = list(value.type.tensor_type.shape.dim)
    if axis == 0 or axis >= len(dims):
        return value  # nothing to move, or no declared shape to check
    moved = type(value)()
    moved.CopyFrom(value)
    order = [axis] + [i for i in range(len(dims)) if i != axis]
    shape = moved.type.tensor_type.shape
    del shape.dim[:]
    for index in order:
        shape.dim.add().CopyFrom(dims[index])
    return moved


class ModelInputsOutputs(GraphReader):
    """Reads the graph's runtime inputs and builds the model from its outputs."""

    dynamic_batch: bool | None

    def make_inputs(self) -> list[SymbolicTensor]:
        """The model's inputs, in the graph's order; the first is ``source``."""
        stored = {t.name for t in self.graph.initializer}
        runtime = [i for i in self.graph.input if i.name not in stored]
        if not 1 <= len(runtime) <= MAX_MODEL_INPUTS:
            raise OnnxImportError(
                f"the graph must have 1 to {MAX_MODEL_INPUTS} runtime inputs, got "
                f"{len(runtime)}: {[i.name for i in runtime[: MAX_MODEL_INPUTS + 1]]}"
            )
        first = runtime[0]
        shape, fixed = input_engine_shape(first, self.dynamic_batch)
        if shape[0] == BATCH and fixed is not None:
            self.export_batch = fixed
        tensors = [self._input_tensor(first, shape)]
        dims = list(first.type.tensor_type.shape.dim)
        batch_name = dims[0].dim_param if dims and dims[0].HasField("dim_param") else ""
        for value in runtime[1:]:
            if value.name in self.values:
                raise OnnxImportError(f"input {value.name!r} is declared twice")
            axis = _batch_axis(value, batch_name, fixed)
            shape, _ = input_engine_shape(_moved_to_front(value, axis), self.dynamic_batch)
            tensors.append(self._input_tensor(value, shape))
            if axis:
                # ONNX axis `axis` is physical axis 0; the others follow in their order.
                rest = [i for i in range(len(shape)) if i != axis]
                where = {onnx_axis: 1 + k for k, onnx_axis in enumerate(rest)}
                where[axis] = 0
                self.views[value.name] = tuple((where[i],) for i in range(len(shape)))
                self.view_origins[value.name] = f"input {value.name!r}"
        return tensors

    def _input_tensor(self, value: Any, shape: tuple[int, ...]) -> SymbolicTensor:
        tensor = SymbolicTensor(shape, None, value.name, dtype=input_dtype(value))
        self.values[value.name] = tensor
        return tensor

    def batch_first_output(self, name: str) -> tuple[SymbolicTensor, int]:
        """Output ``name`` as an engine tensor in ONNX order, a recurrent node's with the
        batch first; and the ONNX axis that held the batch (moved to the front when not 0)."""
        if name not in self.views or name not in self.recurrent_states:
            return self.runtime(name), 0
        x, groups = self.values[name], self.views[name]
        holding = [i for i, group in enumerate(groups) if 0 in group]
        if not holding or holding[0] == 0 or x.engine_shape[:1] != (BATCH,):
            return self.runtime(name), 0
        axis = holding[0]
        groups = tuple(groups[i] for i in [axis] + [i for i in range(len(groups)) if i != axis])
        try:
            perm, shape, _ = arrangement(x.engine_shape, groups, range(len(groups)))
        except ValueError as err:
            raise OnnxImportError(f"the graph output {name!r}: {err}") from None
        layer = OnnxRelayout(perm, shape, name=self.name(f"{name}_batch_first"))
        return self.call(layer, x), axis

    def finish(self, inputs: list[SymbolicTensor]) -> Model:
        """The model from ``inputs`` to the graph's outputs, with the imported weights."""
        declared_outputs = list(self.graph.output)
        if not 1 <= len(declared_outputs) <= MAX_MODEL_OUTPUTS:
            raise OnnxImportError(
                f"the graph must have 1 to {MAX_MODEL_OUTPUTS} outputs, got {len(declared_outputs)}"
            )
        outputs = [self._output(declared, inputs) for declared in declared_outputs]
        try:
            model = Model(
                inputs if len(inputs) > 1 else inputs[0],
                outputs if len(outputs) > 1 else outputs[0],
            )
            # Layers off every path to the output (attention scores that a fused causal
            # attention replaced) are not part of the model.
            kept = model.weight_shapes
            model.set_weights({k: v for k, v in self.weights.items() if k in kept})
        except ValueError as err:
            raise OnnxImportError(f"the imported graph is not a valid model: {err}") from None
        return model

    def _output(self, declared: Any, inputs: list[SymbolicTensor]) -> SymbolicTensor:
        name, source = declared.name, inputs[0]
        if name in self.shape_values or (
            name in self.consts and self.consts[name].dtype.kind in "iub"
        ):
            raise OnnxImportError(
                f"the graph output {name!r} is an integer tensor computed from shapes "
                "or constants; a gometal model outputs float data computed from its input"
            )
        if name not in self.values and name not in self.consts:
            raise OnnxImportError(f"the graph output {name!r} is produced by no node")
        output, batch_axis = self.batch_first_output(name)
        if source.engine_shape[0] == BATCH and output.engine_shape[:1] != (BATCH,):
            # predict would join the outputs of its chunks, one per 1024 samples.
            raise OnnxImportError(
                f"the graph output {name!r} has shape {show_shape(output.engine_shape)}"
                f", without the dynamic batch of input {source.name!r} on dimension 0; gometal "
                "models give one output row per input sample"
            )
        if any(output is tensor for tensor in inputs):
            output = self.call(X.OnnxUnary("identity", name=self.name("identity")), output)
        check_declared_output(_moved_to_front(declared, batch_axis), output.engine_shape)
        return output
