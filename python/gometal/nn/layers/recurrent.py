"""Recurrent layers with torch's arguments, weight names and init: ``SimpleRNN``
(``nn.RNN``), ``LSTM`` (``nn.LSTM``, with ``proj_size``) and ``GRU`` (``nn.GRU``). A torch
``state_dict`` loads one to one through ``layer.set_weights``.

Each layer and direction is one input projection of every step at once (a matmul; or a short
embedding table's projection, whose rows the recurrence reads by token id; an LSTM's or plain
RNN's recurrence projects each step's input in the step's product)
and one ``recurrence`` op that runs the time loop inside the compiled step; final states come from
``sequence_end``. Tensors are batch-first: states are ``(N, D*num_layers, H_out)``, torch's
``h_n.transpose(0, 1)`` (the batch leads every gometal tensor: ``predict`` and training cut
batches along axis 0).

With ``return_state=True`` a call gives ``(output, h_n)``, an LSTM's ``(output, h_n, c_n)``,
all from the same recurrences, as Keras's ``return_state``; ``layer(x, initial_state=[h0,
c0])`` feeds states in (an encoder's final states into a decoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ...graph.composites import op
from ..initializers import Uniform, Zeros
from . import attention_ops as ao
from .base import EmitContext, Layer, WeightSpec
from .recurrent_args import COMMON_ARGS
from .recurrent_calls import inputs_with_states, positive_int, shown
from .recurrent_graph import final_states, initial_state, input_projection, join, mask_lengths
from .registry import register_layer

OUTPUTS = ("sequence", "last", "h_n", "c_n")


class _Recurrent(Layer):
    """What the three layers share; subclasses set ``cell_names`` and ``gates``."""

    num_inputs = None
    min_inputs = 1
    input_dtypes = ("float32", "int32")
    gates: ClassVar[int] = 1
    title: ClassVar[str] = "RNN"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        output: str = "sequence",
        initial_state: bool = False,
        lengths: bool = False,
        key_padding_mask: bool = False,
        stateful: bool = False,
        batch_size: int | None = None,
        return_state: bool = False,
        name: str | None = None,
    ):
        super().__init__(name)
        label = self.title if name is None else f"{self.title} '{name}'"
        self.input_size = positive_int(input_size, f"{label} input_size")
        self.hidden_size = positive_int(hidden_size, f"{label} hidden_size")
        self.num_layers = positive_int(num_layers, f"{label} num_layers")
        self.bias = bool(bias)
        if batch_first is not True:
            raise ValueError(
                f"{label} takes batch_first=True only (gometal's tensors are batch-first), "
                f"got {batch_first!r}"
            )
        self.batch_first = True
        self.dropout = ao.check_rate(dropout, f"{label} dropout")
        self.bidirectional = bool(bidirectional)
        if output not in self._outputs():
            raise ValueError(
                f"{label} output must be one of {list(self._outputs())}, got {output!r}"
            )
        self.output = output
        self.return_state = bool(return_state)
        if self.return_state and output not in ("sequence", "last"):
            raise ValueError(
                f"{label} return_state=True gives the final states after the output, which "
                f"must then be 'sequence' or 'last', got output={output!r}"
            )
        self.initial_state = bool(initial_state)
        if lengths and key_padding_mask:
            raise ValueError(f"{label} takes lengths or a key_padding_mask, not both")
        self.lengths = bool(lengths)
        self.key_padding_mask = bool(key_padding_mask)
        self.stateful = bool(stateful)
        if self.stateful and self.initial_state:
            raise ValueError(
                f"{label} takes initial states as inputs or keeps them (stateful), not both"
            )
        if self.stateful:
            batch_size = positive_int(batch_size, f"{label} batch_size (a stateful layer's batch)")
        self.batch_size = batch_size if self.stateful else None
        # A stateful layer writes its final states into its state variables in training.
        self.updates_state = self.stateful

    # -- what subclasses vary --------------------------------------------------------------
    def _outputs(self) -> tuple[str, ...]:
        return ("sequence", "last", "h_n")

    @property
    def cell(self) -> str:
        """The recurrence op's cell: ``rnn_tanh``, ``rnn_relu``, ``lstm`` or ``gru``."""
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        """``H_out``: the width of one direction's output (``proj_size`` when an LSTM has one)."""
        return self.hidden_size

    def _has_cell_state(self) -> bool:
        return False

    # -- configuration --------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "bidirectional": self.bidirectional,
            "output": self.output,
            "initial_state": self.initial_state,
            "lengths": self.lengths,
            "key_padding_mask": self.key_padding_mask,
            "stateful": self.stateful,
            "batch_size": self.batch_size,
            "return_state": self.return_state,
        }

    @property
    def num_outputs(self) -> int:
        """3 for an LSTM with ``return_state`` (output, h_n, c_n), 2 for the other cells
        (output, h_n), else 1."""
        return 1 + self.return_state * (2 if self._has_cell_state() else 1)

    def output_name(self, index: int) -> str:
        """``<name>`` for the output, ``<name>_h_n`` and ``<name>_c_n`` for the states."""
        return str(self.name) + ("", "_h_n", "_c_n")[index]

    def __call__(self, inputs: Any, initial_state: Any = None) -> Any:
        """Applies the layer to symbolic tensors.

        Args:
            inputs: ``x`` ``(N, T, input_size)``, or the list of the layer's inputs (x,
                then h0 and c0 with ``initial_state=True``, then lengths or the mask).
            initial_state: ``[h0, c0]`` (LSTM) or ``[h0]``, each ``(N, D*num_layers,
                width)`` batch-first, instead of listing them in ``inputs``; an unbuilt
                layer then takes initial states from now on (its ``initial_state`` is set).

        Returns:
            The output, or with ``return_state`` the tuple ``(output, h_n)`` (LSTM:
            ``(output, h_n, c_n)``).

        Example:
            >>> seq, h, c = LSTM(8, 16, return_state=True)(gm.Input((None, 8)))  # doctest: +SKIP
            >>> y = LSTM(8, 16)(gm.Input((None, 8)), initial_state=[h, c])  # doctest: +SKIP
        """
        if initial_state is None:
            return self.apply(inputs, self.name)
        label = self._describe(self.name)
        if self.stateful or (self.built and not self.initial_state):
            why = "is stateful" if self.stateful else "was built without initial states"
            raise ValueError(f"{label} {why}: it takes no initial_state")
        joined = inputs_with_states(inputs, initial_state, self._has_cell_state(), label)
        before, self.initial_state = self.initial_state, True
        try:
            return self.apply(joined, self.name)
        except BaseException:
            self.initial_state = before  # a failed first call leaves the layer as it was
            raise

    @property
    def directions(self) -> int:
        """``D``: 2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> list[tuple[int, str]]:
        """(layer, torch's name suffix) of every layer and direction, in torch's order."""
        ends = ["", "_reverse"][: self.directions]
        return [(layer, f"_l{layer}{end}") for layer in range(self.num_layers) for end in ends]

    def split_inputs(self, items: Sequence[Any]) -> tuple[Any, Any, Any, Any]:
        """Splits a call's inputs (shapes, node ids or ONNX names) by role.

        Args:
            items: the call's inputs in order: x, [h0], [c0], [lengths or mask].

        Returns:
            x, h0, c0 and the lengths (or mask), each None when the layer does not take it.

        Example:
            >>> x, h0, c0, lengths = LSTM(4, 8, lengths=True).split_inputs(["x", "n"])
        """
        items = list(items)
        wanted = 1 + self.initial_state * (2 if self._has_cell_state() else 1)
        wanted += self.lengths or self.key_padding_mask
        if len(items) != wanted:
            parts = ["x"]
            if self.initial_state:
                parts += ["h0", "c0"] if self._has_cell_state() else ["h0"]
            if self.lengths or self.key_padding_mask:
                parts.append("lengths" if self.lengths else "key_padding_mask")
            raise ValueError(f"takes {wanted} input(s) ({', '.join(parts)}), got {len(items)}")
        x = items.pop(0)
        h0 = items.pop(0) if self.initial_state else None
        c0 = items.pop(0) if self.initial_state and self._has_cell_state() else None
        lengths = items.pop(0) if items else None
        return x, h0, c0, lengths

    # -- building ---------------------------------------------------------------------------
    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        x, h0, c0, lengths = self.split_inputs(input_shapes)
        if len(x) != 3 or x[2] != self.input_size:
            raise ValueError(
                f"expects x of shape (N, T, input_size={self.input_size}), got {shown(x)}"
            )
        states = self.directions * self.num_layers
        for what, shape, width in (("h0", h0, self.output_size), ("c0", c0, self.hidden_size)):
            if shape is not None and tuple(shape[1:]) != (states, width):
                raise ValueError(
                    f"expects {what} of shape (N, D*num_layers={states}, {width}) (batch-first: "
                    f"torch's {what[0]}_0.transpose(0, 1)), got {shown(shape)}"
                )
        if lengths is not None:
            wants = [(x[0],), (x[0], 1)] if self.lengths else [(x[0], x[1])]
            if tuple(lengths) not in wants:
                which = "lengths (N,) or (N, 1)" if self.lengths else "key_padding_mask (N, T)"
                raise ValueError(f"expects {which}, got {shown(lengths)}")
        return self._weight_specs_list()

    def _weight_specs_list(self) -> list[WeightSpec]:
        init = Uniform(1.0 / np.sqrt(self.hidden_size))
        gh = self.gates * self.hidden_size
        specs = []
        for layer, suffix in self._suffixes():
            fan_in = self.input_size if layer == 0 else self.directions * self.output_size
            specs.append(WeightSpec(f"weight_ih{suffix}", (gh, fan_in), init))
            specs.append(WeightSpec(f"weight_hh{suffix}", (gh, self.output_size), init))
            if self.bias:
                specs.append(WeightSpec(f"bias_ih{suffix}", (gh,), init))
                specs.append(WeightSpec(f"bias_hh{suffix}", (gh,), init))
            if self.output_size != self.hidden_size:
                specs.append(
                    WeightSpec(f"weight_hr{suffix}", (self.output_size, self.hidden_size), init)
                )
        states = (self.batch_size, self.directions * self.num_layers)
        if self.stateful:
            specs.append(
                WeightSpec("state_h", (*states, self.output_size), Zeros(), trainable=False)
            )
        if self.stateful and self._has_cell_state():
            specs.append(
                WeightSpec("state_c", (*states, self.hidden_size), Zeros(), trainable=False)
            )
        return specs

    def reset_states(self) -> None:
        """Zeroes a stateful layer's carried states (at the start of a new text or epoch).

        Example:
            >>> lstm.reset_states()  # doctest: +SKIP
        """
        if not self.stateful:
            raise ValueError(f"{self._describe(self.name)} is not stateful: it keeps no states")
        self.set_weights(
            {s.name: np.zeros(s.shape, np.float32) for s in self.weight_specs if not s.trainable}
        )

    # -- emitting ---------------------------------------------------------------------------
    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        x, h0, c0, extra = self.split_inputs(inputs)
        self._check_dtypes(g, x, h0, c0, extra)
        lengths = extra
        if self.lengths:
            lengths = op(g, "reshape", extra, shape=[-1])
        if self.key_padding_mask:
            lengths = mask_lengths(ctx.graph, extra, ctx.scope or self.kind)
        if self.stateful:
            # The states carried from the previous batch: variables, so no gradient reaches them.
            h0 = ctx.variable("state_h")
            c0 = ctx.variable("state_c") if self._has_cell_state() else None
        # An LSTM's cell states are written out only for a caller that reads c_n.
        cell_states = self.return_state or self.output == "c_n" or (self.stateful and ctx.training)
        sequences, finals = self._stack(
            ctx, x, h0, c0, lengths, self.batch_size or -1, cell_states=cell_states
        )
        if self.stateful:
            self._carry(ctx, finals)
        if self.output == "sequence":
            primary = join(g, sequences, 2)
        elif self.output == "last":
            primary = join(g, finals["h_n"][-self.directions :], 1)
        else:
            return final_states(g, finals[self.output], None)
        if not self.return_state:
            return primary
        keys = ["h_n", "c_n"] if self._has_cell_state() else ["h_n"]
        return (primary, *(final_states(g, finals[key], None) for key in keys))

    def emit_with_states(
        self,
        ctx: EmitContext,
        x: int,
        h0: int | None = None,
        c0: int | None = None,
        batch_size: int | None = None,
        lengths: int | None = None,
    ) -> tuple[int, int, int | None]:
        """Emits the layer over ``x`` from the given states and returns its output sequence
        with its final states, all from one recurrence per layer and direction (a decoder
        carries the states between calls this way).

        Args:
            ctx: the emission context, scoped to this layer.
            x: the node of ``x`` ``(N, T, input_size)``.
            h0: a node ``(N, D*num_layers, H_out)``, or ``None`` for zeros.
            c0: an LSTM's ``(N, D*num_layers, H)``, or ``None`` for zeros.
            batch_size: N when the states have a known number of rows (variables), or
                ``None`` for the batch of ``x``.
            lengths: an int32 ``(N,)`` node of each sequence's length, or ``None``.

        Returns:
            ``(sequence, h_n, c_n)``: ``(N, T, D*H_out)`` as ``output="sequence"`` gives
            it, ``(N, D*num_layers, H_out)`` and an LSTM's ``(N, D*num_layers, H)``
            (``None`` for the other cells).

        Example:
            >>> seq, h_n, c_n = lstm.emit_with_states(ctx, x, h, c, batch_size=4)  # doctest: +SKIP
        """
        g = ctx.graph
        sequences, finals = self._stack(ctx, x, h0, c0, lengths, batch_size or -1)
        h_n = final_states(g, finals["h_n"], batch_size)
        c_n = final_states(g, finals["c_n"], batch_size) if self._has_cell_state() else None
        return join(g, sequences, 2), h_n, c_n

    def _stack(
        self,
        ctx: EmitContext,
        x: int,
        h0: Any,
        c0: Any,
        lengths: Any,
        rows: int,
        cell_states: bool = True,
    ) -> tuple[list[int], dict[str, list[int]]]:
        """Every layer and direction: the last layer's sequences and each final state (an
        LSTM's c_n: ``None`` in inference without ``cell_states``)."""
        g = ctx.graph
        layer_input = x
        finals: dict[str, list[int]] = {"h_n": [], "c_n": []}
        sequences: list[int] = []
        for layer in range(self.num_layers):
            if layer > 0:
                layer_input = ao.dropout(ctx, join(g, sequences, 2), self.dropout)
            sequences = []
            for direction in range(self.directions):
                index = layer * self.directions + direction
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                sequence, h_end, c_end = self._direction(
                    ctx,
                    layer_input,
                    suffix,
                    direction == 1,
                    initial_state(g, h0, index, self.output_size, rows),
                    initial_state(g, c0, index, self.hidden_size, rows),
                    lengths,
                    cell_states,
                )
                sequences.append(sequence)
                finals["h_n"].append(h_end)
                finals["c_n"].append(c_end)
        return sequences, finals

    def _check_dtypes(self, g: Any, x: int, h0: Any, c0: Any, extra: Any) -> None:
        for what, node in (("x", x), ("h0", h0), ("c0", c0)):
            if node is not None and g.dtype(node) != "float32":
                raise ValueError(f"expects {what} as float32, got {g.dtype(node)}")
        if extra is not None:
            want = "int32" if self.lengths else "float32"
            if g.dtype(extra) != want:
                which = "lengths" if self.lengths else "key_padding_mask"
                raise ValueError(f"expects {which} as {want}, got {g.dtype(extra)}")

    def _carry(self, ctx: EmitContext, finals: dict[str, list[int]]) -> None:
        """Writes the final states into a stateful layer's state variables (in training)."""
        g = ctx.graph
        for key, name in (("h_n", "state_h"), ("c_n", "state_c")):
            if ctx.training and ctx.has_variable(name):
                rows = final_states(g, finals[key], self.batch_size)
                ctx.effects.append(op(g, "assign", ctx.variable(name), rows))

    def _direction(
        self,
        ctx: EmitContext,
        x: int,
        suffix: str,
        reverse: bool,
        h0: int,
        c0: int,
        lengths: Any,
        cell_states: bool,
    ) -> tuple[int, int, int | None]:
        """One layer and direction: its output sequence and final h and c (c: LSTM only,
        and in inference only with ``cell_states``)."""
        g = ctx.graph
        hidden, out = self.hidden_size, self.output_size
        # Inference keeps no gates for a backward pass (lean): only h, and an LSTM's c unless
        # no caller reads it (sequence_only). An output of h alone is the sequence: no copy.
        lean = not ctx.training
        # A GRU's n gate scales W_hn h alone by r: its input projection stays a product apart.
        projected, extra = input_projection(
            g, x, ctx.variable(f"weight_ih{suffix}"), in_loop=self.gates != 3
        )
        b_hn = bias = None
        if self.bias:
            b_ih, b_hh = ctx.variable(f"bias_ih{suffix}"), ctx.variable(f"bias_hh{suffix}")
            if self.gates == 3:
                # GRU: b_hn sits inside r * (W_hn h + b_hn); the other hidden biases add to x.
                b_hn = op(g, "slice", b_hh, axis=0, start=2 * hidden, end=3 * hidden)
                b_rz = op(g, "slice", b_hh, axis=0, start=0, end=2 * hidden)
                b_hh = op(g, "pad", b_rz, axis=0, before=0, after=hidden)
            # The recurrence adds the biases on every step: no pass over the projection.
            bias = op(g, "add", b_ih, b_hh)
        if self.gates == 3 and b_hn is None:
            b_hn = g.constant(np.zeros(hidden, dtype=np.float32))
        operands = [*projected, h0]
        if self._has_cell_state():
            operands.append(c0)
        operands.append(ctx.variable(f"weight_hh{suffix}"))
        if out != hidden:
            operands.append(ctx.variable(f"weight_hr{suffix}"))
        if b_hn is not None:
            operands.append(b_hn)
        if bias is not None:
            operands.append(bias)
        if lengths is not None:
            operands.append(lengths)
        sequence_only = lean and not cell_states and self._has_cell_state()
        if sequence_only:
            extra["sequence_only"] = True
        packed = op(g, "recurrence", *operands, cell=self.cell, reverse=reverse, lean=lean, **extra)
        h_alone = lean and (sequence_only or not self._has_cell_state())
        sequence = packed if h_alone else op(g, "slice", packed, axis=2, start=0, end=out)
        ends = [sequence] + ([lengths] if lengths is not None else [])
        h_end = op(g, "sequence_end", *ends, reverse=reverse)
        c_end = None
        if self._has_cell_state() and not sequence_only:
            cells = op(g, "slice", packed, axis=2, start=out, end=out + hidden)
            c_end = op(g, "sequence_end", cells, *ends[1:], reverse=reverse)
        return sequence, h_end, c_end


@register_layer
class SimpleRNN(_Recurrent):
    __doc__ = (
        """An Elman RNN, as ``torch.nn.RNN``: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.
"""
        + COMMON_ARGS.replace(
            "        name:", '        nonlinearity: ``"tanh"`` or ``"relu"``.\n        name:'
        )
        + """
    Example:
        >>> x = gm.Input((None, 8))
        >>> SimpleRNN(8, 16, nonlinearity="relu")(x).shape
        (None, None, 16)
"""
    )

    kind = "simple_rnn"
    title = "SimpleRNN"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        **options: Any,
    ):
        super().__init__(input_size, hidden_size, num_layers, **options)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"SimpleRNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            )
        self.nonlinearity = nonlinearity

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "nonlinearity": self.nonlinearity}

    @property
    def cell(self) -> str:
        return f"rnn_{self.nonlinearity}"


