"""Incremental decoding of a GPT with the keys and values of earlier positions kept in the
engine (the KV cache).

``KVCacheDecoder`` compiles two functions of one engine from a ``gm.models.GPT``'s layers:
``prefill`` runs T tokens (one plan per T) from position 0 with the fused causal attention
and stores their keys and values; ``decode`` runs one token per sequence at the current
cache length, a value read when the step runs, so every generated token is one native call
of one plan (``cached_attention`` over the cache, ``cache_write`` of the new key and value).
The caches are engine variables of ``(N, heads, block_size, head_dim)``; the decoder holds
its own copy of the model's weights, refreshed by ``sync_weights`` (``generate`` does it on
every call).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from ..graph.composites import gather, layer_norm, matmul, op
from ..nn import layers as L
from ..nn.layers.embedding import TiedLinear
from ..nn.model import Model
from .engine_decoder import EngineDecoder
from .recurrent_decoding import RecurrentDecoder, is_recurrent_language_model


@dataclass(frozen=True)
class GPTLayout:
    """What a decoder needs to know of a GPT-shaped model (``gm.models.GPT``'s layers)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    layer_norm_eps: float
    activation: str
    bias: bool
    # The layers' names, which prefix their weights' names.
    token_embedding: str = "wte"
    position_embedding: str = "wpe"
    blocks: str = "h"

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def gpt_layout(model: Model) -> GPTLayout | None:
    """The layout of a model built as ``gm.models.GPT`` builds one, or ``None``.

    The model's layers must be an ``Embedding``, a learned ``PositionalEmbedding``, a
    ``Dropout``, a pre-norm causal ``TransformerEncoder`` with a final norm, and a
    ``TiedLinear`` head on that embedding, in that order (any names).

    Args:
        model: any ``gm.Model``.

    Returns:
        The layout, or ``None`` when the model is not GPT-shaped (``generate`` then
        recomputes the context for every token).

    Example:
        >>> gpt_layout(gm.models.GPT(65, 64, 2, 2, 32)).n_layer  # doctest: +SKIP
        2
    """
    kinds = [type(layer) for layer in model.layers]
    if kinds != [L.Embedding, L.PositionalEmbedding, L.Dropout, L.TransformerEncoder, TiedLinear]:
        return None
    wte, wpe, _, blocks, head = model.layers
    stack = blocks.get_config()
    learned = wpe.get_config()["kind"] == "learned"
    if not (
        learned
        and stack["norm_first"]
        and stack["causal"]
        and stack["final_norm"]
        and not stack["key_padding_mask"]
        and head.get_config()["tied_to"] == wte.name
        and len(model.input_shape) == 1
    ):
        return None
    return GPTLayout(
        vocab_size=wte.get_config()["num_embeddings"],
        block_size=model.input_shape[0],
        n_layer=stack["num_layers"],
        n_head=stack["nhead"],
        n_embd=stack["d_model"],
        layer_norm_eps=stack["layer_norm_eps"],
        activation=stack["activation"],
        bias=stack["bias"],
        token_embedding=wte.name,
        position_embedding=wpe.name,
        blocks=blocks.name,
    )


class _Builder:
    """Emits the GPT's forward pass for new tokens on a graph whose variables carry the
    model's weight names, with the per-layer caches beside them."""

    def __init__(
        self,
        g: _core.Graph,
        layout: GPTLayout,
        weights: Iterable[tuple[str, tuple[int, ...]]],
        batch: int,
    ):
        self.g, self.layout = g, layout
        self.var = {name: g.variable(name, shape) for name, shape in weights}
        shape = (batch, layout.n_head, layout.block_size, layout.head_dim)
        self.caches = [
            (g.variable(f"cache.{i}.key", shape), g.variable(f"cache.{i}.value", shape))
            for i in range(layout.n_layer)
        ]
        self.start = g.constant(np.zeros(1, np.int32), "int32")  # a prefill writes from 0

    def linear(self, x: int, prefix: str) -> int:
        out = matmul(self.g, x, self.var[f"{prefix}weight"], transpose_b=True)
        return op(self.g, "add", out, self.var[f"{prefix}bias"]) if self.layout.bias else out

    def norm(self, x: int, prefix: str) -> int:
        bias = self.var[f"{prefix}bias"] if self.layout.bias else None
        return layer_norm(self.g, x, self.var[f"{prefix}weight"], bias, self.layout.layer_norm_eps)

    def split_heads(self, x: int, single: bool) -> int:
        """(N, E) -> (N, H, 1, D) when ``single``, else (N, T, E) -> (N, H, T, D)."""
        g, lay = self.g, self.layout
        shape = g.shape(x)
        if single:
            return op(g, "reshape", x, shape=[shape[0], lay.n_head, 1, lay.head_dim])
        split = op(g, "reshape", x, shape=[shape[0], shape[1], lay.n_head, lay.head_dim])
        return op(g, "transpose", split, perm=[0, 2, 1, 3])

    def merge_heads(self, x: int, single: bool) -> int:
        g = self.g
        batch, heads, length, width = g.shape(x)
        if single:
            return op(g, "reshape", x, shape=[batch, heads * width])
        moved = op(g, "transpose", x, perm=[0, 2, 1, 3])
        return op(g, "reshape", moved, shape=[batch, length, heads * width])

    def forward(self, tokens: int, positions: int, position: int | None) -> tuple[int, list[int]]:
        """Logits and the cache writes for tokens (N, T) at ``positions`` (T,) from position
        0 (a prefill, ``position`` None), or for one token per sequence, (N, 1) read as (N,)
        rows, at the run-time ``position`` (1,) after the cached ones (a decode step)."""
        single = position is not None
        g, lay = self.g, self.layout
        table = self.var[f"{lay.token_embedding}.weight"]
        x = gather(g, table, tokens)
        if single:
            x = op(g, "reshape", x, shape=[g.shape(x)[0], lay.n_embd])
        x = op(g, "add", x, gather(g, self.var[f"{lay.position_embedding}.weight"], positions))
        writes = []
        width = lay.n_embd
        for i, (key_cache, value_cache) in enumerate(self.caches):
            prefix = f"{lay.blocks}.layers.{i}."
            packed = matmul(
                g,
                self.norm(x, f"{prefix}norm1."),
                self.var[f"{prefix}self_attn.in_proj_weight"],
                transpose_b=True,
            )
            if lay.bias:
                packed = op(g, "add", packed, self.var[f"{prefix}self_attn.in_proj_bias"])
            axis = len(g.shape(packed)) - 1
            q, k, v = (
                self.split_heads(
                    op(g, "slice", packed, axis=axis, start=j * width, end=(j + 1) * width), single
                )
                for j in range(3)
            )
            if single:
                attended = op(
                    g, "cached_attention", q, key_cache, value_cache, k, v, position, scale=0.0
                )
            else:
                attended = op(g, "attention", q, k, v, causal=True, scale=0.0)
            offset = position if single else self.start
            writes += [
                op(g, "cache_write", key_cache, k, offset),
                op(g, "cache_write", value_cache, v, offset),
            ]
            x = op(
                g,
                "add",
                x,
                self.linear(self.merge_heads(attended, single), f"{prefix}self_attn.out_proj."),
            )
            inner = self.linear(self.norm(x, f"{prefix}norm2."), f"{prefix}linear1.")
            # The engine's gelu op, as the training layers emit it (one pass, not the erf chain).
            inner = op(g, "relu" if lay.activation == "relu" else "gelu", inner)
            x = op(g, "add", x, self.linear(inner, f"{prefix}linear2."))
        logits = matmul(g, self.norm(x, f"{lay.blocks}.norm."), table, transpose_b=True)
        return logits, writes


class KVCacheDecoder(EngineDecoder):
    """Prefill and one-token decode steps of a GPT-shaped model for ``batch_size`` sequences
    of one length, with the KV cache in the engine.

    Args:
        model: a ``gm.models.GPT`` (see ``gpt_layout``).
        batch_size: sequences decoded together.

    Raises:
        ValueError: the model is not GPT-shaped, or the batch size is not a positive int.

    Example:
        >>> decoder = KVCacheDecoder(model)  # doctest: +SKIP
        >>> logits = decoder.prefill(np.array([[1, 2, 3]], np.int32))  # (1, vocab)
        >>> logits = decoder.decode(np.array([4], np.int32))  # position 3
    """

    def __init__(self, model: Model, batch_size: int = 1):
        layout = gpt_layout(model)
        if layout is None:
            raise ValueError(
                "KVCacheDecoder needs a GPT-shaped model (gm.models.GPT's layers: Embedding, "
                "learned PositionalEmbedding, Dropout, a pre-norm causal TransformerEncoder with "
                f"a final norm, TiedLinear), got layers {[type(x).__name__ for x in model.layers]}"
            )
        super().__init__(model, batch_size)
        self.layout = layout
        g = _core.Graph()
        builder = _Builder(g, layout, model.weight_shapes.items(), batch_size)
        seq = _core.dim_symbol("seq")
        tokens = g.input("tokens", (batch_size, seq), "int32")
        positions = g.input("positions", (seq,), "int32")
        prefill_logits, prefill_writes = builder.forward(tokens, positions, None)
        token = g.input("token", (batch_size, 1), "int32")
        position = g.input("position", (1,), "int32")
        decode_logits, decode_writes = builder.forward(token, position, position)
        engine = _core.Engine(g, seed=model.seed, backend=model.backend)
        engine.define(
            "prefill",
            inputs=[tokens, positions],
            outputs=[prefill_logits],
            effects=prefill_writes,
            advance_rng=False,
        )
        engine.define(
            "decode",
            inputs=[token, position],
            outputs=[decode_logits],
            effects=decode_writes,
            advance_rng=False,
        )
        self._position = np.zeros(1, np.int32)
        self.start(engine)

    def prefill(self, ids: Any) -> np.ndarray:
        """Runs ``ids`` (N, T) from position 0, filling the cache, and returns the logits of
        the token after them.

        Args:
            ids: ``(batch_size, T)`` token ids, ``1 <= T <= block_size``.

        Returns:
            ``(batch_size, vocab)`` float32 logits at position ``T - 1``.

        Raises:
            TypeError, ValueError: ids of the wrong dtype or shape, T outside
                ``[1, block_size]``, or a token outside the vocabulary.

        Example:
            >>> decoder.prefill(prompt[None]).shape  # doctest: +SKIP
            (1, 65)
        """
        ids = self.prefill_ids(ids)
        block = self.layout.block_size
        if ids.shape[1] > block:
            raise ValueError(
                f"KVCacheDecoder prefill of {ids.shape[1]} tokens does not fit the context of "
                f"block_size {block}"
            )
        self._length = 0
        positions = np.arange(ids.shape[1], dtype=np.int32)
        (logits,) = self.engine.run("prefill", [ids, positions])
        self._length = ids.shape[1]
        return logits[:, -1]

    def decode(self, tokens: Any) -> np.ndarray:
        """Runs one token per sequence at position ``length`` and returns the next logits.

        Args:
            tokens: ``(batch_size,)`` token ids.

        Returns:
            ``(batch_size, vocab)`` float32 logits.

        Raises:
            TypeError, ValueError: tokens of the wrong dtype or shape, a full cache
                (``length == block_size``: prefill the cropped window instead), or a token
                outside the vocabulary.

        Example:
            >>> decoder.decode(np.array([7], np.int32)).shape  # doctest: +SKIP
            (1, 65)
        """
        tokens = self.decode_tokens(tokens)
        if self._length >= self.layout.block_size:
            raise ValueError(
                f"KVCacheDecoder cache is full: {self._length} positions of block_size "
                f"{self.layout.block_size}; prefill the last block_size tokens instead"
            )
        self._position[0] = self._length
        (logits,) = self.engine.run("decode", [tokens, self._position])
        self._length += 1
        return logits


# Decoders kept per model (while it lives), for its most recently used batch sizes: each
# holds caches of (batch, heads, block_size, head_dim) per layer, or a recurrent model's states.
MAX_DECODERS_PER_MODEL = 4
Decoder = KVCacheDecoder | RecurrentDecoder
_decoders: weakref.WeakKeyDictionary[Model, dict[int, Decoder]] = weakref.WeakKeyDictionary()
_decoders_lock = threading.Lock()


def decoder_for(model: Model, batch_size: int) -> Decoder | None:
    """The model's decoder for ``batch_size`` sequences (built once, kept while the model
    lives): a ``KVCacheDecoder`` for a GPT-shaped model, a ``RecurrentDecoder`` for a
    recurrent language model, else ``None``. Hold its ``lock`` while using it, and call its
    ``sync_weights`` first if the model may have trained since.

    Args:
        model: the language model.
        batch_size: sequences decoded together.

    Returns:
        The decoder, or ``None``.

    Example:
        >>> decoder = decoder_for(model, 1)  # doctest: +SKIP
        >>> with decoder.lock:  # doctest: +SKIP
        ...     decoder.sync_weights()
        ...     logits = decoder.prefill(prompt[None])
    """
    if gpt_layout(model) is not None:
        decoder_class: type[Decoder] = KVCacheDecoder
    elif is_recurrent_language_model(model):
        decoder_class = RecurrentDecoder
    else:
        return None
    with _decoders_lock:
        per_batch = _decoders.setdefault(model, {})
        decoder = per_batch.pop(batch_size, None)  # re-inserted last: most recently used
        if decoder is None:
            if len(per_batch) >= MAX_DECODERS_PER_MODEL:
                del per_batch[next(iter(per_batch))]
            decoder = decoder_class(model, batch_size)
        per_batch[batch_size] = decoder
    return decoder
