"""Per-framework builders of one ready-to-time training step on the MLP workload.

Each builder imports its framework itself, so a child process loads only the one it runs.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from _workload import CLASSES, FEATURES, HIDDEN, LEARNING_RATE

FRAMEWORKS = ("gometal", "torch-eager", "torch-eager-fused", "torch-compile", "jax-jit")


class Setup(NamedTuple):
    """A ready-to-time framework: `step()` runs one synchronous training step."""

    step: Callable[[], Any]
    loss_of: Callable[[Any], float]  # step()'s return value -> the loss as a float
    info: dict
    engine_stats: Callable[[], dict] | None = None


def _setup_gometal(x, y, threads):
    import gometal as gm
    from gometal import _core

    gm.set_num_threads(threads)
    t0 = time.perf_counter()
    model = (
        gm.ModelBuilder(input_shape=(FEATURES,))
        .dense(HIDDEN[0])
        .relu()
        .dense(HIDDEN[1])
        .relu()
        .dense(CLASSES)
        .build(seed=0)
    )
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=LEARNING_RATE), batch_size=len(x)
    )
    info = {
        "version": getattr(gm, "__version__", None),
        "build_s": time.perf_counter() - t0,
        "blas": _core.blas_info(),
    }

    def step():
        return trainer.train_batch(x, y)

    return Setup(step, lambda r: float(r.loss), info, trainer.engine_stats)


def _setup_torch(mode, x, y, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers, fan_in = [], FEATURES
    for width in HIDDEN:
        layers += [torch.nn.Linear(fan_in, width), torch.nn.ReLU()]
        fan_in = width
    model = torch.nn.Sequential(*layers, torch.nn.Linear(fan_in, CLASSES))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    opt = torch.optim.Adam(
        model.parameters(), lr=LEARNING_RATE, fused=True if mode == "eager-fused" else None
    )

    def forward_loss(inputs, labels):
        return F.cross_entropy(model(inputs), labels)

    update = opt.step
    if mode == "compile":
        forward_loss = torch.compile(forward_loss)
        update = torch.compile(opt.step)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(xt, yt)
        loss.backward()
        update()
        return loss

    config = torch.__config__.show()
    blas = next(
        (
            p.split("=", 1)[1]
            for p in config.replace(",", "\n").split()
            if p.startswith("BLAS_INFO=")
        ),
        "unknown",
    )
    mkl = next((ln.strip(" -") for ln in config.splitlines() if "Math Kernel Library" in ln), "")
    info = {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": f"{blas} ({mkl}), ATen CPU capability {torch.backends.cpu.get_cpu_capability()}",
    }
    return Setup(step, lambda v: float(v.detach()), info)


def _setup_jax(x, y, threads):
    import jax
    import jax.numpy as jnp
    import optax

    key = jax.random.PRNGKey(0)
    params, sizes = [], (FEATURES, *HIDDEN, CLASSES)
    for fan_in, fan_out in itertools.pairwise(sizes):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / np.sqrt(fan_in)  # PyTorch's Linear default range
        params.append(
            (
                jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
                jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
            )
        )

    def loss_fn(params, inputs, labels):
        h = inputs
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i + 1 < len(params):
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, labels).mean()

    tx = optax.adam(LEARNING_RATE)

    def train_step(params, opt_state, inputs, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    state = {"params": params, "opt": tx.init(params)}

    def step():
        new_params, new_opt, loss = train_step(state["params"], state["opt"], xj, yj)
        jax.block_until_ready((new_params, new_opt, loss))
        state["params"], state["opt"] = new_params, new_opt
        return loss

    info = {
        "version": jax.__version__,
        "optax": optax.__version__,
        "devices": str(jax.devices()),
        "blas": f"XLA:CPU built-in kernels (jax {jax.__version__})",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }
    return Setup(step, float, info)


def make_setup(framework: str, x: np.ndarray, y: np.ndarray, threads: int) -> Setup:
    """Build `framework`'s training step on the batch (x, y), using `threads` threads."""
    if framework == "gometal":
        return _setup_gometal(x, y, threads)
    if framework.startswith("torch-"):
        return _setup_torch(framework[len("torch-") :], x, y, threads)
    if framework == "jax-jit":
        return _setup_jax(x, y, threads)
    raise ValueError(f"unknown framework {framework!r}")
