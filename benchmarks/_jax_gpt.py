"""The JAX peer of workloads D and D-long: nanoGPT's GPT in plain jax (no flax), the same
model as _torch_gpt.py (pre-norm blocks, causal attention, exact GELU, an LM head tied to
the token embedding), nanoGPT's initialisation, and AdamW with nanoGPT's decay groups (decay
on 2-D weights only), with jax.jit of the whole training step.

Weights are kept in torch's layouts and names (Linear weights (out, in)), so a nanoGPT
state_dict maps onto them one to one (``gpt_params_from_state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from _jax import jitted_step_loop
from _workload import (
    GPT_BETAS,
    GPT_EMBD,
    GPT_HEADS,
    GPT_LAYERS,
    GPT_VOCAB,
    GPT_WEIGHT_DECAY,
    LEARNING_RATE,
    Workload,
)

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default
INIT_STD = 0.02


def init_gpt_params(jax, vocab: int, block: int, n_layer: int, n_embd: int, seed: int = 0):
    """nanoGPT's initial weights: N(0, 0.02) for matrices and embeddings, 0.02 / sqrt(2
    n_layer) for the projections into the residual stream, zero biases, LayerNorms at one.

    Args:
        jax: the jax module.
        vocab: tokens in the vocabulary.
        block: the context length.
        n_layer: transformer blocks.
        n_embd: the embedding width.
        seed: the PRNG seed.

    Returns:
        A dict of float32 arrays named as nanoGPT's state_dict (the tied head is ``wte``).

    Example:
        >>> params = init_gpt_params(jax, 65, 64, 4, 128)  # doctest: +SKIP
    """
    jnp = jax.numpy
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 2 + 4 * n_layer))
    residual_std = INIT_STD / math.sqrt(2 * n_layer)

    def normal(shape, std=INIT_STD):
        return std * jax.random.normal(next(keys), shape, np.float32)

    d = n_embd
    params = {
        "transformer.wte.weight": normal((vocab, d)),
        "transformer.wpe.weight": normal((block, d)),
        "transformer.ln_f.weight": jnp.ones(d),
        "transformer.ln_f.bias": jnp.zeros(d),
    }
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        params |= {
            p + "ln_1.weight": jnp.ones(d),
            p + "ln_1.bias": jnp.zeros(d),
            p + "attn.c_attn.weight": normal((3 * d, d)),
            p + "attn.c_attn.bias": jnp.zeros(3 * d),
            p + "attn.c_proj.weight": normal((d, d), residual_std),
            p + "attn.c_proj.bias": jnp.zeros(d),
            p + "ln_2.weight": jnp.ones(d),
            p + "ln_2.bias": jnp.zeros(d),
            p + "mlp.c_fc.weight": normal((4 * d, d)),
            p + "mlp.c_fc.bias": jnp.zeros(4 * d),
            p + "mlp.c_proj.weight": normal((d, 4 * d), residual_std),
            p + "mlp.c_proj.bias": jnp.zeros(d),
        }
    return params


def gpt_params_from_state_dict(jax, state: Mapping[str, np.ndarray]) -> dict:
    """The JAX GPT's parameters from a nanoGPT state_dict (arrays, torch names): the tied
    ``lm_head.weight`` is dropped, since the head reads ``transformer.wte.weight``.

    Args:
        jax: the jax module.
        state: name -> array, as ``{k: v.numpy() for k, v in model.state_dict().items()}``.

    Returns:
        The parameter dict ``gpt_loss`` takes.

    Example:
        >>> params = gpt_params_from_state_dict(jax, torch_state)  # doctest: +SKIP
    """
    return {
        k: jax.numpy.asarray(np.asarray(v, np.float32))
        for k, v in state.items()
        if k != "lm_head.weight"
    }


def _layer_norm(jax, x, weight, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * weight + bias


def _linear(x, params, name):
    return x @ params[name + ".weight"].T + params[name + ".bias"]


def _causal_attention(jax, q, k, v, n_head: int):
    """Causal softmax attention of (N, T, C) queries, keys and values split into heads, as
    nanoGPT's manual path: heads first, then batched matmuls. On XLA:CPU this measured 1.8x
    faster (forward and backward at T = 1024) than jax.nn.dot_product_attention's (N, T,
    heads, width) layout."""
    jnp = jax.numpy
    batch, length, width = q.shape
    q, k, v = (t.reshape(batch, length, n_head, -1).transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(width // n_head)
    visible = jnp.tril(jnp.ones((length, length), bool))
    probs = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)


def gpt_logits(jax, params, tokens, n_layer: int, n_head: int):
    """(N, T, vocab) next-token logits of the GPT for (N, T) int token ids."""
    length = tokens.shape[1]
    wte = params["transformer.wte.weight"]
    x = wte[tokens] + params["transformer.wpe.weight"][:length]
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        h = _layer_norm(jax, x, params[p + "ln_1.weight"], params[p + "ln_1.bias"])
        q, k, v = jax.numpy.split(_linear(h, params, p + "attn.c_attn"), 3, axis=-1)
        y = _causal_attention(jax, q, k, v, n_head)
        x = x + _linear(y, params, p + "attn.c_proj")
        h = _layer_norm(jax, x, params[p + "ln_2.weight"], params[p + "ln_2.bias"])
        h = jax.nn.gelu(_linear(h, params, p + "mlp.c_fc"), approximate=False)
        x = x + _linear(h, params, p + "mlp.c_proj")
    x = _layer_norm(jax, x, params["transformer.ln_f.weight"], params["transformer.ln_f.bias"])
    return x @ wte.T  # the head tied to the token embedding


def gpt_loss(jax, params, tokens, targets, n_layer: int = GPT_LAYERS, n_head: int = GPT_HEADS):
    """Mean next-token cross-entropy of the GPT over every position of the batch.

    Args:
        jax: the jax module.
        params: the parameter dict (``init_gpt_params`` or ``gpt_params_from_state_dict``).
        tokens: (N, T) int token ids.
        targets: (N, T) int next tokens.
        n_layer: transformer blocks.
        n_head: attention heads.

    Returns:
        The scalar loss.

    Example:
        >>> loss = gpt_loss(jax, params, x, y)  # doctest: +SKIP
    """
    logits = gpt_logits(jax, params, tokens, n_layer, n_head)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jax.numpy.take_along_axis(log_probs, targets[..., None], axis=-1)
    return -picked.mean()


def gpt_adamw(optax, params, lr: float = LEARNING_RATE):
    """nanoGPT's AdamW: betas (0.9, 0.95), decay 0.1 on parameters of rank >= 2 only."""
    decayed = {name: value.ndim >= 2 for name, value in params.items()}
    return optax.adamw(
        lr, b1=GPT_BETAS[0], b2=GPT_BETAS[1], weight_decay=GPT_WEIGHT_DECAY, mask=decayed
    )


