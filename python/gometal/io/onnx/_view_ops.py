"""Importer handlers for data held as views (see ``_views``): the layout operators
(``Transpose``, ``Reshape``, ``Unsqueeze``, ``Squeeze``, ``Gather`` of one index), the
products (``MatMul`` of two run-time tensors, ``Gemm`` and ``MatMul`` by a weight),
elementwise operators and ``Softmax``. This is how torch's sequence-first attention
(the batch on axis 1, merged with the heads or the sequence) imports batch-first.

A node takes this path when an input is a view, holds a run-time length besides the
batch, or when the node itself would move the batch (``routes_to_views``); the other
nodes keep the importer's direct handlers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...nn import layers as L
from ...nn.tensor import BATCH, SymbolicTensor
from . import _layers as X
from ._padding_layers import OnnxBroadcast
from ._shape_ops import ShapeOperators, normalized_axes
from ._shape_values import BATCH_SIZE, MAX_SHAPE_ELEMENTS, ShapeValue, SymbolicSize
from ._view_layers import OnnxBatchMatMul, OnnxRelayout, OnnxSliceAxis, OnnxTake
from ._views import (
    Groups,
    View,
    arrangement,
    drop_axes,
    engine_dim,
    group_size,
    identity,
    onnx_dims,
    plan_reshape,
    resolve_target,
)

# Elementwise operators of one data input: they apply to a view's engine tensor as is.
PASSTHROUGH_OPS = frozenset(
    {"Relu", "Sigmoid", "Tanh", "Erf", "LeakyRelu", "Elu", "Gelu", "Clip", "Dropout",
     "Identity", "HardSwish", "Mish", "Sqrt"}
)  # fmt: skip
_LAYOUT_OPS = ("Transpose", "Reshape", "Unsqueeze", "Squeeze")


def _has_run_time_length(shape: tuple[int, ...]) -> bool:
    return any(d < 0 for d in shape[1:])


def _fixed_length_hint(dims: list[Any], target: list[Any]) -> str:
    """A hint for a target that has lost the input's run-time length: torch's TorchScript
    exporter writes the example's length into such reshapes."""
    lengths = {symbol for d in dims if isinstance(d, SymbolicSize) for symbol in d.symbols} - {
        BATCH
    }
    kept = {symbol for d in target if isinstance(d, SymbolicSize) for symbol in d.symbols}
    if not lengths or lengths & kept:
        return ""
    return (
        "; the target fixes the run-time sequence length, as torch's TorchScript exporter "
        "writes it: export with dynamo=True, or with a fixed sequence length"
    )


