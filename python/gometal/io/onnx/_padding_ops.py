"""Importer handlers for a key-padding mask given as a second model input (torch's
``src_key_padding_mask``): a boolean ``(N, T)`` input, ``Cast`` to bool, ``Where`` choosing
``-inf`` or 0 by it, and the ``Reshape``/``Expand`` that bring it to the attention scores'
``(N, heads, 1, T)``, where an ``Add`` puts it on the scores.

A boolean input is read as float32 0 or 1 (``True`` pads). ``Where`` of such a boolean and
two scalars (0 may come as zeros of the run-time shape) becomes an ``OnnxMaskFill``; an
infinite value is clamped to +-1e30, which the softmax after it turns into 0 as it does
``-inf``. ``Expand`` of run-time data broadcasts it (``OnnxBroadcast``). Other uses of a
boolean input are errors naming the node.
"""

from __future__ import annotations

import math
from typing import Any

from ...nn.tensor import BATCH
from ._mask_ops import MaskOperators, Triangle, ZeroFill
from ._padding_layers import OnnxBroadcast, OnnxMaskFill
from ._shape_values import SymbolicSize
from ._views import View, engine_dim

# An additive mask value that hides a key as -inf does, without inf - inf = NaN.
_HIDDEN = 1e30


class PaddingOperators(MaskOperators):
    """The handlers for a boolean mask input (see the module docstring)."""

    def boolean_inputs(self) -> set[str]:
        """Names of runtime tensors that hold ONNX booleans (as float 0 or 1)."""
        found = {i.name for i in self.graph.input if i.type.tensor_type.elem_type == 9}
        return found | self.booleans

    def op_cast_padding(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Cast``: a boolean stays itself when cast to bool; else ``op_cast``."""
        name = node.input[0]
        if name in self.boolean_inputs() and int(attrs.get("to", 0)) == 9:
            self.booleans.add(node.output[0])
            if name in self.views:
                return View(self.values[name], self.views[name])
            return self.values[name]
        return MaskOperators.op_cast(self, node, attrs)

    def op_where_padding(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Where`` by a boolean input; else ``op_where``."""
        condition = node.input[0]
        if condition not in self.boolean_inputs():
            return MaskOperators.op_where(self, node, attrs)
        inside, outside = (self._fill_value(name, what) for name, what in (
            (node.input[1], "input X"), (node.input[2], "input Y"),
        ))  # fmt: skip
        layer = OnnxMaskFill(inside, outside, name=self.layer_name())
        if condition in self.views:
            return View(self.call(layer, self.values[condition]), self.views[condition])
        return self.call(layer, self.values[condition])

    def _fill_value(self, name: str, what: str) -> float:
        """A scalar ``Where`` operand: a constant, or zeros of a run-time shape."""
        value = self.deferred.get(name)
        if isinstance(value, ZeroFill):
            return 0.0
        if isinstance(value, Triangle) and not value.triangular and value.inside == value.outside:
            return float(value.inside)
        constant = self.consts.get(name)
        if constant is None or constant.size != 1:
            self.fail(
                f"{what} ({name!r}) must be a constant scalar to choose by the boolean input "
                f"{self.node.input[0]!r}"
            )
        number = float(constant.reshape(()))
        if math.isnan(number):
            self.fail(f"{what} ({name!r}) is NaN")
        return max(-_HIDDEN, min(_HIDDEN, number))

    def op_expand_padding(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Expand`` of run-time data (a mask brought to the scores' shape); else
        ``op_expand``."""
        name = node.input[0]
        if name not in self.values:
            return MaskOperators.op_expand(self, node, attrs)
        x = self.runtime(name)
        shape = self.shape_operand(node.input[1], "Expand shape")
        dims = [
            engine_dim(e, f"Expand shape entry {i}") if isinstance(e, SymbolicSize) else int(e)
            for i, e in enumerate(shape.entries)
        ]
        source = list(x.engine_shape)
        if len(dims) < len(source):
            self.fail(f"cannot expand shape {x.engine_shape} to {shape}")
        source = [1] * (len(dims) - len(source)) + source
        target = []
        for have, want in zip(source, dims):
            if want == 1 or want == have:
                target.append(have)
            elif have == 1:
                target.append(want)
            else:
                self.fail(f"cannot expand shape {x.engine_shape} to {shape}")
        if target[:1] != [BATCH] and x.engine_shape[:1] == (BATCH,):
            self.fail(f"expanding {x.engine_shape} to {shape} would move the batch")
        if target == list(x.engine_shape):
            return x
        return self.call(OnnxBroadcast(target, name=self.layer_name()), x)
