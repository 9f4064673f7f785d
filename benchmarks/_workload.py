"""The benchmarked MLP workloads: model sizes, optimizer settings and the fixed batch."""

from __future__ import annotations

import itertools

import numpy as np

FEATURES, HIDDEN, CLASSES = 784, (512, 256), 10
LEARNING_RATE = 1e-3
WORKLOADS = {"A": 128, "A-small": 32}


def step_flops(batch: int) -> int:
    """Forward (2 flops per multiply-add) plus backward (twice the forward) per step."""
    sizes = (FEATURES, *HIDDEN, CLASSES)
    macs = sum(a * b for a, b in itertools.pairwise(sizes))
    return 3 * 2 * macs * batch


def make_batch(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """One fixed batch, identical in every child: x ~ N(0, 1) float32, labels int32 in [0, 10)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=batch).astype(np.int32)
    return x, y
