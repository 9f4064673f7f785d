"""ONNX export rules of the recurrent layers: each layer of a ``SimpleRNN``, ``LSTM`` or
``GRU`` is one ONNX ``RNN``, ``LSTM`` or ``GRU`` node (both directions in one node), as
torch exports them.

The nodes run time-major (``layout`` 0, the only one onnxruntime runs), so the input is
transposed once and each layer's ``Y`` (T, D, N, H) is folded back to (T, N, D*H). Gates are
reordered into ONNX's order (LSTM: i, o, f, c from torch's i, f, g, o; GRU: z, r, h from
r, z, n, with ``linear_before_reset`` as torch's GRU); ``B`` is ``[b_ih, b_hh]``. Final
states ``h_n`` are read from ``Y`` (the last valid step, or step 0 in reverse); an LSTM's
``c_n`` is each node's ``Y_c`` output. A call with ``return_state=True`` writes its output
and its states from the same nodes: ``h_n`` from each node's ``Y_h``, ``c_n`` from ``Y_c``,
as torch exports its final states. A projection (``proj_size``) does not export: the ONNX
LSTM operator has none, and writing the recurrence as a ``Loop`` would give up the fused
operator that onnxruntime runs.

Importing this module registers the rules with the layer classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import LayerCall
from .recurrent import GRU, LSTM, SimpleRNN
from .registry import OnnxGraph, register_layer

# ONNX TensorProto element types (kept as numbers: nn does not import onnx).
INT32, INT64 = 6, 7
# Rows of torch's gate blocks in ONNX's order.
ONNX_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}


def _node(b: OnnxGraph, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
    out = b.unique(name)
    b.node(op_type, inputs, out, out, **attrs)
    return out


def _reorder(layer: Any, weight: np.ndarray) -> np.ndarray:
    order = ONNX_GATE_ORDER.get(layer.cell)
    if order is None:
        return weight
    blocks = np.split(weight, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def _layer_weights(b: OnnxGraph, layer: Any, index: int, name: str) -> tuple[str, str, str]:
    """W, R and B (or "") of layer `index`, both directions stacked, in ONNX's gate order."""
    weights = layer.get_weights()
    suffixes = [f"_l{index}", f"_l{index}_reverse"][: layer.directions]
    w = np.stack([_reorder(layer, weights[f"weight_ih{s}"]) for s in suffixes])
    r = np.stack([_reorder(layer, weights[f"weight_hh{s}"]) for s in suffixes])
    bias = ""
    if layer.bias:
        rows = [
            np.concatenate(
                [_reorder(layer, weights[f"bias_ih{s}"]), _reorder(layer, weights[f"bias_hh{s}"])]
            )
            for s in suffixes
        ]
        bias = b.constant(f"{name}/B_l{index}", np.stack(rows))
    return b.constant(f"{name}/W_l{index}", w), b.constant(f"{name}/R_l{index}", r), bias


def _sequence_lengths(b: OnnxGraph, layer: Any, extra: str | None, name: str) -> str:
    """int32 (N,) lengths from the lengths input or the key-padding mask; "" without."""
    if extra is None:
        return ""
    if layer.lengths:
        flat = _node(b, "Reshape", [extra, b.int_constant(f"{name}/flat", [-1])], f"{name}/lengths")
        return _node(b, "Cast", [flat], f"{name}/lengths_int32", to=INT32)
    kept = _node(b, "Sub", [b.constant(f"{name}/one", np.float32(1.0)), extra], f"{name}/kept")
    axes = b.int_constant(f"{name}/time_axis", [1])
    count = _node(b, "ReduceSum", [kept, axes], f"{name}/kept_count", keepdims=0)
    return _node(b, "Cast", [count], f"{name}/lengths_int32", to=INT32)


def _initial(b: OnnxGraph, layer: Any, states: str | None, index: int, name: str) -> str:
    """Layer `index`'s rows of a batch-first (N, D*L, H) state, as ONNX's (D, N, H)."""
    if states is None:
        return ""
    d = layer.directions
    rows = _node(
        b,
        "Slice",
        [
            states,
            b.int_constant(f"{name}/start", [index * d]),
            b.int_constant(f"{name}/end", [index * d + d]),
            b.int_constant(f"{name}/axis", [1]),
        ],
        f"{name}/state_l{index}",
    )
    return _node(b, "Transpose", [rows], f"{name}/state_l{index}_time_major", perm=[1, 0, 2])


def _final_state(b: OnnxGraph, y: str, direction: int, width: int, lengths: str, name: str) -> str:
    """(N, H) of direction `direction` of Y (T, D, N, H): its last valid step, or step 0 in
    reverse."""
    one = _node(b, "Gather", [y, b.int_constant(f"{name}/dir", [direction])], f"{name}/y_d", axis=1)
    steps = _node(
        b, "Reshape", [one, b.int_constant(f"{name}/tnh", [0, -1, width])], f"{name}/y_tnh"
    )
    if direction == 1 or not lengths:
        at = _node(
            b,
            "Gather",
            [steps, b.int_constant(f"{name}/at", [0 if direction else -1])],
            f"{name}/end",
            axis=0,
        )
    else:
        last = _node(
            b,
            "Sub",
            [
                _node(b, "Cast", [lengths], f"{name}/lengths_int64", to=INT64),
                b.int_constant(f"{name}/1", [1]),
            ],
            f"{name}/last_step",
        )
        column = _node(
            b, "Reshape", [last, b.int_constant(f"{name}/1n1", [1, -1, 1])], f"{name}/last_1n1"
        )
        index = _node(
            b,
            "Expand",
            [column, b.int_constant(f"{name}/11h", [1, 1, width])],
            f"{name}/last_index",
        )
        at = _node(b, "GatherElements", [steps, index], f"{name}/end", axis=0)
    return _node(b, "Reshape", [at, b.int_constant(f"{name}/nh", [-1, width])], f"{name}/state")


