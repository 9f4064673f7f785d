"""Importer handlers for ONNX ``RNN``, ``GRU`` and ``LSTM`` nodes (as both of torch's
exporters write ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM``), and ``ConstantOfShape``.

Each node becomes one gometal ``SimpleRNN``, ``GRU`` or ``LSTM`` layer (one layer, one or
both directions), so it trains in the compiled step. ONNX's gate blocks (LSTM: i, o, f,
c; GRU: z, r, h) are put back in torch's order (i, f, g, o; r, z, n) and ``B`` is split
into ``bias_ih`` and ``bias_hh``. The input is read batch-first whatever ``layout`` says
(time-major data is a view, see ``_views``); ``Y`` is the layer's (N, T, D * H) output seen
as ONNX's (T, D, N, H) (or (N, T, D, H) with ``layout`` 1); a node of which several
outputs are read is one layer call with ``return_state=True``, so ``Y``, ``Y_h`` and
``Y_c`` come from one recurrence per direction. Initial states come from model
inputs, or are zeros (``ConstantOfShape``/``Expand`` of 0, as torch writes them);
``sequence_lens`` from an int model input becomes the layer's lengths.

What gometal's layers do not compute is refused naming the node and the value:
activations other than torch's, ``activation_alpha``/``beta``, ``clip``,
``input_forget``, peepholes ``P``, ``direction="reverse"``, and a GRU with
``linear_before_reset=0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...nn.layers.onnx_rules_recurrent import ONNX_GATE_ORDER
from ...nn.layers.recurrent import GRU, LSTM, SimpleRNN
from ...nn.tensor import BATCH, SymbolicTensor
from . import _recurrent_layers  # noqa: F401  (registers the layers older imports saved)
from ._layers import OnnxConstant
from ._mask_ops import ZeroFill, bounded
from ._safety import tensor_to_array
from ._view_layers import OnnxRelayout
from ._view_ops import ViewOperators
from ._views import View, arrangement

RECURRENT_OPS = frozenset({"RNN", "GRU", "LSTM"})
# torch's activations per direction, as ONNX names them (case-insensitive in files).
_DEFAULT_ACTIVATIONS = {
    "LSTM": ["sigmoid", "tanh", "tanh"],
    "GRU": ["sigmoid", "tanh"],
}
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@dataclass(frozen=True)
class NodeOutputs:
    """A handler's results for each of a node's outputs, in order (``None``: not made)."""

    values: tuple[Any, ...]


def _torch_order(weight: np.ndarray, cell: str) -> np.ndarray:
    """Gate blocks (rows) from ONNX's order back to torch's."""
    order = ONNX_GATE_ORDER.get(cell)
    if order is None:
        return weight
    blocks = np.split(weight, len(order), axis=0)
    back = np.argsort(order)
    return np.concatenate([blocks[i] for i in back], axis=0)


class RecurrentOperators(ViewOperators):
    """The handlers for recurrent nodes (see the module docstring)."""

    used_names: set[str] | None = None

    def op_constant_of_shape(self, node: Any, attrs: dict[str, Any]) -> Any:
        """ONNX ``ConstantOfShape``: a constant at import, or zeros of a run-time shape."""
        value = np.zeros(1, np.float32)
        for attribute in node.attribute:
            if attribute.name == "value":
                value = tensor_to_array(attribute.t, self.folder, f"ConstantOfShape {node.name!r}")
        if value.size != 1:
            self.fail(f"value must hold one element, got shape {value.shape}")
        shape = self.shape_operand(node.input[0], "ConstantOfShape shape")
        if shape.scalar:
            self.fail(f"shape must be a 1-D integer tensor, got the scalar {shape}")
        if all(isinstance(e, (int, np.integer)) for e in shape.entries):
            dims = tuple(int(e) for e in shape.entries)
            if any(d < 0 for d in dims):
                self.fail(f"shape {list(dims)} holds a negative size")
            bounded(dims, value.dtype.itemsize, self.where())
            return np.full(dims, value.reshape(()), value.dtype)
        if value.reshape(()) != 0:
            self.fail(f"a run-time shape {shape} filled with {value.reshape(())} is not supported")
        return ZeroFill(tuple(shape.entries))

    # -- the recurrent node ------------------------------------------------------------------
    def op_recurrent(self, node: Any, attrs: dict[str, Any]) -> NodeOutputs:
        """ONNX ``RNN``, ``GRU`` or ``LSTM``: one gometal layer (see the module docstring)."""
        kind = node.op_type
        cell = self._cell(kind, attrs)
        direction = attrs.get("direction", "forward")
        if direction not in ("forward", "bidirectional"):
            self.fail(
                f"direction={direction!r} is not supported: gometal's layers run forward, or "
                "both ways (bidirectional)"
            )
        directions = 2 if direction == "bidirectional" else 1
        layout = int(attrs.get("layout", 0))
        if layout not in (0, 1):
            self.fail(f"layout must be 0 or 1, got {layout}")
        names = list(node.input) + [""] * (8 - len(node.input))
        if kind == "LSTM" and names[7]:
            self.fail(f"peepholes P ({names[7]!r}) are not supported: torch's LSTM has none")
        w = self.float_const(names[1], f"{kind} input W")
        r = self.float_const(names[2], f"{kind} input R")
        gates = _GATES[kind]
        if w.ndim != 3 or r.ndim != 3 or w.shape[0] != directions or w.shape[1] % gates:
            self.fail(
                f"W {w.shape} and R {r.shape} must be (num_directions={directions}, "
                f"{gates}*hidden_size, input_size) and (.., .., hidden_size)"
            )
        hidden = w.shape[1] // gates
        declared = attrs.get("hidden_size")
        if declared is not None and int(declared) != hidden:
            self.fail(f"hidden_size={declared} but W {w.shape} holds {hidden}")
        if r.shape != (directions, gates * hidden, hidden):
            self.fail(f"R must have shape {(directions, gates * hidden, hidden)}, got {r.shape}")
        bias = self.float_const(names[3], f"{kind} input B") if names[3] else None
        if bias is not None and bias.shape != (directions, 2 * gates * hidden):
            self.fail(f"B must have shape {(directions, 2 * gates * hidden)}, got {bias.shape}")
        x = self._batch_first(names[0], layout, 3, "X")
        if x.engine_shape[2] != w.shape[2]:
            self.fail(f"X has input size {x.engine_shape[2]} but W {w.shape} expects {w.shape[2]}")
        h0 = self._initial_state(names[5], layout, "initial_h")
        c0 = self._initial_state(names[6], layout, "initial_c") if kind == "LSTM" else None
        if (h0 is None) != (c0 is None) and kind == "LSTM":
            self.fail(
                f"initial_h ({names[5]!r}) and initial_c ({names[6]!r}): gometal's LSTM takes "
                "both initial states as inputs, or neither (zeros)"
            )
        if h0 is None and x.engine_shape[0] != BATCH:
            # A fixed batch (dynamic_batch=False): zeros of its size as the initial states.
            h0 = self._fixed_zeros((x.engine_shape[0], directions, hidden), "initial_h")
            c0 = self._fixed_zeros(h0.engine_shape, "initial_c") if kind == "LSTM" else None
        lengths = self._sequence_lengths(names[4])
        inputs = [x] + [s for s in (h0, c0) if s is not None] + ([lengths] if lengths else [])
        layer_class = {"RNN": SimpleRNN, "GRU": GRU, "LSTM": LSTM}[kind]
        options: dict[str, Any] = {"nonlinearity": cell[4:]} if kind == "RNN" else {}
        config = dict(
            input_size=int(w.shape[2]),
            hidden_size=hidden,
            bias=bias is not None,
            bidirectional=directions == 2,
            initial_state=h0 is not None,
            lengths=lengths is not None,
            **options,
        )
        used = self._used_names()
        wanted = [i < len(node.output) and node.output[i] in used for i in range(3)]
        roles = ("sequence", "h_n", "c_n")
        weights = self._layer_weights(w, r, bias, cell)
        if sum(wanted) > 1:
            # One call gives (Y, Y_h[, Y_c]) from the same recurrences.
            layer = layer_class(**config, return_state=True, name=self.layer_name())
            tensors = list(self.call(layer, inputs, weights))
        else:
            primary = roles[wanted.index(True) if any(wanted) else 0]
            layer = layer_class(**config, output=primary, name=self.layer_name())
            tensors = [
                self.call(layer, inputs, weights) if role == primary else None for role in roles
            ]
        groups = ((1,), (0,), (2,)) if layout == 0 else ((0,), (1,), (2,))
        outputs: list[Any] = []
        for index, role in enumerate(roles):
            if not wanted[index]:
                outputs.append(None)
            elif role == "sequence":
                outputs.append(self._y_view(tensors[index], directions, hidden, layout))
            else:
                outputs.append(View(tensors[index], groups))
        self.recurrent_states.update(n for n, v in zip(node.output, outputs) if v is not None)
        return NodeOutputs(tuple(outputs))

    def _used_names(self) -> set[str]:
        """Tensor names some node or graph output reads (computed once per import)."""
        if self.used_names is None:
            self.used_names = {name for n in self.graph.node for name in n.input}
            self.used_names |= {o.name for o in self.graph.output}
        return self.used_names

    def _cell(self, kind: str, attrs: dict[str, Any]) -> str:
        """The gometal cell of the node, or an error naming what is unsupported."""
        for name in ("clip", "activation_alpha", "activation_beta"):
            if name in attrs:
                self.fail(f"{name}={attrs[name]!r} is not supported (torch's {kind} has none)")
        if int(attrs.get("input_forget", 0)):
            self.fail(f"input_forget={attrs['input_forget']} is not supported")
        given = [
            a.decode() if isinstance(a, bytes) else str(a) for a in attrs.get("activations", [])
        ]
        lowered = [a.lower() for a in given]
        if kind == "GRU" and int(attrs.get("linear_before_reset", 0)) != 1:
            self.fail(
                f"linear_before_reset={int(attrs.get('linear_before_reset', 0))} is not "
                "supported: gometal's GRU is torch's (linear_before_reset=1)"
            )
        if kind == "RNN":
            kinds = set(lowered or ["tanh"])
            if len(kinds) != 1 or not kinds <= {"tanh", "relu"}:
                self.fail(
                    f"activations {given} are not supported: Tanh or Relu (the same both ways)"
                )
            return f"rnn_{kinds.pop()}"
        default = _DEFAULT_ACTIVATIONS[kind]
        if lowered and lowered not in (default, default * 2):
            self.fail(f"activations {given} are not supported: only {kind}'s defaults {default}")
        return kind.lower()

    def _layer_weights(
        self, w: np.ndarray, r: np.ndarray, bias: np.ndarray | None, cell: str
    ) -> dict[str, np.ndarray]:
        """The gometal layer's weights (torch's names and gate order) from W, R and B."""
        weights = {}
        half = w.shape[1]
        for direction in range(w.shape[0]):
            suffix = "_l0" + ("_reverse" if direction else "")
            weights[f"weight_ih{suffix}"] = _torch_order(w[direction], cell)
            weights[f"weight_hh{suffix}"] = _torch_order(r[direction], cell)
            if bias is not None:
                weights[f"bias_ih{suffix}"] = _torch_order(bias[direction, :half], cell)
                weights[f"bias_hh{suffix}"] = _torch_order(bias[direction, half:], cell)
        return weights

    def _batch_first(self, name: str, layout: int, rank: int, what: str) -> SymbolicTensor:
        """Input ``name`` of a recurrent node as an engine tensor with the batch first:
        ONNX axes (1, 0, 2) for ``layout`` 0, in order for ``layout`` 1."""
        if name in self.consts:
            self.fail(f"{what} ({name!r}) must be run-time data, not a constant")
        view = self.view_of(name)
        if len(view.groups) != rank:
            self.fail(f"{what} ({name!r}) must have rank {rank}, got {len(view.groups)}")
        order = [1, 0, 2] if layout == 0 else [0, 1, 2]
        groups = tuple(view.groups[i] for i in order)
        shape = view.tensor.engine_shape
        try:
            perm, target, _ = arrangement(shape, groups, range(rank))
        except ValueError as err:
            hint = ""
            if name in {i.name for i in self.graph.input}:
                # The graph input is time-major: torch's batch_first=False.
                hint = (
                    "; gometal reads dimension 0 of a model input as the batch: export the "
                    "torch module with batch_first=True"
                )
            self.fail(f"{what} ({name!r}): {err}{hint}")
            raise
        if target[0] != BATCH and shape[:1] == (BATCH,):
            self.fail(f"{what} ({name!r}) must hold the batch on axis {order[0]}")
        if list(perm) == sorted(perm) and tuple(target) == shape:
            return view.tensor
        return self.call(
            OnnxRelayout(perm, target, name=self.name(f"{name}_batch_first")), view.tensor
        )

    def _initial_state(self, name: str, layout: int, what: str) -> SymbolicTensor | None:
        """An initial state (N, D, H), or ``None`` for zeros."""
        if not name or isinstance(self.deferred.get(name), ZeroFill):
            return None
        value = self.consts.get(name)
        if value is not None:
            if value.dtype.kind == "f" and not value.any():
                return None
            self.fail(
                f"{what} ({name!r}) is a non-zero constant; gometal takes an initial state "
                "as a model input, or zeros"
            )
        return self._batch_first(name, layout, 3, what)

    def _fixed_zeros(self, shape: tuple[int, ...], what: str) -> SymbolicTensor:
        layer = OnnxConstant(shape, name=self.name(f"{self.node.name or self.node.op_type}_{what}"))
        tensor = self.call(layer, self.source)
        self.weights[f"{layer.name}.value"] = np.zeros(shape, np.float32)
        return tensor

    def _sequence_lengths(self, name: str) -> SymbolicTensor | None:
        """``sequence_lens`` as the layer's lengths input (int32 (N,)), or ``None``."""
        if not name:
            return None
        if name in self.consts or name in self.shape_values:
            self.fail(
                f"sequence_lens ({name!r}) must be a model input of int32 lengths (or be "
                "left out); constant lengths are not supported"
            )
        lengths = self.values.get(name)
        if lengths is None or name in self.views or lengths.dtype != "int32":
            self.fail(f"sequence_lens ({name!r}) must be a model input of int lengths (N,)")
        return lengths

    def _y_view(self, sequence: SymbolicTensor, directions: int, hidden: int, layout: int) -> View:
        """The layer's (N, T, D * H) output as ONNX's Y: (T, D, N, H) or (N, T, D, H)."""
        n, t, _ = sequence.engine_shape
        owner = sequence.producer.layer.name if sequence.producer is not None else "rnn"
        layer = OnnxRelayout(None, [n, t, directions, hidden], name=self.name(f"{owner}_Y"))
        split = self.call(layer, sequence)
        groups = ((1,), (2,), (0,), (3,)) if layout == 0 else ((0,), (1,), (2,), (3,))
        return View(split, groups)


RECURRENT_HANDLERS = {
    "RNN": RecurrentOperators.op_recurrent,
    "GRU": RecurrentOperators.op_recurrent,
    "LSTM": RecurrentOperators.op_recurrent,
    "ConstantOfShape": RecurrentOperators.op_constant_of_shape,
}
# Read in the forms torch writes around recurrent nodes; kept out of SUPPORTED_OPS (the
# node-case harness) since only these forms import.
STATE_OPS = frozenset({"ConstantOfShape"})
