"""ONNX export rules of ``Flatten``, ``Reshape``, ``Permute`` and ``Lambda``.

A ``Lambda`` exports by running its function once more on ``OnnxTensor`` values, which
write ONNX nodes for each operation while a probe engine graph beside them checks the
operation and keeps the shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ... import _core
from ...graph.expressions import BINARY, GraphTensor, TensorExpression, check_kind, number
from ..tensor import BATCH, LayerCall
from . import onnx_rules
from .registry import OnnxGraph


def flatten_dims(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Flatten``: ``Flatten(axis=1)`` when it merges every axis from 1, else ``Reshape``."""
    layer, shape = call.layer, call.inputs[0].engine_shape
    start, end = layer.merged_axes(len(shape))
    if start == 1 and end == len(shape) - 1:
        onnx_rules.flatten(b, call, inputs, out, name)
        return
    # 0 copies the batch from the input; the other sizes are fixed.
    target = [0, *call.output.engine_shape[1:]]
    b.node("Reshape", [inputs[0], b.int_constant(f"{name}/shape", target)], out, name)


def reshape(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Reshape``: ONNX ``Reshape`` to ``(batch, *target)``, the batch copied (0)."""
    target = [0, *call.output.engine_shape[1:]]
    b.node("Reshape", [inputs[0], b.int_constant(f"{name}/shape", target)], out, name)


def permute(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Permute``: ``Transpose`` with the batch axis kept first."""
    b.node("Transpose", inputs, out, name, perm=[0, *call.layer.dims])


_ONNX_UNARY = {
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "abs": "Abs",
    "neg": "Neg",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "erf": "Erf",
}
_ONNX_BINARY = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "maximum": "Max",
    "minimum": "Min",
    "pow": "Pow",
}
_ONNX_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax"}


class OnnxTensor(TensorExpression):
    """A tensor of the ONNX graph being exported, with its engine twin for shapes.

    Args:
        b: the ONNX graph.
        name: the tensor's ONNX name.
        probe: the same tensor in a probe engine graph.
        prefix: the prefix of the names of the nodes it writes.
    """

    def __init__(self, b: OnnxGraph, name: str, probe: GraphTensor, prefix: str):
        self.b, self.name, self.probe, self.prefix = b, name, probe, prefix

    @property
    def shape(self) -> tuple[int, ...]:
        return self.probe.shape

    def _emit(self, op_type: str, inputs: Sequence[str], probe: Any, **attrs: Any) -> OnnxTensor:
        out = self.b.unique(f"{self.prefix}/{op_type.lower()}")
        self.b.node(op_type, inputs, out, out, **attrs)
        return OnnxTensor(self.b, out, probe, self.prefix)

    def unary(self, kind: str) -> OnnxTensor:
        probe = self.probe.unary(kind)
        if kind == "square":
            return self._emit("Mul", [self.name, self.name], probe)
        return self._emit(_ONNX_UNARY[kind], [self.name], probe)

    def binary(self, kind: str, other: Any, reverse: bool = False) -> OnnxTensor:
        check_kind(kind, BINARY, "binary function")
        if isinstance(other, OnnxTensor):
            probe = self.probe.binary(kind, other.probe, reverse)
            operand = other.name
        else:
            value = number(other, "a tensor operation")
            probe = self.probe.binary(kind, value, reverse)
            operand = self.b.constant(f"{self.prefix}/constant", np.float32(value))
        operands = [operand, self.name] if reverse else [self.name, operand]
        return self._emit(_ONNX_BINARY[kind], operands, probe)

    def reduce(self, kind: str, axes: Sequence[int], keepdims: bool) -> OnnxTensor:
        probe = self.probe.reduce(kind, axes, keepdims)
        op_type = _ONNX_REDUCE[kind]
        # ReduceSum takes its axes as an input from opset 13, the others from opset 18.
        axes_as_input = self.b.opset >= (13 if kind == "sum" else 18)
        inputs = [self.name]
        attrs: dict[str, Any] = {"keepdims": int(keepdims)}
        if axes and axes_as_input:
            inputs.append(self.b.int_constant(f"{self.prefix}/axes", list(axes)))
        elif axes:
            attrs["axes"] = list(axes)
        return self._emit(op_type, inputs, probe, **attrs)

    def reshape(self, shape: Sequence[int]) -> OnnxTensor:
        probe = self.probe.reshape(shape)
        target = [0 if d == BATCH and axis == 0 else d for axis, d in enumerate(probe.shape)]
        constant = self.b.int_constant(f"{self.prefix}/shape", target)
        return self._emit("Reshape", [self.name, constant], probe)

    def transpose(self, perm: Sequence[int]) -> OnnxTensor:
        probe = self.probe.transpose(perm)
        return self._emit("Transpose", [self.name], probe, perm=[int(p) for p in perm])

    def softmax(self, axis: int) -> OnnxTensor:
        return self._emit("Softmax", [self.name], self.probe.softmax(axis), axis=int(axis))


def lambda_rule(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Lambda``: the function run on ``OnnxTensor`` values, then an ``Identity`` to ``out``."""
    graph = _core.Graph()
    probe = GraphTensor(graph, graph.input("x", call.inputs[0].engine_shape, "float32"))
    result = call.layer.apply_function(OnnxTensor(b, inputs[0], probe, name))
    if not isinstance(result, OnnxTensor):
        raise TypeError("Lambda function must return a tensor built from its input")
    b.node("Identity", [result.name], out, name)