@register_layer
class LSTM(_Recurrent):
    __doc__ = (
        """A long short-term memory layer, as ``torch.nn.LSTM`` (gates i, f, g, o in that
    order in ``weight_ih`` and ``weight_hh``; with ``proj_size``, ``h`` is projected by
    ``weight_hr`` (proj_size, H) and ``H_out`` is ``proj_size``).
"""
        + COMMON_ARGS.replace(
            "        name:",
            "        proj_size: 0, or the projection's size (< hidden_size).\n        name:",
        )
        + """
    Example:
        >>> x = gm.Input((None, 8))
        >>> LSTM(8, 16, num_layers=2, output="last")(x).shape
        (None, 16)
        >>> sequence, h_n, c_n = LSTM(8, 16, return_state=True)(x)
        >>> h_n.shape, LSTM(8, 16)(x, initial_state=[h_n, c_n]).shape
        ((None, 1, 16), (None, None, 16))
"""
    )

    kind = "lstm"
    title = "LSTM"
    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        proj_size: int = 0,
        **options: Any,
    ):
        super().__init__(input_size, hidden_size, num_layers, **options)
        label = "LSTM" if self.name is None else f"LSTM '{self.name}'"
        if (
            isinstance(proj_size, bool)
            or not isinstance(proj_size, int)
            or not 0 <= proj_size < hidden_size
        ):
            raise ValueError(
                f"{label} proj_size must be an int in [0, hidden_size={hidden_size}), got {proj_size!r}"
            )
        self.proj_size = proj_size

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "proj_size": self.proj_size}

    def _outputs(self) -> tuple[str, ...]:
        return OUTPUTS

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def _has_cell_state(self) -> bool:
        return True

    @property
    def cell(self) -> str:
        return "lstm"


@register_layer
class GRU(_Recurrent):
    __doc__ = (
        """A gated recurrent unit layer, as ``torch.nn.GRU`` (gates r, z, n in that order;
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``).
"""
        + COMMON_ARGS
        + """
    Example:
        >>> x = gm.Input((None, 8))
        >>> GRU(8, 16, bidirectional=True)(x).shape
        (None, None, 32)
"""
    )

    kind = "gru"
    title = "GRU"
    gates = 3

    @property
    def cell(self) -> str:
        return "gru"