def recurrent_to_onnx(
    b: OnnxGraph, call: LayerCall, inputs: list[str], output: str | list[str], name: str
) -> None:
    """One ONNX RNN, LSTM or GRU node per layer; see the module docstring."""
    layer: Any = call.layer
    # With return_state: [output, h_n, (c_n)].
    output, *state_outputs = [output] if isinstance(output, str) else output
    wants_h = layer.output in ("last", "h_n")
    wants_c = layer.output == "c_n" or len(state_outputs) == 2
    if getattr(layer, "proj_size", 0):
        raise ValueError(
            f"layer '{layer.name}' (LSTM) has proj_size={layer.proj_size}: the ONNX LSTM "
            "operator has no projection (export the model without proj_size, or keep it in "
            "gometal's own format)"
        )
    x, h0, c0, extra = layer.split_inputs(inputs)
    lengths = _sequence_lengths(b, layer, extra, name)
    op_type = {"lstm": "LSTM", "gru": "GRU"}.get(layer.cell, "RNN")
    attrs: dict[str, Any] = {
        "hidden_size": layer.hidden_size,
        "direction": "bidirectional" if layer.bidirectional else "forward",
    }
    if op_type == "GRU":
        attrs["linear_before_reset"] = 1
    if op_type == "RNN":
        attrs["activations"] = ["Relu" if layer.cell == "rnn_relu" else "Tanh"] * layer.directions
    d, width = layer.directions, layer.hidden_size
    sequence = _node(b, "Transpose", [x], f"{name}/x_time_major", perm=[1, 0, 2])
    finals: list[str] = []
    hiddens: list[str] = []
    cells: list[str] = []
    for index in range(layer.num_layers):
        w, r, bias = _layer_weights(b, layer, index, name)
        operands = [sequence, w, r, bias, lengths, _initial(b, layer, h0, index, f"{name}/h0")]
        if op_type == "LSTM":
            operands.append(_initial(b, layer, c0, index, f"{name}/c0"))
        while operands and operands[-1] == "":
            operands.pop()
        y = b.unique(f"{name}/Y_l{index}")
        outputs = [y, "", ""]
        if state_outputs:
            hiddens.append(b.unique(f"{name}/Y_h_l{index}"))
            outputs[1] = hiddens[-1]
        if wants_c:
            cells.append(b.unique(f"{name}/Y_c_l{index}"))
            outputs[2] = cells[-1]
        while outputs[-1] == "":
            outputs.pop()
        b.node(op_type, operands, outputs, y, **attrs)
        for direction in range(d if wants_h else 0):
            finals.append(
                _final_state(b, y, direction, width, lengths, f"{name}/l{index}_d{direction}")
            )
        folded = _node(b, "Transpose", [y], f"{name}/Y_l{index}_tndh", perm=[0, 2, 1, 3])
        sequence = _node(
            b,
            "Reshape",
            [folded, b.int_constant(f"{name}/tn_dh", [0, 0, d * width])],
            f"{name}/seq_l{index}",
        )
    if layer.output == "sequence":
        b.node("Transpose", [sequence], output, name, perm=[1, 0, 2])
    elif layer.output == "c_n":
        _write_states(b, cells, output, name)
    elif layer.output == "last" and d == 1:
        b.node("Identity", finals[-1:], output, name)
    elif layer.output == "last":
        b.node("Concat", finals[-d:], output, name, axis=1)
    else:
        _write_h_n(b, finals, width, output, name)
    if state_outputs:
        _write_states(b, hiddens, state_outputs[0], b.unique(f"{name}/h_n"))
    if len(state_outputs) == 2:
        _write_states(b, cells, state_outputs[1], b.unique(f"{name}/c_n"))


def _write_h_n(b: OnnxGraph, finals: list[str], width: int, output: str, name: str) -> None:
    """h_n (N, D*L, H) from each layer and direction's final (N, H), in torch's order."""
    rows = [
        _node(b, "Reshape", [f, b.int_constant(f"{name}/n1h", [-1, 1, width])], f"{name}/h_n_row")
        for f in finals
    ]
    b.node("Concat", rows, output, name, axis=1)


def _write_states(b: OnnxGraph, states: list[str], output: str, name: str) -> None:
    """h_n or c_n (N, D*L, H) from each node's Y_h or Y_c (D, N, H): batch-first, the
    layers side by side."""
    rows = [
        _node(b, "Transpose", [state], f"{name}/l{index}", perm=[1, 0, 2])
        for index, state in enumerate(states)
    ]
    if len(rows) == 1:
        b.node("Identity", rows, output, name)
    else:
        b.node("Concat", rows, output, name, axis=1)


for _layer_class in (SimpleRNN, LSTM, GRU):
    register_layer(_layer_class, onnx=recurrent_to_onnx)
