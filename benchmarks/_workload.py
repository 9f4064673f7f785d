"""The benchmarked workloads: models, optimizer settings, FLOP counts and the fixed batches."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

LEARNING_RATE = 1e-3

# The MLP (workloads A and A-small).
FEATURES, HIDDEN, CLASSES = 784, (512, 256), 10

# The cats-vs-dogs CNN (workloads B and C): three blocks of Conv 3x3 pad 1 (+ BatchNorm in
# the second), ReLU and MaxPool 2, then Flatten, Dense, ReLU, Dropout and Dense.
IMAGE_SHAPE = (3, 64, 64)  # channels, height, width
CONV_CHANNELS = (16, 32, 64)
KERNEL = 3
BN_BLOCK = 1  # the conv block with BatchNorm between its conv and its ReLU
CNN_HIDDEN, CNN_CLASSES, DROPOUT = 128, 2, 0.5
BN_EPS, BN_MOMENTUM = 1e-5, 0.1
CNN_FLAT = CONV_CHANNELS[-1] * (IMAGE_SHAPE[1] >> len(CONV_CHANNELS)) ** 2  # 64 * 8 * 8

# The GPT (workloads D and D-long): nanoGPT's CPU configuration, trained with AdamW
# (betas 0.9, 0.95; weight decay 0.1 on 2-D weights) as nanoGPT's train.py does.
GPT_VOCAB, GPT_LAYERS, GPT_HEADS, GPT_EMBD = 65, 4, 4, 128
GPT_BETAS, GPT_WEIGHT_DECAY = (0.9, 0.95), 0.1

# The character-level LSTM language model (workloads E and E-infer): Embedding, a 2-layer
# LSTM from zero states, Linear to the vocabulary; E trains it with Adam.
LSTM_VOCAB, LSTM_EMBED, LSTM_HIDDEN, LSTM_LAYERS = 65, 64, 256, 2


class Workload(NamedTuple):
    model: str  # "mlp", "cnn", "gpt" or "lstm"
    batch: int
    train: bool  # True: each call is one training step; False: one inference batch
    title: str
    block: int = 0  # the token models' sequence length (the GPT's context length)


WORKLOADS = {
    "A": Workload("mlp", 128, True, "MLP training"),
    "A-small": Workload("mlp", 32, True, "MLP training, small batch"),
    "B": Workload("cnn", 32, True, "cats-vs-dogs CNN training"),
    "C": Workload("cnn", 256, False, "CNN inference (eval mode)"),
    "D": Workload("gpt", 12, True, "GPT training, nanoGPT's CPU configuration", 64),
    "D-long": Workload("gpt", 4, True, "GPT training, block 1024", 1024),
    "E": Workload("lstm", 32, True, "character LSTM language model training", 64),
    "E-infer": Workload("lstm", 32, False, "character LSTM inference (logits)", 256),
    # The GPT of D forward only (logits of every position), at a serving batch and at one.
    "D-infer": Workload("gpt", 12, False, "GPT inference (logits)", 64),
    "D-infer-1": Workload("gpt", 1, False, "GPT inference (logits), one sequence", 64),
}

# The models whose batches are token windows (x, and y = x shifted by one).
TOKEN_MODELS = {"gpt": GPT_VOCAB, "lstm": LSTM_VOCAB}


def _macs_per_sample(model: str) -> int:
    if model == "mlp":
        sizes = (FEATURES, *HIDDEN, CLASSES)
        return sum(a * b for a, b in itertools.pairwise(sizes))
    macs, side = 0, IMAGE_SHAPE[1]
    for c_in, c_out in itertools.pairwise((IMAGE_SHAPE[0], *CONV_CHANNELS)):
        macs += side * side * c_out * c_in * KERNEL * KERNEL
        side //= 2
    return macs + CNN_FLAT * CNN_HIDDEN + CNN_HIDDEN * CNN_CLASSES


def _gpt_macs_per_token(block: int) -> int:
    # Per layer: the QKV, output and two MLP projections, and attention's two products
    # over the (causal half of the) context; then the LM head.
    d = GPT_EMBD
    per_layer = 12 * d * d + block * d
    return GPT_LAYERS * per_layer + d * GPT_VOCAB


def _lstm_macs_per_token() -> int:
    # Per layer: the input and hidden-state projections of the four gates; then the head.
    macs, width = 0, LSTM_EMBED
    for _ in range(LSTM_LAYERS):
        macs += 4 * LSTM_HIDDEN * (width + LSTM_HIDDEN)
        width = LSTM_HIDDEN
    return macs + LSTM_HIDDEN * LSTM_VOCAB


def step_flops(workload: str) -> int:
    """FLOPs of one call: 2 per multiply-add forward; a training step adds the backward
    (twice the forward). Pooling, normalisation and the optimizer are not counted."""
    spec = WORKLOADS[workload]
    if spec.model == "gpt":
        forward = 2 * _gpt_macs_per_token(spec.block) * spec.batch * spec.block
    elif spec.model == "lstm":
        forward = 2 * _lstm_macs_per_token() * spec.batch * spec.block
    else:
        forward = 2 * _macs_per_sample(spec.model) * spec.batch
    return 3 * forward if spec.train else forward


def make_batch(workload: str) -> tuple[np.ndarray, np.ndarray]:
    """One fixed batch, identical in every child: x ~ N(0, 1) float32 (MLP: (N, 784);
    CNN: (N, 3, 64, 64), NCHW), labels int32 class indices; for the GPT and the LSTM, int32
    token windows (N, block) and their next tokens."""
    spec = WORKLOADS[workload]
    rng = np.random.default_rng(0)
    if spec.model in TOKEN_MODELS:
        # Token windows: y is x shifted by one, as a language model trains.
        vocab = TOKEN_MODELS[spec.model]
        tokens = rng.integers(0, vocab, size=(spec.batch, spec.block + 1)).astype(np.int32)
        return np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])
    if spec.model == "mlp":
        x = rng.standard_normal((spec.batch, FEATURES), dtype=np.float32)
        y = rng.integers(0, CLASSES, size=spec.batch).astype(np.int32)
    else:
        x = rng.standard_normal((spec.batch, *IMAGE_SHAPE), dtype=np.float32)
        y = rng.integers(0, CNN_CLASSES, size=spec.batch).astype(np.int32)
    return x, y
