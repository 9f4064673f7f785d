"""ONNX export rules of the layers the importer makes (``_layers``, ``_view_layers``,
``_layer_ops``), so a model imported from ONNX, fine-tuned or not, exports again.

Each layer becomes the standard operators it stands for (``OnnxConstant`` an initializer,
``OnnxRelayout`` a ``Transpose`` and a ``Reshape`` ...). ``OnnxRecurrentStates`` and
``OnnxSequenceEnds``, which only model files saved from earlier imports hold, have none. Tensors inside an imported graph
need not hold the batch first (time-major views), so a reshape's target is written from
the input's own run-time sizes: a symbolic dim found in the input is read with ``Shape``
and ``Gather``, one dim that is not is ``-1``.

Importing this module registers the rules with the layer classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...nn.layers.registry import OnnxGraph, register_layer
from ...nn.tensor import LayerCall
from ._layer_ops import OnnxPRelu
from ._layers import (
    OnnxBinary,
    OnnxClip,
    OnnxConstant,
    OnnxGeluTanh,
    OnnxMatMul,
    OnnxPad2D,
    OnnxPool2D,
    OnnxReduceMean,
    OnnxReshape,
    OnnxSoftmax,
    OnnxTranspose,
    OnnxUnary,
)
from ._padding_layers import OnnxBroadcast, OnnxMaskFill
from ._view_layers import OnnxAttention, OnnxBatchMatMul, OnnxRelayout, OnnxSliceAxis, OnnxTake

INT64 = 7
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"}
_UNARY = {
    "erf": "Erf",
    "identity": "Identity",
    "exp": "Exp",
    "log": "Log",
    "neg": "Neg",
    "abs": "Abs",
    "sqrt": "Sqrt",
}


def _node(b: OnnxGraph, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
    out = b.unique(name)
    b.node(op_type, inputs, out, out, **attrs)
    return out


def shape_operand(
    b: OnnxGraph,
    x: str,
    source: Sequence[int],
    target: Sequence[int],
    name: str,
    expand: bool = False,
) -> str:
    """The int64 shape input of an ONNX ``Reshape`` (or ``Expand``) of ``x`` (engine shape
    ``source``) to the engine shape ``target``, symbols (negative dims) included.

    A symbol at the same position in both is ``0`` (``Reshape`` copies that dim; ``1`` for
    ``Expand``, which keeps it); one found elsewhere in ``source`` is read from
    ``Shape(x)``; at most one other is ``-1`` (none for ``Expand``).

    Args:
        b: the graph being exported.
        x: the ONNX name of the tensor reshaped.
        source: its engine shape.
        target: the engine shape wanted.
        name: a prefix for the new nodes.
        expand: write ``Expand``'s shape instead of ``Reshape``'s.

    Returns:
        The name of the shape tensor.

    Raises:
        NotImplementedError: two target dims are run-time sizes absent from ``source``.

    Example:
        >>> shape_operand(b, "x", (-1, 6), (-1, 2, 3), "r")  # doctest: +SKIP
        'r/shape'
    """
    pieces: list[int | str] = []
    inferred = 0
    for position, dim in enumerate(target):
        if dim >= 0:
            pieces.append(int(dim))
        elif position < len(source) and source[position] == dim:
            pieces.append(1 if expand else 0)
        elif dim in source:
            shape = _node(b, "Shape", [x], f"{name}/shape_of_input")
            index = b.int_constant(f"{name}/dim_index", [list(source).index(dim)])
            pieces.append(_node(b, "Gather", [shape, index], f"{name}/dim", axis=0))
        else:
            inferred += 1
            pieces.append(-1)
    if inferred > int(not expand):
        raise NotImplementedError(
            f"cannot write the reshape {name!r} to {list(target)} in ONNX: {inferred} of its "
            f"run-time sizes are not sizes of its input {list(source)}"
        )
    if all(isinstance(p, int) for p in pieces):
        return b.int_constant(f"{name}/shape", [int(p) for p in pieces])
    parts = [p if isinstance(p, str) else b.int_constant(f"{name}/shape_part", [p]) for p in pieces]
    return _node(b, "Concat", parts, f"{name}/shape", axis=0)


def _reshape(
    b: OnnxGraph, x: str, source: Sequence[int], target: Sequence[int], out: str, name: str
) -> None:
    if list(source) == list(target):
        b.node("Identity", [x], out, name)
        return
    b.node("Reshape", [x, shape_operand(b, x, source, target, name)], out, name)


def mask_fill(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxMaskFill``: ``outside + mask * (inside - outside)``, as the layer computes it."""
    layer: Any = call.layer
    step = b.constant(f"{name}/step", np.float32(layer.inside - layer.outside))
    scaled = _node(b, "Mul", [inputs[0], step], f"{name}/scaled")
    b.node("Add", [scaled, b.constant(f"{name}/outside", np.float32(layer.outside))], out, name)


