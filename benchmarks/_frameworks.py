"""Per-framework builders of one ready-to-time call on a workload: a full training step
(A, A-small, B, D, D-long, E) or one inference batch (C, E-infer).

Each builder imports its framework itself, so a child process loads only the one it runs.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any, NamedTuple

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
    GPT_BETAS,
    GPT_EMBD,
    GPT_HEADS,
    GPT_LAYERS,
    GPT_VOCAB,
    GPT_WEIGHT_DECAY,
    HIDDEN,
    IMAGE_SHAPE,
    KERNEL,
    LEARNING_RATE,
    LSTM_EMBED,
    LSTM_HIDDEN,
    LSTM_LAYERS,
    LSTM_VOCAB,
    WORKLOADS,
    Workload,
)

FRAMEWORKS = (
    "gometal",
    "torch-eager",
    "torch-eager-fused",
    "torch-compile",
    "torch-channels-last",
    "jax-jit",
    "onnxruntime",
)
# The token models' inference peers (E-infer as issue 17 names them; D-infer as issue 18):
# onnxruntime on the exported model, and torch eager.
TOKEN_INFERENCE_PEERS = ("torch-eager", "onnxruntime")


class Setup(NamedTuple):
    """A ready-to-time framework: `step()` runs one synchronous call (a training step or an
    inference batch), fully materialised when it returns."""

    step: Callable[[], Any]
    # step()'s return value -> a float: the loss (training) or the outputs' mean (inference)
    check_of: Callable[[Any], float]
    info: dict
    engine_stats: Callable[[], dict] | None = None


def skip_reason(framework: str, workload: str) -> str | None:
    """Why `framework` cannot run `workload` here, or None when it can."""
    spec = WORKLOADS[workload]
    train = spec.train
    if framework == "gometal" and spec.model == "lstm" and not _gometal_has_lstm():
        return "its entry waits on the LSTM layer (gm.layers.LSTM, issue 17)"
    if framework == "onnxruntime":
        if train:
            return "onnxruntime is a peer of the inference workloads only"
        missing = [m for m in ("onnxruntime", "onnx", "torch") if not importlib.util.find_spec(m)]
        if missing or not importlib.util.find_spec("onnxscript"):
            return "onnxruntime, onnx, torch and onnxscript (the exporter) are needed"
        return None
    token_model = spec.model in ("lstm", "gpt")
    if token_model and not train and framework not in ("gometal", *TOKEN_INFERENCE_PEERS):
        return "the token models' inference peers are onnxruntime and torch-eager"
    if framework == "torch-channels-last" and spec.model != "cnn":
        return "channels_last is a layout of images: the CNN workloads B and C only"
    if framework.startswith("torch-") and not importlib.util.find_spec("torch"):
        return "torch not installed (pip install .[bench])"
    if framework == "torch-eager-fused" and not train:
        return "inference has no optimizer, so it is torch-eager"
    if framework == "jax-jit":
        if not importlib.util.find_spec("jax"):
            return "jax not installed (pip install jax optax)"
        if train and not importlib.util.find_spec("optax"):
            return "optax not installed (pip install optax)"
    return None


# -- gometal --------------------------------------------------------------------------------


def _gometal_has_lstm() -> bool:
    try:
        import gometal
    except ImportError:
        return False
    return hasattr(gometal.layers, "LSTM")


def _gometal_lstm(gm, spec: Workload):
    if not hasattr(gm.layers, "LSTM"):
        raise RuntimeError(
            f"gometal {gm.__version__} has no gm.layers.LSTM (issue 17): its entry for the "
            "LSTM workloads E and E-infer waits on that layer"
        )
    ids = gm.Input((spec.block,), name="tokens", dtype="int32")
    h = gm.layers.Embedding(LSTM_VOCAB, LSTM_EMBED)(ids)
    h = gm.layers.LSTM(LSTM_EMBED, LSTM_HIDDEN, num_layers=LSTM_LAYERS, batch_first=True)(h)
    return gm.Model(ids, gm.layers.Dense(LSTM_VOCAB)(h), seed=0)


def gometal_model(gm, spec: Workload):
    """gometal's model of a workload, seed 0 (the onnxruntime peer exports it too)."""
    if spec.model == "gpt":
        return gm.models.GPT(GPT_VOCAB, spec.block, GPT_LAYERS, GPT_HEADS, GPT_EMBD, seed=0)
    if spec.model == "lstm":
        return _gometal_lstm(gm, spec)
    if spec.model == "mlp":
        b = gm.ModelBuilder(input_shape=(FEATURES,))
        for width in HIDDEN:
            b = b.dense(width).relu()
        return b.dense(CLASSES).build(seed=0)
    return cnn_model(gm)


