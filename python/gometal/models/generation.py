"""Text generation from a language model: greedy decoding or sampling with temperature,
top-k and top-p (nucleus) filtering, deterministic for a seed.

A model with a fixed context of ``block_size`` tokens gets a shorter context padded on
the right, which a causal model never reads, and a longer one cropped to its last
``block_size`` tokens (as nanoGPT crops it); a model whose input length is ``None`` reads
the whole context. A GPT-shaped model (``gm.models.GPT``) keeps the keys and values of the
context in the engine (``decoding.KVCacheDecoder``), a recurrent language model (Embedding,
LSTM/GRU/SimpleRNN, Dense) its layers' states (``recurrent_decoding.RecurrentDecoder``): one
native call per new token while the context fits, then a recomputation of the cropped
window per token, the same tokens as recomputing the context every time
(``kv_cache=False``, the only way for other models).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ..nn.model import Model
from .decoding import decoder_for


def _check_fraction(value: Any, what: str, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be in (0, 1], got {value}")
    return value


def filter_logits(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> np.ndarray:
    """Next-token probabilities after temperature, top-k and top-p filtering.

    Top-k keeps the ``k`` largest logits. Top-p keeps the smallest set of most probable
    tokens whose probabilities sum to at least ``p`` (always at least one token), as
    Hugging Face's ``TopPLogitsWarper``. Ties at the top-k boundary are all kept.

    Args:
        logits: ``(vocab,)`` scores of the next token.
        temperature: divides the logits (> 0).
        top_k: keep this many tokens, or ``None``.
        top_p: keep this much probability mass, or ``None``.

    Returns:
        ``(vocab,)`` float64 probabilities summing to 1, zero outside the kept tokens.

    Example:
        >>> filter_logits(np.array([1.0, 3.0, 2.0]), top_k=1).tolist()
        [0.0, 1.0, 0.0]
    """
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    scores = np.asarray(logits, dtype=np.float64) / float(temperature)
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if top_k < scores.size:
            kth = np.sort(scores)[-top_k]
            scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if top_p is not None:
        top_p = _check_fraction(top_p, "top_p")
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # A token stays while the mass before it is below p: the first always stays.
        keep = np.concatenate([[True], cumulative[:-1] < top_p])
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


def generate(
    model: Model,
    prompt: Any,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    seed: int = 0,
    kv_cache: bool = True,
    on_token: Callable[[int, np.ndarray], Any] | None = None,
) -> np.ndarray:
    """Continues ``prompt`` with ``max_new_tokens`` tokens from a causal language model.

    Args:
        model: a model from ``(N, block_size)`` int32 ids to ``(N, block_size, vocab)``
            logits (``gm.models.GPT``, or a recurrent language model whose
            ``block_size`` may be ``None``).
        prompt: 1-D token ids (at least one), or 2-D ``(N, T)`` to continue N prompts.
        max_new_tokens: tokens to add (>= 0).
        temperature: divides the logits before sampling (> 0).
        top_k: sample among the ``k`` most likely tokens only.
        top_p: sample among the most likely tokens holding this probability mass.
        greedy: take the most likely token instead of sampling.
        seed: the sampling generator's seed: the same seed gives the same text.
        kv_cache: decode a GPT-shaped model with its KV cache in the engine, and a
            recurrent one with its states in the engine; ``False`` recomputes the whole
            context for every token (the same tokens, slower).
        on_token: called as ``on_token(step, token_ids)`` right after each new token is
            chosen: ``step`` counts from 0 and ``token_ids`` is a fresh ``(N,)`` int32
            array holding the new token of each sequence (``N`` = 1 for a 1-D prompt).
            It does not change the tokens. An exception it raises stops the generation
            and propagates to the caller (a streaming server stops this way when its
            client goes away).

    Returns:
        The prompt followed by the new tokens, int32, shaped as ``prompt`` plus
        ``max_new_tokens`` columns.

    Raises:
        TypeError, ValueError: a bad argument, a prompt longer than the model's
            ``block_size``, or token ids outside the vocabulary (named by the model's
            embedding).

    Example:
        >>> ids = generate(model, tokenizer.encode("def "), 64, top_k=20, seed=1)  # doctest: +SKIP
        >>> ids = generate(model, prompt, 8, on_token=lambda step, t: print(step, t))  # doctest: +SKIP
    """
    ids = np.asarray(prompt)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"prompt must hold integer token ids, got dtype {ids.dtype}")
    single = ids.ndim == 1
    ids = np.atleast_2d(ids).astype(np.int32)
    if ids.ndim != 2 or ids.shape[1] < 1:
        raise ValueError(f"prompt must be (T,) or (N, T) token ids with T >= 1, got {ids.shape}")
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if on_token is not None and not callable(on_token):
        raise TypeError(f"on_token must be a callable or None, got {on_token!r:.80}")
    (block,) = model.input_shape
    block = None if block < 0 else block  # a symbolic length: the context has no limit
    if block is not None and ids.shape[1] > block:
        raise ValueError(
            f"the prompt has {ids.shape[1]} tokens, more than the model's context of "
            f"block_size {block}"
        )
    rng = np.random.default_rng(seed)

    def choose(logits: np.ndarray) -> np.ndarray:
        if greedy:
            return logits.argmax(axis=-1)
        chosen = []
        for row in logits:
            probs = filter_logits(row, temperature, top_k, top_p)
            chosen.append(int(rng.choice(probs.size, p=probs)))
        return np.asarray(chosen)

    prompt_length = ids.shape[1]
    out = np.empty((ids.shape[0], prompt_length + max_new_tokens), np.int32)
    out[:, :prompt_length] = ids
    decoder = decoder_for(model, ids.shape[0]) if kv_cache and max_new_tokens else None
    with decoder.lock if decoder is not None else contextlib.nullcontext():
        if decoder is not None:
            decoder.sync_weights()  # the model's weights now, after any training
        for length in range(prompt_length, out.shape[1]):
            if decoder is None:
                logits = _recomputed_logits(model, out[:, :length], block)
            elif length == prompt_length or (block is not None and decoder.length >= block):
                # The first token, and every token once the context is full: the (cropped)
                # window from scratch.
                start = 0 if block is None else max(0, length - block)
                logits = decoder.prefill(out[:, start:length])
            else:
                logits = decoder.decode(out[:, length - 1])
            out[:, length] = choose(logits)
            if on_token is not None:
                on_token(length - prompt_length, out[:, length].copy())
    return out[0] if single else out


def _recomputed_logits(model: Model, ids: np.ndarray, block: int | None) -> np.ndarray:
    if block is None:
        return np.asarray(model.predict(ids))[:, -1, :]
    context = ids[:, -block:]
    length = context.shape[1]
    window = np.zeros((ids.shape[0], block), np.int32)
    window[:, :length] = context
    return np.asarray(model.predict(window))[:, length - 1, :]