def make_gpt_train_step(jax, optax, params, n_layer: int = GPT_LAYERS, n_head: int = GPT_HEADS):
    """A jitted step (params, opt_state, x, y) -> (params, opt_state, loss), buffers
    donated, and the optimizer's initial state.

    Args:
        jax: the jax module.
        optax: the optax module.
        params: the initial parameters.
        n_layer: transformer blocks.
        n_head: attention heads.

    Returns:
        (the jitted step, the initial optimizer state).

    Example:
        >>> step, opt_state = make_gpt_train_step(jax, optax, params)  # doctest: +SKIP
        >>> params, opt_state, loss = step(params, opt_state, x, y)  # doctest: +SKIP
    """
    tx = gpt_adamw(optax, params)

    def train_step(params, opt_state, tokens, targets):
        loss, grads = jax.value_and_grad(
            lambda p: gpt_loss(jax, p, tokens, targets, n_layer, n_head)
        )(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1)), tx.init(params)


def setup_jax_gpt(jax, optax, spec: Workload, x: np.ndarray, y: np.ndarray):
    """(step, check_of) of the JAX GPT on workload D or D-long with the batch (x, y)."""
    params = init_gpt_params(jax, GPT_VOCAB, spec.block, GPT_LAYERS, GPT_EMBD)
    train_step, opt_state = make_gpt_train_step(jax, optax, params)
    xj, yj = jax.numpy.asarray(x), jax.numpy.asarray(y)
    return jitted_step_loop(jax, train_step, [params, opt_state], xj, yj), float