def cnn_model(gm):
    """Workload B's and C's CNN in gometal (bench_serving serves it too).

    Args:
        gm: the gometal module.

    Returns:
        The model, seed 0.
    """
    builder = gm.ModelBuilder(input_shape=IMAGE_SHAPE)
    for i, channels in enumerate(CONV_CHANNELS):
        builder = builder.conv2d(channels, KERNEL, padding=KERNEL // 2)
        if i == BN_BLOCK:
            builder = builder.batch_norm(eps=BN_EPS, momentum=BN_MOMENTUM)
        builder = builder.relu().max_pool2d(2)
    builder = builder.flatten().dense(CNN_HIDDEN).relu().dropout(DROPOUT)
    return builder.dense(CNN_CLASSES).build(seed=0)


def _setup_gometal(spec: Workload, x, y, threads):
    import gometal as gm
    from gometal import _core

    gm.set_num_threads(threads)
    t0 = time.perf_counter()
    model = gometal_model(gm, spec)
    optimizer = gm.optim.Adam(lr=LEARNING_RATE)
    if spec.model == "gpt":
        shapes = model.weight_shapes
        optimizer = gm.optim.AdamW(
            lr=LEARNING_RATE,
            betas=GPT_BETAS,
            weight_decay=GPT_WEIGHT_DECAY,
            param_groups=[{"params": lambda n: len(shapes[n]) < 2, "weight_decay": 0.0}],
        )
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=len(x))
    info = {
        "version": getattr(gm, "__version__", None),
        "build_s": time.perf_counter() - t0,
        "blas": _core.blas_info(),
        # Which build ran: two builds timed side by side must import different files.
        "package_file": gm.__file__,
        "engine_file": _core.__file__,
    }
    if spec.train:
        return Setup(
            lambda: trainer.train_batch(x, y), lambda r: float(r.loss), info, trainer.engine_stats
        )

    # Inference: the model's forward with dropout off and BatchNorm on its running statistics.
    def step():
        return trainer.predict(x, batch_size=len(x))

    return Setup(step, lambda out: float(np.mean(out)), info, trainer.engine_stats)


# -- PyTorch --------------------------------------------------------------------------------


