"""``Model.summary``'s table: every input, then each layer with its output shape and
parameter count, then the totals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .tensor import BATCH, show_dim

if TYPE_CHECKING:
    from .model import Model


def format_batch_shape(shape: Sequence[int]) -> str:
    """An engine shape as the summary shows it: ``(batch, 64)``; a run-time sequence length
    shows as ``seq`` and another symbolic size by its name.

    Example:
        >>> format_batch_shape((-1, 64))
        '(batch, 64)'
    """
    dims = ["batch" if d == BATCH else str(d) if d >= 0 else show_dim(d) or "seq" for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def summary_lines(model: Model) -> list[str]:
    """The lines of ``model.summary()``, as Keras prints them.

    Args:
        model: the model.

    Returns:
        The header, one row per input and per layer (a layer called several times shows
        its first call's output shapes), and the parameter totals.

    Example:
        >>> summary_lines(gm.ModelBuilder((4,)).dense(3).build())[2]  # doctest: +SKIP
        'input (Input)    (batch, 4)  0'
    """
    graph = model.graph
    signature = model.input_signature
    rows = [
        (f"{name} (Input)", (tensor.engine_shape,), 0)
        for name, tensor in zip(signature.names, graph.inputs)
    ]
    first_call: dict[int, tuple[tuple[int, ...], ...]] = {}
    for call in graph.calls:
        first_call.setdefault(id(call.layer), tuple(t.engine_shape for t in call.outputs))
    for layer in model.layers:
        label = f"{layer.name} ({type(layer).__name__})"
        rows.append((label, first_call[id(layer)], layer.count_params()))
    # A call of several outputs (return_state=True) lists each one's shape.
    cells = [
        (label, ", ".join(format_batch_shape(shape) for shape in shapes), f"{count:,}")
        for label, shapes, count in rows
    ]
    headers = ("Layer (type)", "Output shape", "Params")
    widths = [max(len(headers[i]), *(len(c[i]) for c in cells)) for i in range(3)]
    line = "=" * (sum(widths) + 4)

    def fmt(cols: Sequence[str]) -> str:
        return f"{cols[0]:<{widths[0]}}  {cols[1]:<{widths[1]}}  {cols[2]:>{widths[2]}}"

    trainable = model.count_params()
    total = sum(int(np.prod(shape)) for shape in model.weight_shapes.values())
    lines = [fmt(headers), line, *(fmt(c) for c in cells), line]
    # Non-trainable values are whatever the optimizer leaves alone: batch-norm running
    # statistics, an imported model's constants.
    lines.append(f"Total params: {total:,} ({total * 4 / 1024:,.1f} KiB as float32)")
    lines.append(f"Trainable params: {trainable:,}")
    lines.append(f"Non-trainable params: {total - trainable:,}")
    if model.output_signature.structured:
        outputs = ", ".join(model.output_signature.names)
        lines.append(f"Outputs: {outputs}")
    return lines
