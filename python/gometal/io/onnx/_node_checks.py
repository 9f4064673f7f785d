"""Checks of one ONNX node before its handler runs, and of the float data a file holds.

A node must have the inputs and outputs its operator's schema requires (ONNX's own
schemas, at the file's opset), and float attributes must be finite numbers. Float
tensors (initializers, ``Constant`` values) may hold NaN, as trained weights sometimes
do; the import goes on but warns, naming the tensors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._reader import show_shape
from ._safety import OnnxImportError

# Clip bounds may be infinite: that leaves the side open, as no bound does.
_INFINITE_ALLOWED = {("Clip", "min"), ("Clip", "max")}
# Constant values are data, checked as tensors are (see nan_tensor_warning).
_DATA_ATTRIBUTES = {("Constant", "value_float"), ("Constant", "value_floats")}


def _schema(op_type: str, opset: int) -> Any:
    import onnx

    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except (onnx.defs.SchemaError, TypeError, OverflowError):
        # An opset before the operator existed (or a nonsense one): its newest form.
        return onnx.defs.get_schema(op_type, "")


def node_arity_problem(node: Any, opset: int) -> str | None:
    """What is wrong with the number of inputs and outputs of ``node``, or ``None``.

    Args:
        node: the ``onnx.NodeProto`` of a supported operator.
        opset: the file's default-domain opset.

    Returns:
        A message part such as ``"needs at least 2 inputs (its schema's minimum), got
        1: ['x']"``, or ``None`` when the counts fit the schema.

    Example:
        >>> node_arity_problem(helper.make_node("Add", ["x"], ["y"]), 17)  # doctest: +SKIP
        "needs at least 2 inputs (its schema's minimum), got 1: ['x']"
    """
    schema = _schema(node.op_type, opset)
    inputs, outputs = list(node.input), list(node.output)
    if len(inputs) < schema.min_input or not all(inputs[: schema.min_input]):
        return (
            f"needs at least {schema.min_input} inputs (its schema's minimum, none of them "
            f"empty), got {len(inputs)}: {inputs}"
        )
    if len(inputs) > schema.max_input:
        return f"takes at most {schema.max_input} inputs, got {len(inputs)}: {inputs}"
    if not outputs or not any(outputs):
        return f"needs an output name, got {outputs}"
    if not outputs[0] and node.op_type not in ("RNN", "GRU", "LSTM"):
        # A recurrent node may give only its final states (Y_h, Y_c), leaving Y unnamed.
        return f"needs an output name, got {outputs}"
    if len(outputs) > schema.max_output:
        return f"has at most {schema.max_output} outputs, got {len(outputs)}: {outputs}"
    return None


def non_finite_attribute(node: Any) -> str | None:
    """The first float attribute of ``node`` that is not a finite number, or ``None``.

    NaN is refused everywhere; infinity only where it means an open bound (Clip's ``min``
    and ``max``). ``Constant`` values are data and are left to ``nan_tensor_warning``.

    Returns:
        A message part such as ``"attribute alpha is nan; it must be a finite number"``.

    Example:
        >>> node = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=float("nan"))
        >>> non_finite_attribute(node)  # doctest: +SKIP
        'attribute alpha is nan; it must be a finite number'
    """
    import onnx

    for attribute in node.attribute:
        key = (node.op_type, attribute.name)
        if key in _DATA_ATTRIBUTES:
            continue
        if attribute.type == onnx.AttributeProto.FLOAT:
            values: Iterable[float] = [attribute.f]
        elif attribute.type == onnx.AttributeProto.FLOATS:
            values = attribute.floats
        else:
            continue
        for value in values:
            if math.isnan(value) or (math.isinf(value) and key not in _INFINITE_ALLOWED):
                return f"attribute {attribute.name} is {value}; it must be a finite number"
    return None


def _nan_count(value: np.ndarray) -> int:
    # In slices, so a large tensor does not need a mask as large as itself.
    flat, step = value.reshape(-1), 1 << 20
    return sum(int(np.isnan(flat[i : i + step]).sum()) for i in range(0, flat.size, step))


def nan_tensor_warning(tensors: dict[str, np.ndarray], what: str) -> None:
    """Warns (``RuntimeWarning``) about the float tensors in ``tensors`` that hold NaN.

    Args:
        tensors: arrays by name.
        what: what they are, e.g. ``"initializer"``.

    Example:
        >>> nan_tensor_warning({"w": np.array([np.nan], np.float32)}, "initializer")  # doctest: +SKIP
    """
    counts = {name: _nan_count(value) for name, value in tensors.items() if value.dtype.kind == "f"}
    listed = [
        f"{name!r} ({count} of {tensors[name].size})" for name, count in counts.items() if count
    ]
    if listed:
        warnings.warn(
            f"ONNX {what}(s) hold NaN values, which make every prediction through them NaN: "
            f"{', '.join(listed)}",
            RuntimeWarning,
            stacklevel=2,
        )


def check_declared_output(declared: Any, shape: tuple[int, ...]) -> None:
    """Refuses a graph output whose declared rank or fixed sizes differ from the engine
    ``shape`` the import computes (symbols, such as the batch, match any size).

    Args:
        declared: the output's ``onnx.ValueInfoProto``.
        shape: the engine shape of the imported output.

    Raises:
        OnnxImportError: naming the output, the declared size and the computed shape.

    Example:
        >>> check_declared_output(graph.output[0], (-1, 10))  # doctest: +SKIP
    """
    if not declared.type.HasField("tensor_type"):
        return
    if not declared.type.tensor_type.HasField("shape"):
        return
    dims = declared.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise OnnxImportError(
            f"output {declared.name!r} is declared with rank {len(dims)} but the graph "
            f"computes shape {show_shape(shape)}"
        )
    for axis, (dim, actual) in enumerate(zip(dims, shape)):
        if dim.HasField("dim_value") and actual >= 0 and dim.dim_value != actual:
            raise OnnxImportError(
                f"output {declared.name!r} is declared with size {dim.dim_value} on axis "
                f"{axis} but the graph computes shape {show_shape(shape)}"
            )
