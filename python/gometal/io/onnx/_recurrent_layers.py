"""``OnnxRecurrentStates``: another output of an imported recurrent layer (its final states,
or its sequence), computed with that layer's own weights (tied), for the outputs of an ONNX
``RNN``, ``GRU`` or ``LSTM`` node (``Y``, ``Y_h``, ``Y_c``) besides the one the layer gives.

This layer runs the same recurrence again for the state asked for, reading the owner's
variables, so fine-tuning updates one set of weights through every output. Imports now
read all of a node's outputs from one call of the layer (``return_state=True``); both
layers stay registered so that model files saved from earlier imports still load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from ...nn.layers.base import EmitContext, Layer
from ...nn.layers.recurrent import GRU, LSTM, SimpleRNN
from ...nn.layers.registry import register_layer

RECURRENT_CLASSES = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}


@register_layer
class OnnxRecurrentStates(Layer):
    """Output ``state`` of recurrent layer ``owner``, with the owner's weights (tied).

    Args:
        owner: the name of the recurrent layer whose weights are read.
        layer_class: ``"SimpleRNN"``, ``"LSTM"`` or ``"GRU"``.
        layer_config: the owner's ``get_config()`` (its ``output`` is replaced).
        state: ``"sequence"``, ``"h_n"`` or ``"c_n"`` (LSTM only).
        name: an explicit layer name.

    Example:
        >>> lstm = gm.layers.LSTM(8, 16, name="lstm")  # doctest: +SKIP
        >>> h_n = OnnxRecurrentStates("lstm", "LSTM", lstm.get_config(), "h_n")(x)  # doctest: +SKIP
    """

    kind = "onnx_recurrent_states"
    num_inputs = None
    min_inputs = 1
    input_dtypes = ("float32", "int32")

    def __init__(
        self,
        owner: str,
        layer_class: str,
        layer_config: dict[str, Any],
        state: str,
        name: str | None = None,
    ):
        super().__init__(name)
        if layer_class not in RECURRENT_CLASSES:
            raise ValueError(
                f"layer_class must be one of {sorted(RECURRENT_CLASSES)}, got {layer_class!r}"
            )
        if state not in ("sequence", "h_n", "c_n") or (state == "c_n" and layer_class != "LSTM"):
            raise ValueError(
                f"state must be 'sequence', 'h_n' (or 'c_n' of an LSTM), got {state!r}"
            )
        self.owner, self.layer_class, self.state = owner, layer_class, state
        self.layer_config = dict(layer_config)
        config = {k: v for k, v in self.layer_config.items() if k not in ("name", "output")}
        # The recurrence runs under the owner's name, so its variables are the owner's.
        self.recurrence = RECURRENT_CLASSES[layer_class](**config, output=state, name=owner)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "owner": self.owner,
            "layer_class": self.layer_class,
            "layer_config": self.layer_config,
            "state": self.state,
        }

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        shapes = [tuple(ctx.graph.shape(node)) for node in inputs]
        for spec in self.recurrence.build(shapes):
            ctx.shared_variable(f"{self.owner}.{spec.name}", spec.shape)
        scope = ctx.scope
        ctx.scope = self.owner
        try:
            return self.recurrence.emit(ctx, inputs)
        finally:
            ctx.scope = scope


@register_layer
class OnnxSequenceEnds(Layer):
    """The final hidden states ``(N, D, H)`` read from a recurrent layer's output sequence
    ``(N, T, D * H)``: each direction's last valid step (step 0 for the reverse one), as
    the layer's own ``h_n`` is, without running the recurrence again.

    Args:
        directions: ``D``, 1 or 2.
        hidden_size: ``H``.
        lengths: whether a second input holds the int32 lengths ``(N,)``.
        name: an explicit layer name.

    Example:
        >>> h_n = OnnxSequenceEnds(2, 16)(sequence)  # doctest: +SKIP
    """

    kind = "onnx_sequence_ends"
    num_inputs = None
    min_inputs = 1
    input_dtypes = ("float32", "int32")

    def __init__(
        self, directions: int, hidden_size: int, lengths: bool = False, name: str | None = None
    ):
        super().__init__(name)
        self.directions, self.hidden_size = int(directions), int(hidden_size)
        self.lengths = bool(lengths)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "directions": self.directions,
            "hidden_size": self.hidden_size,
            "lengths": self.lengths,
        }

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, width = ctx.graph, self.hidden_size
        lengths = list(inputs[1:2]) if self.lengths else []
        rows = []
        for direction in range(self.directions):
            part = op(
                g, "slice", inputs[0], axis=2, start=direction * width, end=(direction + 1) * width
            )
            end = op(g, "sequence_end", part, *lengths, reverse=direction == 1)
            rows.append(op(g, "reshape", end, shape=[-1, 1, width]))
        return rows[0] if len(rows) == 1 else op(g, "concat", *rows, axis=1)
