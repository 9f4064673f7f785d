"""The JAX peer of workload E: the character-level LSTM language model in plain jax (no flax),
each layer's time loop a ``jax.lax.scan``, the whole training step (optax Adam) under jax.jit.

As in torch's ``nn.LSTM``, each layer projects the inputs of all time steps in one matmul
before the loop; the loop then multiplies the hidden state by ``weight_hh`` and updates the
gates (i, f, g, o). Weights keep torch's names and layouts (``weight_ih_l0`` (4H, I)), so the
torch peer's state_dict maps onto them one to one.
"""

from __future__ import annotations

import numpy as np

from _jax import jitted_step_loop
from _workload import LSTM_EMBED, LSTM_HIDDEN, LSTM_LAYERS, LSTM_VOCAB, Workload


def _uniform(jax, key, shape, bound):
    return jax.random.uniform(key, shape, np.float32, -bound, bound)


def init_lstm_params(jax, seed: int = 0) -> dict:
    """Initial weights as torch's defaults: the embedding N(0, 1), the LSTM's and the head's
    weights and biases U(-1/sqrt(fan), 1/sqrt(fan)) with fan the hidden size (LSTM) or the
    head's input width.

    Args:
        jax: the jax module.
        seed: the PRNG seed.

    Returns:
        A dict of float32 arrays named as the torch peer's state_dict.

    Example:
        >>> params = init_lstm_params(jax)  # doctest: +SKIP
    """
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 3 + 4 * LSTM_LAYERS))
    hidden, bound = LSTM_HIDDEN, 1.0 / np.sqrt(LSTM_HIDDEN)
    params = {"embedding.weight": jax.random.normal(next(keys), (LSTM_VOCAB, LSTM_EMBED))}
    width = LSTM_EMBED
    for layer in range(LSTM_LAYERS):
        for name, shape in (
            ("weight_ih", (4 * hidden, width)),
            ("weight_hh", (4 * hidden, hidden)),
            ("bias_ih", (4 * hidden,)),
            ("bias_hh", (4 * hidden,)),
        ):
            params[f"lstm.{name}_l{layer}"] = _uniform(jax, next(keys), shape, bound)
        width = hidden
    params["head.weight"] = _uniform(jax, next(keys), (LSTM_VOCAB, hidden), bound)
    params["head.bias"] = _uniform(jax, next(keys), (LSTM_VOCAB,), bound)
    return params


def _lstm_layer(jax, params, layer: int, inputs):
    """One LSTM layer over (T, N, I) time-major inputs from zero states: (T, N, H)."""
    jnp = jax.numpy
    w_ih, w_hh = params[f"lstm.weight_ih_l{layer}"], params[f"lstm.weight_hh_l{layer}"]
    bias = params[f"lstm.bias_ih_l{layer}"] + params[f"lstm.bias_hh_l{layer}"]
    projected = inputs @ w_ih.T + bias  # every step's input projection in one matmul
    batch, hidden = inputs.shape[1], w_hh.shape[1]

    def cell(carry, gates_in):
        h, c = carry
        i, f, g, o = jnp.split(gates_in + h @ w_hh.T, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((batch, hidden), projected.dtype)
    _, outputs = jax.lax.scan(cell, (zeros, zeros), projected)
    return outputs


def lstm_logits(jax, params, tokens):
    """(N, T, vocab) next-token logits for (N, T) int token ids."""
    h = params["embedding.weight"][tokens.T]  # time-major (T, N, E): scan's leading axis
    for layer in range(LSTM_LAYERS):
        h = _lstm_layer(jax, params, layer, h)
    logits = h @ params["head.weight"].T + params["head.bias"]
    return logits.transpose(1, 0, 2)


def lstm_loss(jax, params, tokens, targets):
    """Mean next-token cross-entropy over every position of the batch.

    Args:
        jax: the jax module.
        params: the parameter dict (``init_lstm_params``, or the torch peer's state_dict as
            arrays).
        tokens: (N, T) int token ids.
        targets: (N, T) int next tokens.

    Returns:
        The scalar loss.

    Example:
        >>> loss = lstm_loss(jax, params, x, y)  # doctest: +SKIP
    """
    log_probs = jax.nn.log_softmax(lstm_logits(jax, params, tokens), axis=-1)
    return -jax.numpy.take_along_axis(log_probs, targets[..., None], axis=-1).mean()


def make_lstm_train_step(jax, optax, params, lr: float):
    """A jitted step (params, opt_state, x, y) -> (params, opt_state, loss) with Adam at `lr`
    (buffers donated), and the optimizer's initial state.

    Example:
        >>> step, opt_state = make_lstm_train_step(jax, optax, params, 1e-3)  # doctest: +SKIP
    """
    tx = optax.adam(lr)

    def train_step(params, opt_state, tokens, targets):
        loss, grads = jax.value_and_grad(lambda p: lstm_loss(jax, p, tokens, targets))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1)), tx.init(params)


def setup_jax_lstm(jax, optax, spec: Workload, x: np.ndarray, y: np.ndarray, lr: float):
    """(step, check_of) of the JAX LSTM on workload E with the batch (x, y)."""
    if not spec.train:
        raise ValueError(f"the JAX LSTM times training only, got the inference workload {spec}")
    params = init_lstm_params(jax)
    train_step, opt_state = make_lstm_train_step(jax, optax, params, lr)
    xj, yj = jax.numpy.asarray(x), jax.numpy.asarray(y)
    return jitted_step_loop(jax, train_step, [params, opt_state], xj, yj), float