class ViewOperators(ShapeOperators):
    """The handlers for views (see the module docstring)."""

    # -- routing ----------------------------------------------------------------------------
    def view_handler(self, node: Any, direct: Any) -> Any:
        """The handler for ``node`` on this path (``direct``, the importer's own, where
        the operator reads its input in ONNX order anyway)."""
        kind = node.op_type
        if kind in PASSTHROUGH_OPS:
            if node.input[0] not in self.views:
                return direct
            return lambda owner, n, a: owner.view_passthrough(n, a, direct)
        if kind == "Softmax" and self.opset >= 13:
            return ViewOperators.view_softmax
        handlers = {
            "Transpose": ViewOperators.view_transpose,
            "Reshape": ViewOperators.view_reshape,
            "Unsqueeze": ViewOperators.view_unsqueeze,
            "Squeeze": ViewOperators.view_squeeze,
            "Gather": ViewOperators.view_gather,
            "Slice": ViewOperators.view_slice,
            "MatMul": ViewOperators.view_matmul,
            "Gemm": ViewOperators.view_gemm,
            "Add": ViewOperators.view_binary,
            "Sub": ViewOperators.view_binary,
            "Mul": ViewOperators.view_binary,
            "Div": ViewOperators.view_binary,
            "Concat": ViewOperators.view_concat,
        }
        if kind in handlers and not (kind == "Gather" and self.is_integer_operand(node.input[0])):
            return handlers[kind]
        return direct

    def routes_to_views(self, node: Any, attrs: dict[str, Any]) -> bool:
        """Whether ``node`` is imported by this class's handlers rather than the direct ones."""
        names = [name for name in node.input if name]
        kind = node.op_type
        if not names:
            return False
        if any(name in self.views for name in names):
            return True
        first = self.values.get(names[0])
        if kind == "Reshape" and self.is_integer_operand(names[0]):
            return True
        if kind == "Gather" and len(names) > 1 and names[1] in self.values:
            return True  # an embedding lookup of token ids
        if kind == "Gather" or (kind == "MatMul" and len(names) > 1 and names[1] in self.values):
            return first is not None
        if kind == "MatMul" and first is not None and len(first.engine_shape) >= 3:
            # A sequence times a 2-D weight: one Dense, not a broadcast product per row.
            weight = self.consts.get(names[1]) if len(names) > 1 else None
            return weight is not None and weight.ndim == 2 and weight.dtype.kind == "f"
        if first is None or kind not in _LAYOUT_OPS:
            return False
        if _has_run_time_length(first.engine_shape):
            return True
        if kind == "Transpose" and first.engine_shape[:1] == (BATCH,):
            return [int(p) for p in attrs.get("perm", [1])][:1] != [0]
        if kind == "Reshape" and len(names) > 1 and names[1] in self.shape_values:
            entries = self.shape_values[names[1]].entries
            return any(isinstance(e, SymbolicSize) and e is not BATCH_SIZE for e in entries)
        return False

    def view_of(self, name: str) -> View:
        """Input ``name`` as a view (a plain tensor is its own view)."""
        if name in self.views:
            return View(self.values[name], self.views[name])
        tensor = self.runtime(name)
        return View(tensor, identity(len(tensor.engine_shape)))

    def _relayout(self, x: SymbolicTensor, perm: Any, shape: Any, hint: str) -> SymbolicTensor:
        if (perm is None or list(perm) == sorted(perm)) and (
            shape is None or tuple(shape) == x.engine_shape
        ):
            return x
        return self.call(OnnxRelayout(perm, shape, name=self.name(hint)), x)

    def _checked(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except ValueError as err:
            self.fail(f"{err}{self.size_origins()}")
            raise

    def last_axis_last(self, view: View) -> View:
        """The view with its last ONNX axis as one physical axis, physically last."""
        x, groups = view.tensor, view.groups
        rank = len(x.engine_shape)
        if groups and groups[-1] == (rank - 1,):
            return view
        last = groups[-1]
        others = [axis for axis in range(rank) if axis not in last]
        if x.engine_shape[:1] == (BATCH,) and 0 in last:
            self.fail("the batch would become part of the last axis")
        size = self._checked(engine_dim, group_size(x.engine_shape, last), "the last axis")
        shape = [x.engine_shape[axis] for axis in others] + [size]
        position = {axis: index for index, axis in enumerate(others)}
        new_groups = tuple(tuple(position[a] for a in g) for g in groups[:-1])
        tensor = self._relayout(x, others + list(last), shape, f"{self.node.name}_last_axis")
        return View(tensor, (*new_groups, (len(others),)))

    # -- layout ---------------------------------------------------------------------------
    def view_transpose(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``Transpose``: the groups change order, the data stays."""
        view = self.view_of(node.input[0])
        rank = len(view.groups)
        perm = [int(p) for p in attrs.get("perm", list(range(rank))[::-1])]
        if sorted(perm) != list(range(rank)):
            self.fail(f"perm {perm} is not a permutation of the {rank} axes")
        return View(view.tensor, tuple(view.groups[p] for p in perm))

    def view_reshape(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Reshape`` of a view, or of an integer tensor known at import."""
        value = self.shape_operand(node.input[1], "Reshape shape")
        if value.scalar:
            self.fail(f"shape must be a 1-D integer tensor, got the scalar {value}")
        if self.is_integer_operand(node.input[0]):
            return self._reshape_integers(node.input[0], value)
        view = self.view_of(node.input[0])
        shape = view.tensor.engine_shape
        dims = onnx_dims(shape, view.groups)
        allowzero = bool(attrs.get("allowzero", 0))
        try:
            target = resolve_target(dims, value.entries, allowzero)
            new_shape, groups = plan_reshape(shape, view.groups, target)
        except ValueError as err:
            hint = _fixed_length_hint(dims, list(value.entries))
            self.fail(f"{err}{hint}{self.size_origins()}")
            raise
        tensor = self._relayout(view.tensor, None, new_shape, self.layer_name())
        return View(tensor, groups)

    def _reshape_integers(self, name: str, target: ShapeValue) -> Any:
        data = self.shape_operand(name, "Reshape data")
        if not data.has_batch:
            array = data.to_array()
            wanted = [int(e) for e in target.entries]  # type: ignore[arg-type]
            wanted = [
                array.shape[i] if d == 0 and i < array.ndim else d for i, d in enumerate(wanted)
            ]
            return array.reshape(wanted)
        if len(target.entries) != 1 or target.entries[0] not in (-1, len(data.entries)):
            self.fail(f"a shape tensor {data} can only be reshaped to 1-D, got {target}")
        return ShapeValue(data.entries, scalar=False)

    def view_unsqueeze(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``Unsqueeze`` of data: empty groups (size 1) are inserted."""
        view = self.view_of(node.input[0])
        axes = self._axes(node, attrs, "Unsqueeze axes")
        if axes is None:
            self.fail("axes are required")
        groups = list(view.groups)
        if len(groups) + len(axes) > MAX_SHAPE_ELEMENTS:
            # Views are copied node by node: their rank stays as small as a shape's.
            self.fail(
                f"the result would have rank {len(groups) + len(axes)}, more than "
                f"{MAX_SHAPE_ELEMENTS}"
            )
        for axis in normalized_axes(axes, len(groups) + len(axes), "axes"):
            groups.insert(axis, ())
        return View(view.tensor, tuple(groups))

    def view_squeeze(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``Squeeze`` of data: axes of size 1 leave the groups."""
        view = self.view_of(node.input[0])
        dims = onnx_dims(view.tensor.engine_shape, view.groups)
        axes = self._axes(node, attrs, "Squeeze axes")
        if axes is None:
            dropped = [axis for axis, size in enumerate(dims) if size == 1]
        else:
            dropped = normalized_axes(axes, len(dims), "axes")
        if any(dims[axis] != 1 for axis in dropped):
            self.fail(f"axes {axes} must have size 1 in {dims}")
        return View(view.tensor, drop_axes(view.groups, dropped))

    def view_gather(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``Gather`` of data with one constant index (that part of a fixed axis), or
        of rows of a float table by token ids (an ``Embedding`` with the table, trainable)."""
        if node.input[1] in self.values:
            return self._embedding(node, attrs)
        view = self.view_of(node.input[0])
        x, groups = view.tensor, view.groups
        indices = self.consts.get(node.input[1])
        if indices is None or indices.ndim != 0 or indices.dtype.kind not in "iu":
            shown = "not a constant" if indices is None else f"shape {indices.shape}"
            self.fail(
                "Gather is supported on shape tensors, and on data with one constant scalar "
                f"index; got indices of {shown}"
            )
        index_value = self.shape_operand(node.input[1], "Gather indices")
        if not index_value.scalar or index_value.has_batch:
            self.fail(
                "Gather is supported on shape tensors, and on data with one constant scalar "
                f"index; got indices {index_value}"
            )
        axis = normalized_axes([int(attrs.get("axis", 0))], len(groups), "axis")[0]
        moving = [a for a in groups[axis] if x.engine_shape[a] != 1]
        if len(moving) != 1 or x.engine_shape[moving[0]] < 0:
            dims = onnx_dims(x.engine_shape, groups)
            self.fail(
                "Gather is supported on shape tensors, and on data with one index of a fixed "
                f"axis; got axis {axis} of {dims}"
            )
        physical, size = moving[0], x.engine_shape[moving[0]]
        index = int(index_value.entries[0])  # type: ignore[arg-type]
        if not -size <= index < size:
            self.fail(f"index {index} is out of range for axis {axis} of size {size}")
        tensor = self.call(OnnxTake(physical, index % size, name=self.layer_name()), x)
        shifted = tuple(
            tuple(a - (a > physical) for a in group if a != physical) for group in groups
        )
        return View(tensor, drop_axes(shifted, [axis]))

    def view_slice(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``Slice`` of a view along fixed axes, step 1 (``q, k, v = qkv`` unbinds so)."""
        view = self.view_of(node.input[0])
        starts, ends, axes, steps = self.slice_bounds(node, attrs)
        axes = list(range(len(starts))) if axes is None else axes
        if steps is not None and any(step != 1 for step in steps):
            self.fail(f"a view is sliced with steps of 1 only, got {list(steps)}")
        if not len(starts) == len(ends) == len(axes):
            self.fail(f"starts, ends and axes differ in length: {starts}, {ends}, {axes}")
        tensor, groups = view.tensor, view.groups
        for axis, start, end in zip(normalized_axes(axes, len(groups), "axes"), starts, ends):
            moving = [a for a in groups[axis] if tensor.engine_shape[a] != 1]
            size = tensor.engine_shape[moving[0]] if len(moving) == 1 else -1
            if not moving and min(max(start, 0), 1) == 0 and end >= 1:
                continue  # the whole of an axis of size 1 (a layer's rows of its states)
            if size < 0:
                dims = onnx_dims(tensor.engine_shape, groups)
                self.fail(f"a view is sliced along fixed axes only; axis {axis} of {dims}")
            first, last = (min(max(b + size if b < 0 else b, 0), size) for b in (start, end))
            if first >= last:
                self.fail(f"the slice [{start}, {end}) of axis {axis} (size {size}) is empty")
            layer = OnnxSliceAxis(moving[0], first, last, name=self.layer_name())
            tensor = self.call(layer, tensor)
        return View(tensor, groups)

    def view_concat(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``Concat`` of views (an RNN's final states of several layers): each operand
        in ONNX order but with the batch's axis first, joined along the moved axis."""
        views = [self.view_of(name) for name in node.input if name]
        rank = len(views[0].groups)
        if "axis" not in attrs or any(len(v.groups) != rank for v in views):
            self.fail("Concat of views needs the axis attribute and operands of one rank")
        (axis,) = normalized_axes([int(attrs["axis"])], rank, "axis")
        holding = [i for i, g in enumerate(views[0].groups) if 0 in g]
        batch = holding[0] if holding and views[0].tensor.engine_shape[:1] == (BATCH,) else 0
        if axis == batch and holding:
            self.fail(f"Concat along axis {axis} would join along the dynamic batch")
        order = [batch] + [i for i in range(rank) if i != batch]
        operands = []
        for index, view in enumerate(views):
            groups = tuple(view.groups[i] for i in order)
            perm, shape, _ = self._checked(arrangement, view.tensor.engine_shape, groups, order)
            hint = f"{self.node.name}_operand{index}"
            operands.append(self._relayout(view.tensor, perm, shape, hint))
        joined = self.call(L.Concatenate(order.index(axis), name=self.layer_name()), operands)
        if any(name in self.recurrent_states for name in node.input):
            self.recurrent_states.add(node.output[0])
        return View(joined, tuple((order.index(i),) for i in range(rank)))

    def _embedding(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        ids = self.values[node.input[1]]
        if ids.dtype != "int32" or node.input[1] in self.views:
            self.fail(f"indices {node.input[1]!r} must be token ids (an integer graph input)")
        table = self.float_const(node.input[0], "Gather data (an embedding table)")
        if table.ndim != 2 or int(attrs.get("axis", 0)) != 0:
            self.fail(f"an embedding needs a 2-D table and axis 0, got shape {table.shape}")
        layer = L.Embedding(table.shape[0], table.shape[1], name=self.layer_name())
        return self.call(layer, ids, {"weight": table})

    # -- products ---------------------------------------------------------------------------
    def view_matmul(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``MatMul``: by a 2-D weight over the last axis, or of two run-time tensors
        (their last two axes moved into order, the leading ones broadcast)."""
        if node.input[1] in self.consts:
            weight = self.float_const(node.input[1], "MatMul input B")
            if weight.ndim != 2:
                self.fail(f"a weight of shape {weight.shape} needs the input in ONNX order")
            view = self.last_axis_last(self.view_of(node.input[0]))
            self.weight_products.add(node.output[0])
            layer = L.Dense(weight.shape[1], use_bias=False, name=self.layer_name())
            tensor = self.call(layer, view.tensor, {"weight": np.ascontiguousarray(weight.T)})
            return View(tensor, view.groups)
        a, b = self.view_of(node.input[0]), self.view_of(node.input[1])
        if len(a.groups) < 2 or len(b.groups) < 2:
            self.fail("a MatMul of two run-time tensors needs both of rank >= 2")
        arranged = [self.arranged_operand(a, "A"), self.arranged_operand(b, "B")]
        lead_a = arranged[0].tensor.engine_shape[:-2]
        lead_b = arranged[1].tensor.engine_shape[:-2]
        if len(lead_a) != len(lead_b) or any(
            p != q and 1 not in (p, q) for p, q in zip(lead_a, lead_b)
        ):
            self.fail(f"the leading axes {lead_a} and {lead_b} of A and B do not broadcast")
        out = self.call(
            OnnxBatchMatMul(name=self.layer_name()), [arranged[0].tensor, arranged[1].tensor]
        )
        lead = len(lead_a)
        leading = arranged[0].groups[:-2]
        self.products[node.output[0]] = (arranged[0].tensor, arranged[1].tensor, leading, 1.0)
        return View(out, (*leading, (lead,), (lead + 1,)))

    def arranged_operand(self, view: View, what: str) -> View:
        """A view's engine tensor in ONNX order, its last two axes one axis each (the
        leading ones keep their physical axes)."""
        rank = len(view.groups)
        perm, shape, groups = self._checked(
            arrangement, view.tensor.engine_shape, view.groups, [rank - 2, rank - 1]
        )
        tensor = self._relayout(view.tensor, perm, shape, f"{self.node.name}_{what}")
        return View(tensor, groups)

    def view_gemm(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``Gemm`` of a 2-D view (rows that merge the batch and the sequence)."""
        view = self.view_of(node.input[0])
        if len(view.groups) != 2 or int(attrs.get("transA", 0)):
            self.fail("Gemm of a view needs a 2-D A without transA")
        b = self.float_const(node.input[1], "Gemm input B")
        weight = b if int(attrs.get("transB", 0)) else b.T
        weight = weight * np.float32(attrs.get("alpha", 1.0))
        units = weight.shape[0]
        weights = {"weight": weight}
        c_name = node.input[2] if len(node.input) > 2 else ""
        if c_name:
            c = self.float_const(c_name, "Gemm input C")
            if c.ndim > 1 and c.shape[0] != 1:
                self.fail(f"input C of shape {c.shape} must be a vector for a view")
            beta = np.float32(attrs.get("beta", 1.0))
            weights["bias"] = beta * np.broadcast_to(c.reshape(-1), (units,))
        view = self.last_axis_last(view)
        layer = L.Dense(units, use_bias=bool(c_name), name=self.layer_name())
        return View(self.call(layer, view.tensor, weights), view.groups)

    # -- elementwise ------------------------------------------------------------------------
    def view_passthrough(self, node: Any, attrs: dict[str, Any], handler: Any) -> Any:
        """An elementwise operator of one data input, applied to the view's engine tensor."""
        groups = self.views[node.input[0]]
        self.passthrough = True
        try:
            result = handler(self, node, attrs)
        finally:
            self.passthrough = False
        return View(result, groups) if isinstance(result, SymbolicTensor) else result

    def place_constant(self, value: np.ndarray, view: View) -> np.ndarray:
        """A constant that broadcasts against a view's ONNX shape, laid out as its engine
        tensor (each axis split into its group's axes, then moved)."""
        shape, groups = view.tensor.engine_shape, view.groups
        if value.ndim > len(groups):
            self.fail(f"the constant of shape {value.shape} has more axes than its operand")
        value = value.reshape((1,) * (len(groups) - value.ndim) + value.shape)
        split: list[int] = []
        for axis, group in enumerate(groups):
            sizes = [shape[a] for a in group]
            if value.shape[axis] == 1:
                split.extend([1] * len(group))
            elif min(sizes, default=1) > 0 and math.prod(sizes) == value.shape[axis]:
                split.extend(sizes)
            else:
                dims = onnx_dims(shape, groups)
                self.fail(f"the constant of shape {value.shape} does not broadcast to {dims}")
        order = [a for group in groups for a in group]
        return np.ascontiguousarray(value.reshape(split).transpose(np.argsort(order)))

    def broadcast_to_constant(self, view: View, value: np.ndarray) -> View:
        """The view broadcast along its axes of size 1 that the constant holds larger (a
        key-padding mask (N*H, 1, T) plus a causal mask (1, T, T)); else as it is."""
        shape, groups = list(view.tensor.engine_shape), [list(g) for g in view.groups]
        if value.ndim > len(groups):
            return view
        sizes = (1,) * (len(groups) - value.ndim) + value.shape
        for axis, size in enumerate(sizes):
            # An axis of size 1 may hold no physical axis: it takes a neighbour's of size 1.
            if size > 1 and not groups[axis]:
                after = groups[axis + 1] if axis + 1 < len(groups) else []
                before = groups[axis - 1] if axis else []
                if after and shape[after[0]] == 1:
                    groups[axis].append(after.pop(0))
                elif before and shape[before[-1]] == 1:
                    groups[axis].append(before.pop())
        target = list(shape)
        for group, size in zip(groups, sizes):
            if size > 1 and len(group) == 1 and shape[group[0]] == 1:
                target[group[0]] = size
        if target == shape:
            return view
        layer = OnnxBroadcast(target, name=self.name(f"{self.node.name}_broadcast"))
        return View(self.call(layer, view.tensor), tuple(tuple(g) for g in groups))

    def view_binary(self, node: Any, attrs: dict[str, Any]) -> Any:
        """``Add``/``Sub``/``Mul``/``Div`` with a view: on the engine tensors when both
        operands share the view or one is a constant, else in ONNX order."""
        names = list(node.input[:2])
        runtime = [name for name in names if name not in self.consts]
        if len(runtime) == 1:
            view = self.view_of(runtime[0])
            other = next(name for name in names if name in self.consts)
            constant = self.float_const(other, "a constant operand")
            view = self.broadcast_to_constant(view, constant)
            value = self.place_constant(constant, view)
            if node.op_type == "Add" and self.is_bias(other, runtime[0]):
                const = self.bias_tensor(value, other)
            else:
                const_name = self.name(f"const_{other}")
                const = X.OnnxConstant(value.shape, name=const_name)(self.source)
                self.weights[f"{const_name}.value"] = value
            operands = {runtime[0]: view.tensor, other: const}
            groups: Groups = view.groups
        else:
            a, b = self.view_of(names[0]), self.view_of(names[1])
            same = a.groups == b.groups and a.tensor.engine_shape == b.tensor.engine_shape
            if not same:
                a = View(self.runtime(names[0]), identity(len(a.groups)))
                b = View(self.runtime(names[1]), identity(len(b.groups)))
            operands, groups = {names[0]: a.tensor, names[1]: b.tensor}, a.groups
        inputs = [operands[name] for name in names]
        primitive, name = node.op_type.lower(), self.layer_name()
        if primitive == "add":
            layer: Any = L.Add(name=name)
        elif primitive == "mul":
            layer = L.Multiply(name=name)
        else:
            layer = X.OnnxBinary(primitive, name=name)
        return View(self.call(layer, inputs), groups)

    def view_softmax(self, node: Any, attrs: dict[str, Any]) -> View:
        """ONNX ``Softmax`` (opset 13+) over one axis of a view."""
        view = self.view_of(node.input[0])
        x, groups = view.tensor, view.groups
        axis = normalized_axes([int(attrs.get("axis", -1))], len(groups), "axis")[0]
        moving = [a for a in groups[axis] if x.engine_shape[a] != 1]
        if len(moving) != 1 or moving[0] == 0:
            self.fail(f"softmax over axis {axis} of {onnx_dims(x.engine_shape, groups)}")
        return View(self.call(L.Softmax(moving[0], name=self.layer_name()), x), groups)
