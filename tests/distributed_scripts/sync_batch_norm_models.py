"""The CNN with batch norm and the data both sides of the sync batch norm tests build: the
ranks under mpirun and the one-process reference in the test."""

from __future__ import annotations

import itertools

import numpy as np

import gometal as gm

IMAGE = (3, 8, 8)
CLASSES = 3
STEPS = 20
PER_RANK_BATCH = 4


def cnn(sync: bool, seed: int = 1) -> gm.Model:
    """conv, batch norm (synchronized or per rank), ReLU, pooling and a dense layer.

    The conv has no bias: batch norm removes any per-channel shift, so the bias's gradient
    is rounding noise, which Adam would scale up to full steps.
    """
    return (
        gm.ModelBuilder(IMAGE)
        .conv2d(4, 3, padding=1, use_bias=False)
        .batch_norm(momentum=0.2, sync=sync)
        .relu()
        .max_pool2d(2)
        .flatten()
        .dense(CLASSES)
        .build(seed=seed)
    )


def optimizer(name: str) -> gm.optim.Optimizer:
    """SGD with momentum or Adam."""
    return gm.optim.SGD(0.05, momentum=0.9) if name == "sgd_momentum" else gm.optim.Adam(5e-3)


def global_batches(global_batch: int):
    """STEPS global batches every process draws alike: (images, labels)."""
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        # A per-channel offset and scale, so that the batch statistics matter.
        offset = rng.standard_normal((1, IMAGE[0], 1, 1)) * 2
        x = rng.standard_normal((global_batch, *IMAGE)) * 1.5 + offset
        y = rng.integers(0, CLASSES, global_batch).astype(np.int32)
        yield x.astype(np.float32), y


def uneven_slices(ranks: int) -> list[slice]:
    """Rank r's rows of a global batch when the ranks hold 5, 4, 3, ... images."""
    sizes = [5 - r for r in range(ranks)]
    starts = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(starts)]