def broadcast(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxBroadcast``: ``Expand`` to its shape, run-time sizes read from the input."""
    source, target = call.inputs[0].engine_shape, call.output.engine_shape
    shape = shape_operand(b, inputs[0], source, target, name, expand=True)
    b.node("Expand", [inputs[0], shape], out, name)


def _pads(b: OnnxGraph, x: str, sides: Sequence[int], value: float, name: str) -> str:
    """``x`` (N, C, H, W) padded by ``sides`` = (top, left, bottom, right) with ``value``."""
    top, left, bottom, right = (int(p) for p in sides)
    if not any(sides):
        return x
    pads = b.int_constant(f"{name}/pads", [0, 0, top, left, 0, 0, bottom, right])
    fill = b.constant(f"{name}/fill", np.float32(value))
    return _node(b, "Pad", [x, pads, fill], f"{name}/padded", mode="constant")


def pad2d(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxPad2D``: ``Pad`` of the last two axes."""
    layer: Any = call.layer
    b.node("Identity", [_pads(b, inputs[0], layer.pads, layer.value, name)], out, name)


def pool2d(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxPool2D``: explicit padding, an unpadded ``MaxPool`` or ``AveragePool``, and for
    averages the division by the cells ONNX counts (a constant map pooled the same way)."""
    layer: Any = call.layer
    top, left, bottom, right = layer.pads
    full = (top, left, bottom + layer.extra[0], right + layer.extra[1])
    attrs = {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride)}
    if layer.mode == "max":
        lowest = float(np.finfo(np.float32).min)
        b.node("MaxPool", [_pads(b, inputs[0], full, lowest, name)], out, name, **attrs)
        return
    pooled = _node(b, "AveragePool", [_pads(b, inputs[0], full, 0.0, name)], f"{name}/sum", **attrs)
    height, width = call.inputs[0].engine_shape[2:]
    counted = np.pad(
        np.ones((height, width), np.float32),
        ((top, bottom), (left, right)),
        constant_values=1.0 if layer.count_include_pad else 0.0,
    )
    counted = np.pad(counted, ((0, layer.extra[0]), (0, layer.extra[1])))
    cells = b.constant(f"{name}/counted", counted[None, None])
    fraction = _node(b, "AveragePool", [cells], f"{name}/fraction", **attrs)
    b.node("Div", [pooled, fraction], out, name)


def constant(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxConstant``: its value (a weight) as an initializer."""
    b.node("Identity", [b.weight(call.layer, "value")], out, name)


def relayout(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxRelayout``: ``Transpose`` by ``perm``, then ``Reshape`` to ``shape``."""
    layer: Any = call.layer
    x, shape = inputs[0], list(call.inputs[0].engine_shape)
    if layer.perm is not None and layer.perm != sorted(layer.perm):
        x = _node(b, "Transpose", [x], f"{name}/transpose", perm=list(layer.perm))
        shape = [shape[p] for p in layer.perm]
    _reshape(b, x, shape, call.output.engine_shape, out, name)


def take(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxTake``: ``Gather`` of one index, the axis squeezed."""
    layer: Any = call.layer
    index = b.int_constant(f"{name}/index", [layer.index])
    gathered = _node(b, "Gather", [inputs[0], index], f"{name}/gather", axis=layer.axis)
    b.node("Squeeze", [gathered, b.int_constant(f"{name}/axis", [layer.axis])], out, name)


def slice_axis(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxSliceAxis``: ``Slice`` of one axis."""
    layer: Any = call.layer
    bounds = [
        b.int_constant(f"{name}/{what}", [value])
        for what, value in (("start", layer.start), ("end", layer.end), ("axis", layer.axis))
    ]
    b.node("Slice", [inputs[0], *bounds], out, name)


def batch_matmul(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxBatchMatMul``: ``MatMul`` of two run-time tensors."""
    b.node("MatMul", inputs[:2], out, name)


def attention(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxAttention``: ``softmax(q k^T scale + mask) v``; the causal mask hides key
    ``j > i`` from query ``i``, built from the run-time lengths (``Range``)."""
    layer: Any = call.layer
    q, k, v = inputs
    keys_t = _node(b, "Transpose", [k], f"{name}/k_t", perm=[0, 1, 3, 2])
    scores = _node(b, "MatMul", [q, keys_t], f"{name}/scores")
    if layer.scale != 1.0:
        factor = b.constant(f"{name}/scale", np.float32(layer.scale))
        scores = _node(b, "Mul", [scores, factor], f"{name}/scaled")
    if layer.causal:
        hidden = _node(
            b, "Greater", [_positions(b, k, name), _positions(b, q, name, column=True)],
            f"{name}/future",
        )  # fmt: skip
        lowest = b.constant(f"{name}/lowest", np.float32(-np.inf))
        scores = _node(b, "Where", [hidden, lowest, scores], f"{name}/masked")
    weights = _node(b, "Softmax", [scores], f"{name}/weights", axis=-1)
    b.node("MatMul", [weights, v], out, name)


def _positions(b: OnnxGraph, x: str, name: str, column: bool = False) -> str:
    """0 .. T-1 for the length T on axis 2 of ``x`` (N, H, T, D); (T, 1) with ``column``."""
    shape = _node(b, "Shape", [x], f"{name}/shape")
    length = _node(b, "Gather", [shape, b.int_constant(f"{name}/time_axis", [2])], f"{name}/t")
    scalars = [
        _node(b, "Squeeze", [operand], f"{name}/scalar")
        for operand in (
            b.int_constant(f"{name}/zero", [0]),
            length,
            b.int_constant(f"{name}/one", [1]),
        )
    ]
    steps = _node(b, "Range", scalars, f"{name}/steps")
    if not column:
        return steps
    return _node(b, "Unsqueeze", [steps, b.int_constant(f"{name}/last", [1])], f"{name}/column")


def binary(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxBinary``: ``Add``, ``Sub``, ``Mul`` or ``Div`` (NumPy broadcasting, as ONNX)."""
    b.node(_BINARY[call.layer.primitive], inputs[:2], out, name)  # type: ignore[attr-defined]


def unary(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxUnary``: the elementwise operator of the same name."""
    b.node(_UNARY[call.layer.primitive], inputs[:1], out, name)  # type: ignore[attr-defined]


def clip(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxClip``: ``Clip`` with its bounds ("" leaves a side open)."""
    layer: Any = call.layer
    bounds = [
        "" if value is None else b.constant(f"{name}/{what}", np.float32(value))
        for what, value in (("low", layer.low), ("high", layer.high))
    ]
    while bounds and bounds[-1] == "":
        bounds.pop()
    b.node("Clip", [inputs[0], *bounds], out, name)


def gelu_tanh(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxGeluTanh``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` in primitives
    (the ``Gelu`` operator is opset 20's)."""
    x = inputs[0]
    cube = _node(b, "Mul", [_node(b, "Mul", [x, x], f"{name}/square"), x], f"{name}/cube")
    scaled = _node(b, "Mul", [cube, b.constant(f"{name}/c", np.float32(0.044715))], f"{name}/cx")
    inner = _node(b, "Add", [x, scaled], f"{name}/inner")
    root = b.constant(f"{name}/root", np.float32(math.sqrt(2.0 / math.pi)))
    gate = _node(b, "Tanh", [_node(b, "Mul", [inner, root], f"{name}/arg")], f"{name}/tanh")
    one, half = (
        b.constant(f"{name}/one", np.float32(1.0)),
        b.constant(f"{name}/half", np.float32(0.5)),
    )
    halved = _node(b, "Mul", [x, half], f"{name}/half_x")
    b.node("Mul", [halved, _node(b, "Add", [gate, one], f"{name}/gate")], out, name)


def softmax(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxSoftmax``: ``Softmax`` or ``LogSoftmax`` over its one axis."""
    layer: Any = call.layer
    if len(layer.axes) != 1:
        raise NotImplementedError(
            f"layer '{layer.name}' normalizes over axes {layer.axes} jointly; ONNX's Softmax "
            "takes one axis (opset 13 and later)"
        )
    b.node("LogSoftmax" if layer.log else "Softmax", inputs[:1], out, name, axis=layer.axes[0])


def transpose(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxTranspose``: ``Transpose``."""
    b.node("Transpose", inputs[:1], out, name, perm=list(call.layer.perm))  # type: ignore[attr-defined]


def reshape(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxReshape``: ``Reshape`` to its resolved shape."""
    _reshape(b, inputs[0], call.inputs[0].engine_shape, call.output.engine_shape, out, name)


def reduce_mean(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxReduceMean``: ``ReduceMean`` (axes an attribute before opset 18, an input after)."""
    layer: Any = call.layer
    keep = int(layer.keepdims)
    if b.opset >= 18:
        axes = b.int_constant(f"{name}/axes", layer.axes)
        b.node("ReduceMean", [inputs[0], axes], out, name, keepdims=keep)
    else:
        b.node("ReduceMean", inputs[:1], out, name, axes=list(layer.axes), keepdims=keep)


def matmul(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxMatMul``: ``MatMul`` by its weight."""
    b.node("MatMul", [inputs[0], b.weight(call.layer, "weight")], out, name)


def prelu(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``OnnxPRelu``: ``PRelu`` with its slope weight."""
    b.node("PRelu", [inputs[0], b.weight(call.layer, "slope")], out, name)


for _layer_class, _rule in (
    (OnnxConstant, constant),
    (OnnxRelayout, relayout),
    (OnnxTake, take),
    (OnnxSliceAxis, slice_axis),
    (OnnxBatchMatMul, batch_matmul),
    (OnnxAttention, attention),
    (OnnxBinary, binary),
    (OnnxUnary, unary),
    (OnnxClip, clip),
    (OnnxGeluTanh, gelu_tanh),
    (OnnxSoftmax, softmax),
    (OnnxTranspose, transpose),
    (OnnxReshape, reshape),
    (OnnxReduceMean, reduce_mean),
    (OnnxMatMul, matmul),
    (OnnxPRelu, prelu),
    (OnnxMaskFill, mask_fill),
    (OnnxBroadcast, broadcast),
    (OnnxPad2D, pad2d),
    (OnnxPool2D, pool2d),
):
    register_layer(_layer_class, onnx=_rule)
