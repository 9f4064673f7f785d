"""Incremental decoding of a recurrent language model with its states kept in the engine.

``RecurrentDecoder`` compiles two functions of one engine from a model's own layers:
``prefill`` runs the prompt (T tokens per sequence, one plan per T) from zero states, and
``decode`` runs one token per sequence from the states the previous call left. Both write
every recurrent layer's final states (``h_n``, an LSTM's ``c_n``) into engine variables of
``(N, num_layers, H)``, so a generated token is one native call that neither recomputes the
prefix nor hands the states to Python. The decoder holds its own copy of the model's
weights, refreshed by ``sync_weights`` (``generate`` does it on every call). A prompt always
starts from zero states: the states a stateful layer carries between training batches are
not read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ..graph.composites import op
from ..nn import layers as L
from ..nn.layers.base import EmitContext
from ..nn.model import Model
from .engine_decoder import EngineDecoder

RECURRENT_LAYERS = (L.SimpleRNN, L.LSTM, L.GRU)
# Layers that act on each position alone, so a step needs nothing of the earlier ones.
POSITIONWISE_LAYERS = (
    L.Embedding,
    L.Dense,
    L.TiedLinear,
    L.Dropout,
    L.Add,
    L.Multiply,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.GELU,
    L.Sigmoid,
    L.Tanh,
    L.Swish,
    L.SiLU,
    L.Mish,
    L.Hardswish,
)


def _causal_recurrent(layer: L.Layer) -> bool:
    """A recurrent layer that reads its steps in order and returns them all (and only them:
    a call that also gives its states, ``return_state``, is not decoded token by token)."""
    config = layer.get_config()
    return (
        not config["bidirectional"]
        and config["output"] == "sequence"
        and not config["return_state"]
        and not config["initial_state"]
        and not config["lengths"]
        and not config["key_padding_mask"]
    )


def is_recurrent_language_model(model: Model) -> bool:
    """Whether ``model`` is a recurrent language model that ``RecurrentDecoder`` can run
    one token at a time.

    Such a model maps ``(N, T)`` int32 token ids to ``(N, T, vocab)`` logits through
    unidirectional ``SimpleRNN``, ``LSTM`` or ``GRU`` layers (at least one, each taking
    only ``x`` and returning the whole sequence) and layers that act on each position alone
    (``Embedding``, ``Dense``, ``Dropout``, activations, ``Add``, ...).

    Args:
        model: any ``gm.Model``.

    Returns:
        ``True`` when the model qualifies (``generate`` then decodes with its states in the
        engine), else ``False``.

    Example:
        >>> is_recurrent_language_model(char_lstm)  # doctest: +SKIP
        True
    """
    graph = model.graph
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return False
    if graph.inputs[0].dtype != "int32" or len(model.input_shape) != 1:
        return False
    if len(model.output_shape) != 2:
        return False
    recurrent = 0
    for call in graph.calls:
        if type(call.layer) in RECURRENT_LAYERS and _causal_recurrent(call.layer):
            recurrent += 1
        elif type(call.layer) not in POSITIONWISE_LAYERS:
            return False
    return recurrent > 0


class RecurrentDecoder(EngineDecoder):
    """Prefill and one-token decode steps of a recurrent language model for ``batch_size``
    sequences, with every recurrent layer's states in the engine.

    Args:
        model: a model that ``is_recurrent_language_model`` accepts.
        batch_size: sequences decoded together.

    Raises:
        ValueError: the model does not qualify, or the batch size is not a positive int.

    Example:
        >>> decoder = RecurrentDecoder(model)  # doctest: +SKIP
        >>> logits = decoder.prefill(np.array([[1, 2, 3]], np.int32))  # (1, vocab)
        >>> logits = decoder.decode(np.array([4], np.int32))  # after 1, 2, 3, 4
    """

    def __init__(self, model: Model, batch_size: int = 1):
        if not is_recurrent_language_model(model):
            raise ValueError(
                "RecurrentDecoder needs a recurrent language model: one int32 (T,) input, "
                "(T, vocab) logits, unidirectional SimpleRNN/LSTM/GRU layers returning the "
                "sequence and position-wise layers (Embedding, Dense, Dropout, activations), "
                f"got layers {[type(x).__name__ for x in model.layers]}"
            )
        super().__init__(model, batch_size)
        g = _core.Graph()
        variables = model.declare_variables(g)
        # One pair of state variables per recurrent layer call, in the order of the calls.
        self._states: list[tuple[int, int | None]] = []
        for index, call in enumerate(model.graph.calls):
            if type(call.layer) in RECURRENT_LAYERS:
                self._states.append(self._declare_states(g, call.layer, index))
        tokens = g.input("tokens", (-1, _core.dim_symbol("seq")), "int32")
        token = g.input("token", (-1, 1), "int32")
        prefill_logits, prefill_writes = self._forward(g, variables, tokens, from_zero=True)
        decode_logits, decode_writes = self._forward(g, variables, token, from_zero=False)
        engine = _core.Engine(g, seed=model.seed, backend=model.backend)
        for function, inputs, logits, writes in (
            ("prefill", tokens, prefill_logits, prefill_writes),
            ("decode", token, decode_logits, decode_writes),
        ):
            engine.define(
                function, inputs=[inputs], outputs=[logits], effects=writes, advance_rng=False
            )
        self.start(engine)

    def _declare_states(self, g: _core.Graph, layer: Any, index: int) -> tuple[int, int | None]:
        rows = (self.batch_size, layer.num_layers)
        h = g.variable(f"decoder.{index}.{layer.name}.h", (*rows, layer.output_size))
        if not isinstance(layer, L.LSTM):
            return h, None
        return h, g.variable(f"decoder.{index}.{layer.name}.c", (*rows, layer.hidden_size))

    def _forward(
        self, g: _core.Graph, variables: dict[str, int], tokens: int, from_zero: bool
    ) -> tuple[int, list[int]]:
        """The model's logits for ``tokens`` and the writes of every final state; the
        recurrent layers start from zeros (a prefill) or from their state variables."""
        ctx = EmitContext(g, training=False, variables=variables)
        (source,) = self.model.graph.inputs
        values = {id(source): tokens}
        states = iter(self._states)
        writes = []
        for call in self.model.graph.calls:
            ctx.scope = call.layer.name or ""
            inputs = [values[id(t)] for t in call.inputs]
            if type(call.layer) in RECURRENT_LAYERS:
                h, c = next(states)
                start = {} if from_zero else {"h0": h, "c0": c}
                sequence, h_n, c_n = call.layer.emit_with_states(
                    ctx, inputs[0], batch_size=self.batch_size, **start
                )
                writes.append(op(g, "assign", h, h_n))
                if c is not None:
                    writes.append(op(g, "assign", c, c_n))
                values[id(call.output)] = sequence
            else:
                values[id(call.output)] = call.layer.emit(ctx, inputs)
        (output,) = self.model.graph.outputs
        return values[id(output)], writes + ctx.effects

    def prefill(self, ids: Any) -> np.ndarray:
        """Runs ``ids`` (N, T) from zero states, keeping the final states, and returns the
        logits of the token after them.

        Args:
            ids: ``(batch_size, T)`` token ids, ``T >= 1``.

        Returns:
            ``(batch_size, vocab)`` float32 logits after the last token.

        Raises:
            TypeError, ValueError: ids of the wrong dtype or shape, or a token outside the
                vocabulary (the states are then left as they were).

        Example:
            >>> decoder.prefill(prompt[None]).shape  # doctest: +SKIP
            (1, 65)
        """
        ids = self.prefill_ids(ids)
        (logits,) = self.engine.run("prefill", [ids])
        self._length = ids.shape[1]
        return logits[:, -1]

    def decode(self, tokens: Any) -> np.ndarray:
        """Runs one token per sequence from the kept states and returns the next logits.

        Args:
            tokens: ``(batch_size,)`` token ids.

        Returns:
            ``(batch_size, vocab)`` float32 logits.

        Raises:
            TypeError, ValueError: tokens of the wrong dtype or shape, no prefill yet, or a
                token outside the vocabulary (the states are then left as they were).

        Example:
            >>> decoder.decode(np.array([7], np.int32)).shape  # doctest: +SKIP
            (1, 65)
        """
        tokens = self.decode_tokens(tokens)
        if self._length == 0:
            raise ValueError("RecurrentDecoder decode needs a prefill first: no states yet")
        (logits,) = self.engine.run("decode", [tokens])
        self._length += 1
        return logits[:, 0]