def torch_model(torch, spec: Workload):
    """The MLP or CNN of a workload in torch (NCHW); the onnxruntime peer exports it too."""
    nn = torch.nn
    if spec.model == "mlp":
        layers, fan_in = [], FEATURES
        for width in HIDDEN:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        return nn.Sequential(*layers, nn.Linear(fan_in, CLASSES))
    layers, c_in = [], IMAGE_SHAPE[0]
    for i, channels in enumerate(CONV_CHANNELS):
        layers.append(nn.Conv2d(c_in, channels, KERNEL, padding=KERNEL // 2))
        if i == BN_BLOCK:
            layers.append(nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        c_in = channels
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(CNN_FLAT, CNN_HIDDEN),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.Linear(CNN_HIDDEN, CNN_CLASSES),
    )


def _torch_info(torch) -> dict:
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
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": f"{blas} ({mkl}), ATen CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def _setup_torch(mode, spec: Workload, x, y, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if spec.model == "gpt":
        return _setup_torch_gpt(torch, mode, spec, x, y)
    if spec.model == "lstm":
        return _setup_torch_lstm(torch, mode, spec, x, y)
    model = torch_model(torch, spec)  # NCHW, PyTorch's default layout
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    info = _torch_info(torch)
    if mode == "channels-last":
        # NHWC in memory, which oneDNN's convolutions prefer; with the fused Adam, the
        # fastest eager configuration a PyTorch user would pick for a CNN on the CPU.
        model = model.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)

    if not spec.train:
        model.eval()
        forward = torch.compile(model) if mode == "compile" else model

        def infer():
            with torch.inference_mode():
                return forward(xt)

        return Setup(infer, lambda out: float(out.float().mean()), info)

    model.train()
    fused = True if mode in ("eager-fused", "channels-last") else None
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=fused)

    def forward_loss(inputs, labels):
        return F.cross_entropy(model(inputs), labels)

    return _torch_training(torch, mode, opt, forward_loss, xt, yt, info)


def _torch_training(torch, mode: str, opt, forward_loss, xt, yt, info: dict) -> Setup:
    """One training step per call: the loss (and, compiled, the optimizer step) through
    torch.compile when ``mode`` is ``"compile"``."""
    update = opt.step
    if mode == "compile":
        forward_loss, update = torch.compile(forward_loss), torch.compile(opt.step)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(xt, yt)
        loss.backward()
        update()
        return loss

    return Setup(step, lambda v: float(v.detach()), info)


def _setup_torch_gpt(torch, mode: str, spec: Workload, x, y) -> Setup:
    """nanoGPT's model and AdamW groups; attention through scaled_dot_product_attention."""
    from _torch_gpt import TorchGPT

    model = TorchGPT(GPT_VOCAB, spec.block, GPT_LAYERS, GPT_HEADS, GPT_EMBD)
    if not spec.train:
        return _torch_inference(torch, model, torch.from_numpy(x).long())
    fused = True if mode == "eager-fused" else None
    opt = model.optimizer(lr=LEARNING_RATE, weight_decay=GPT_WEIGHT_DECAY, fused=fused)
    xt, yt = torch.from_numpy(x).long(), torch.from_numpy(y).long()
    return _torch_training(torch, mode, opt, model, xt, yt, _torch_info(torch))


def _setup_torch_lstm(torch, mode: str, spec: Workload, x, y) -> Setup:
    """nn.LSTM's language model: a training step with Adam, or the logits under
    torch.inference_mode()."""
    from _torch_lstm import build_torch_lstm

    model = build_torch_lstm(torch)
    xt, yt = torch.from_numpy(x).long(), torch.from_numpy(y).long()
    info = _torch_info(torch)
    if not spec.train:
        return _torch_inference(torch, model, xt)
    fused = True if mode == "eager-fused" else None
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=fused)
    return _torch_training(torch, mode, opt, model.loss, xt, yt, info)


def _torch_inference(torch, model, xt) -> Setup:
    """The model's outputs on ``xt`` in eval mode under torch.inference_mode()."""
    model.eval()

    def infer():
        with torch.inference_mode():
            return model(xt)

    return Setup(infer, lambda out: float(out.float().mean()), _torch_info(torch))


def make_setup(framework: str, workload: str, x: np.ndarray, y: np.ndarray, threads: int) -> Setup:
    """Build `framework`'s call on `workload` with the batch (x, y), using `threads` threads."""
    spec = WORKLOADS[workload]
    if framework == "gometal":
        return _setup_gometal(spec, x, y, threads)
    if framework.startswith("torch-"):
        return _setup_torch(framework[len("torch-") :], spec, x, y, threads)
    if framework == "jax-jit":
        from _jax import setup_jax

        return Setup(*setup_jax(spec, x, y))
    if framework == "onnxruntime":
        from _onnxruntime import setup_onnxruntime

        return Setup(*setup_onnxruntime(spec, x, threads))
    raise ValueError(f"unknown framework {framework!r}")
