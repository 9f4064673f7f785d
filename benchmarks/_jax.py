"""The JAX peer: plain jax (no flax), jax.jit of the whole training step with optax Adam (the
GPT's AdamW in _jax_gpt.py; the LSTM's lax.scan in _jax_lstm.py), or of the inference
forward. The CNN runs in NHWC, the layout XLA's CPU convolutions prefer; the fixed NCHW
batch is transposed once, before timing."""

from __future__ import annotations

import itertools
import os

import numpy as np

from _workload import (
    BN_BLOCK,
    BN_EPS,
    BN_MOMENTUM,
    CLASSES,
    CNN_CLASSES,
    CNN_FLAT,
    CNN_HIDDEN,
    CONV_CHANNELS,
    DROPOUT,
    FEATURES,
    HIDDEN,
    IMAGE_SHAPE,
    KERNEL,
    LEARNING_RATE,
    Workload,
)


def _uniform(jax, key, shape, fan_in):
    """PyTorch's default initialisation range for Linear and Conv2d: U(-1/sqrt(fan_in), ...)."""
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, np.float32, -bound, bound)


def _mlp(jax):
    key, params = jax.random.PRNGKey(0), []
    for fan_in, fan_out in itertools.pairwise((FEATURES, *HIDDEN, CLASSES)):
        key, kw, kb = jax.random.split(key, 3)
        params.append(
            (_uniform(jax, kw, (fan_in, fan_out), fan_in), _uniform(jax, kb, (fan_out,), fan_in))
        )

    def apply(params, inputs):
        h = inputs
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i + 1 < len(params):
                h = jax.nn.relu(h)
        return h

    return params, apply


def _cnn(jax):
    """Parameters, BatchNorm running statistics and apply(params, stats, x, rng) -> (logits,
    new stats); rng None is eval mode (running statistics, no dropout)."""
    jnp, lax = jax.numpy, jax.lax
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 2 * (len(CONV_CHANNELS) + 2)))
    convs, c_in = [], IMAGE_SHAPE[0]
    for channels in CONV_CHANNELS:
        fan_in = c_in * KERNEL * KERNEL
        convs.append(
            (
                _uniform(jax, next(keys), (KERNEL, KERNEL, c_in, channels), fan_in),  # HWIO
                _uniform(jax, next(keys), (channels,), fan_in),
            )
        )
        c_in = channels
    dense = []
    for fan_in, fan_out in ((CNN_FLAT, CNN_HIDDEN), (CNN_HIDDEN, CNN_CLASSES)):
        dense.append(
            (
                _uniform(jax, next(keys), (fan_in, fan_out), fan_in),
                _uniform(jax, next(keys), (fan_out,), fan_in),
            )
        )
    bn_channels = CONV_CHANNELS[BN_BLOCK]
    params = {
        "conv": convs,
        "bn": (jnp.ones(bn_channels), jnp.zeros(bn_channels)),
        "dense": dense,
    }
    stats = (jnp.zeros(bn_channels), jnp.ones(bn_channels))

    def batch_norm(h, params, stats, train):
        (gamma, beta), (mean, var) = params["bn"], stats
        if train:
            mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
            n = h.shape[0] * h.shape[1] * h.shape[2]
            m = BN_MOMENTUM
            stats = ((1 - m) * stats[0] + m * mean, (1 - m) * stats[1] + m * var * n / (n - 1))
        return (h - mean) * lax.rsqrt(var + BN_EPS) * gamma + beta, stats

    def apply(params, stats, x, rng):
        train = rng is not None
        h = x
        for i, (w, b) in enumerate(params["conv"]):
            h = lax.conv_general_dilated(
                h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            h = h + b
            if i == BN_BLOCK:
                h, stats = batch_norm(h, params, stats, train)
            h = jax.nn.relu(h)
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        # Flatten in (H, W, C) order: the same model up to a fixed permutation of w1's rows.
        h = h.reshape(h.shape[0], -1)
        (w1, b1), (w2, b2) = params["dense"]
        h = jax.nn.relu(h @ w1 + b1)
        if train:
            keep = jax.random.bernoulli(rng, 1.0 - DROPOUT, h.shape)
            h = jnp.where(keep, h / (1.0 - DROPOUT), 0.0)
        return h @ w2 + b2, stats

    return params, stats, apply


def _train_step(jax, optax, loss_fn, params, carry_extra):
    """A jitted step (params, opt_state, *extra, x, y) -> (params, opt_state, *extra, loss),
    with `loss_fn(params, *extra, x, y) -> (loss, new extra)`; buffers donated."""
    tx = optax.adam(LEARNING_RATE)

    def train_step(params, opt_state, extra, inputs, labels):
        (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, extra, inputs, labels
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, extra, loss

    jitted = jax.jit(train_step, donate_argnums=(0, 1, 2))
    return jitted, [params, tx.init(params), carry_extra]


def jitted_step_loop(jax, train_step, state: list, xj, yj):
    """The timed step of a jitted ``train_step(*state, x, y) -> (*new state, loss)``.

    Args:
        jax: the jax module.
        train_step: the jitted step; its state buffers may be donated.
        state: the step's state (parameters, optimizer state, ...), replaced after each call.
        xj: the batch's inputs on the device.
        yj: the batch's labels on the device.

    Returns:
        ``step()``: one training step run to completion; it returns the loss.
    """
    carried = len(state)

    def step():
        out = train_step(*state, xj, yj)
        jax.block_until_ready(out)  # jax dispatches asynchronously: time the work, not the call
        state[:] = out[:carried]
        return out[carried]

    return step


def setup_jax(spec: Workload, x: np.ndarray, y: np.ndarray):
    """(step, check_of, info) of the JAX peer on the workload `spec` with the batch (x, y)."""
    import jax
    import jax.numpy as jnp

    info = {
        "version": jax.__version__,
        "devices": str(jax.devices()),
        "blas": f"XLA:CPU built-in kernels (jax {jax.__version__})",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }
    if spec.model == "cnn":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NCHW -> NHWC
        info["layout"] = "NHWC"
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    if not spec.train:  # only the CNN has an inference workload
        params, stats, apply = _cnn(jax)
        forward = jax.jit(lambda p, s, inputs: apply(p, s, inputs, None)[0])
        return (
            lambda: forward(params, stats, xj).block_until_ready(),
            lambda out: float(jnp.mean(out)),
            info,
        )

    import optax

    info["optax"] = optax.__version__
    if spec.model == "gpt":
        from _jax_gpt import setup_jax_gpt

        return (*setup_jax_gpt(jax, optax, spec, x, y), info)
    if spec.model == "lstm":
        from _jax_lstm import setup_jax_lstm

        return (*setup_jax_lstm(jax, optax, spec, x, y, LEARNING_RATE), info)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels
    if spec.model == "mlp":
        params, apply_mlp = _mlp(jax)

        def loss_fn(params, extra, inputs, labels):
            return cross_entropy(apply_mlp(params, inputs), labels).mean(), extra

        extra = ()
    else:
        params, stats, apply_cnn = _cnn(jax)

        def loss_fn(params, extra, inputs, labels):
            stats, rng = extra
            rng, sub = jax.random.split(rng)
            logits, stats = apply_cnn(params, stats, inputs, sub)
            return cross_entropy(logits, labels).mean(), (stats, rng)

        extra = (stats, jax.random.PRNGKey(1))

    train_step, state = _train_step(jax, optax, loss_fn, params, extra)
    return jitted_step_loop(jax, train_step, state, xj, yj), float, info
