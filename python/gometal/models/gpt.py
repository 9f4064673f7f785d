"""``GPT``: a decoder-only transformer language model, as nanoGPT's, built from
``gm.layers``: token and learned position embeddings, ``n_layer`` pre-norm causal blocks
(``TransformerEncoder(norm_first=True, causal=True, activation="gelu")`` with a final
LayerNorm) and a language-model head tied to the token embedding.

Its layers are named after nanoGPT's modules (``wte``, ``wpe``, ``drop``, ``h``,
``lm_head``); ``gpt_weights_from_nanogpt`` maps a nanoGPT ``state_dict`` onto it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..nn import layers as L
from ..nn.layers.embedding import TiedLinear
from ..nn.model import Model
from ..nn.tensor import Input


def GPT(
    vocab_size: int,
    block_size: int,
    n_layer: int,
    n_head: int,
    n_embd: int,
    dropout: float = 0.0,
    bias: bool = True,
    seed: int = 0,
) -> Model:
    """Builds a GPT for ``(N, block_size)`` int32 token ids giving ``(N, block_size,
    vocab_size)`` next-token logits.

    Weights start as nanoGPT's: ``N(0, 0.02)`` for every matrix and embedding, and
    ``0.02 / sqrt(2 n_layer)`` for the projections into the residual stream; zero biases;
    LayerNorms at one.

    Args:
        vocab_size: tokens in the vocabulary.
        block_size: the context length (the model's input length).
        n_layer: transformer blocks.
        n_head: attention heads; ``n_embd`` divides by it.
        n_embd: the embedding width.
        dropout: dropout on embeddings, attention weights and residual branches.
        bias: biases in the linear maps and LayerNorms.
        seed: the seed of the initial weights (and of the model's engine).

    Returns:
        The ``gm.Model``; train it with ``loss="cross_entropy"`` on ``(x, y)`` windows
        whose ``y`` is ``x`` shifted by one.

    Example:
        >>> model = GPT(65, 64, n_layer=4, n_head=4, n_embd=128)  # doctest: +SKIP
        >>> model.predict(np.zeros((1, 64), np.int32)).shape  # doctest: +SKIP
        (1, 64, 65)
    """
    ids = Input((block_size,), name="tokens", dtype="int32")
    h = L.Embedding(vocab_size, n_embd, name="wte")(ids)
    h = L.PositionalEmbedding(block_size, n_embd, name="wpe")(h)
    h = L.Dropout(dropout, name="drop")(h)
    blocks = L.TransformerEncoder(
        n_layer,
        n_embd,
        n_head,
        dim_feedforward=4 * n_embd,
        dropout=dropout,
        activation="gelu",
        norm_first=True,
        bias=bias,
        causal=True,
        final_norm=True,
        name="h",
    )
    logits = TiedLinear("wte", vocab_size, n_embd, name="lm_head")(blocks(h))
    model = Model(ids, logits, seed=seed)
    model.set_weights(_nanogpt_init(model, n_layer, seed))
    return model


def _nanogpt_init(model: Model, n_layer: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in model.weight_shapes.items():
        if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            weights[name] = np.ones(shape, np.float32)
        elif len(shape) == 1:
            weights[name] = np.zeros(shape, np.float32)
        else:
            # The residual projections (attention out, MLP out) are scaled down by depth.
            residual = name.endswith(("out_proj.weight", "linear2.weight"))
            std = 0.02 / np.sqrt(2 * n_layer) if residual else 0.02
            weights[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return weights


def gpt_weights_from_nanogpt(state: Mapping[str, Any], n_layer: int) -> dict[str, np.ndarray]:
    """A nanoGPT ``state_dict`` (``transformer.wte.weight``, ``transformer.h.0.attn.c_attn
    .weight``, ...) as ``GPT``'s weights.

    Args:
        state: the state dict (tensors or arrays).
        n_layer: the model's blocks.

    Returns:
        The weights by gometal name, for ``model.set_weights``.

    Example:
        >>> model.set_weights(gpt_weights_from_nanogpt(net.state_dict(), 4))  # doctest: +SKIP
    """

    def get(key: str) -> np.ndarray:
        value = state[key]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        return np.array(value, dtype=np.float32)

    out = {
        "wte.weight": get("transformer.wte.weight"),
        "wpe.weight": get("transformer.wpe.weight"),
    }
    names = {
        "ln_1": "norm1",
        "ln_2": "norm2",
        "attn.c_attn": "self_attn.in_proj",
        "attn.c_proj": "self_attn.out_proj.",
        "mlp.c_fc": "linear1.",
        "mlp.c_proj": "linear2.",
    }
    for i in range(n_layer):
        for source, target in names.items():
            for part in ("weight", "bias"):
                key = f"transformer.h.{i}.{source}.{part}"
                if key not in state:
                    continue
                if source == "attn.c_attn":
                    name = f"h.layers.{i}.{target}_{part}"
                elif target.endswith("."):
                    name = f"h.layers.{i}.{target}{part}"
                else:
                    name = f"h.layers.{i}.{target}.{part}"
                out[name] = get(key)
    for part in ("weight", "bias"):
        if f"transformer.ln_f.{part}" in state:
            out[f"h.norm.{part}"] = get(f"transformer.ln_f.{part}")
    return out
