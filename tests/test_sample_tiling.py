"""Sample tiling runs chains of per-image steps (convolution, pooling, elementwise) image by
image. It must change no result: plans with and without it give bit-identical outputs,
losses and weights, including batch norm, dropout, residual adds, and shapes where a
weight's leading dimension equals the batch size."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal import _core


@pytest.fixture(autouse=True)
def _restore_tiling():
    yield
    _core.set_sample_tiling(True)


def _cnn(input_shape, channels, seed=0):
    b = gm.ModelBuilder(input_shape)
    for i, width in enumerate(channels):
        b = b.conv2d(width, 3, padding=1)
        if i == 1:
            b = b.batch_norm()
        b = b.relu().max_pool2d(2)
    return b.flatten().dense(32).relu().dropout(0.5).dense(3).build(seed=seed)


def _residual(input_shape, seed=0):
    x = gm.Input(input_shape)
    h = gm.layers.Conv2D(8, 3, padding=1)(x)
    h = gm.layers.ReLU()(gm.layers.BatchNorm()(h))
    skip = h
    h = gm.layers.Conv2D(8, 3, padding=1)(h)
    h = gm.layers.BatchNorm()(h)
    h = gm.layers.ReLU()(h + skip)
    h = gm.layers.AvgPool2D(2)(h)
    h = gm.layers.GlobalAvgPool2D()(h)
    return gm.Model(x, gm.layers.Dense(3)(h), seed=seed)


def _run(build, tiling, x, y, optimizer):
    """Three training steps, then eval-mode predictions and the weights, under one setting."""
    _core.set_sample_tiling(tiling)
    model = build()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer(), batch_size=len(x))
    losses = [trainer.train_batch(x, y).loss for _ in range(3)]
    plan = trainer._engine.describe("train", len(x)) + trainer._engine.describe("predict", len(x))
    return losses, trainer.predict(x), model.get_weights(), plan


@pytest.mark.parametrize(
    "build, input_shape, batch, optimizer",
    [
        (lambda: _cnn((3, 16, 16), (8, 16, 16)), (3, 16, 16), 8, lambda: gm.optim.Adam(lr=1e-2)),
        # Batch 16 equals the leading dimension of the 16-channel conv weights, and SGD's
        # weight decay makes elementwise passes over those weights.
        (
            lambda: _cnn((3, 16, 16), (16, 16, 16)),
            (3, 16, 16),
            16,
            lambda: gm.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
        ),
        (lambda: _residual((3, 12, 12)), (3, 12, 12), 6, lambda: gm.optim.Adam(lr=1e-2)),
    ],
    ids=["cnn", "batch-equals-channels", "residual"],
)
def test_tiling_changes_no_result(build, input_shape, batch, optimizer):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *input_shape), dtype=np.float32)
    y = rng.integers(0, 3, size=batch).astype(np.int32)
    plain = _run(build, False, x, y, optimizer)
    tiled = _run(build, True, x, y, optimizer)
    assert not any("tiled{" in line for line in plain[3])
    assert any("tiled{" in line for line in tiled[3]), tiled[3]
    assert plain[0] == tiled[0]
    np.testing.assert_array_equal(plain[1], tiled[1])
    for name, value in plain[2].items():
        np.testing.assert_array_equal(value, tiled[2][name], err_msg=name)


def test_inference_chain_runs_as_one_tiled_step():
    # conv -> bias+relu -> pool -> conv -> ... -> pool: every step per image, so one run.
    model = _cnn((3, 16, 16), (4, 8, 8))
    trainer = gm.Trainer(model, loss="cross_entropy", batch_size=4)
    plan = trainer._engine.describe("predict", 4)
    runs = [line for line in plan if line.startswith("tiled{")]
    assert len(runs) == 1, plan
    assert runs[0].count("conv2d") == 3 and runs[0].count("max_pool2d") == 3


def _run_holding(plan, step):
    return next((line for line in plan if line.startswith("tiled{") and step in line), None)


def test_batch_norm_and_bias_gradients_run_inside_runs_when_channels_equal_the_batch():
    # 16 channels and 16 images: a per-channel (16, 1, 1) vector must not pass for a batch
    # of values, so batch norm's normalisation joins the run after it. The running-statistic
    # updates move above that run, and bias gradients sum each image inside its run.
    trainer = gm.Trainer(_cnn((3, 16, 16), (8, 16, 16)), loss="cross_entropy", batch_size=16)
    plan = trainer._engine.describe("train", 16)
    normalise = _run_holding(plan, "fused[mul,add,relu] (16, 16, 8, 8)")
    # The next conv takes its bias and ReLU in its epilogue (one step).
    assert normalise is not None and "conv2d,add,relu (16, 16, 4, 4)" in normalise, plan
    assert _run_holding(plan, "sum (16, 16, 1, 1)") is not None, plan
    assert _run_holding(plan, "sum (16, 8, 1, 1)") is not None, plan
    assert any(line.startswith("channel_moments (2, 16)") for line in plan)


def test_setting_reads_back_and_a_batch_of_one_is_not_tiled():
    _core.set_sample_tiling(False)
    assert _core.sample_tiling() is False
    _core.set_sample_tiling(True)
    assert _core.sample_tiling() is True
    trainer = gm.Trainer(_cnn((3, 8, 8), (4, 4, 4)), loss="cross_entropy", batch_size=1)
    assert not any("tiled{" in line for line in trainer._engine.describe("predict", 1))


def test_inference_intermediates_live_in_per_image_tiles():
    # Values made and consumed inside a tiled run need one image per thread, not a batch.
    x = np.random.default_rng(1).standard_normal((64, 3, 32, 32), dtype=np.float32)
    arena = {}
    for tiling in (False, True):
        _core.set_sample_tiling(tiling)
        trainer = gm.Trainer(_cnn((3, 32, 32), (16, 32, 32)), loss="cross_entropy", batch_size=64)
        trainer.predict(x, batch_size=64)
        arena[tiling] = trainer.engine_stats()["arena_bytes"]
    # The untiled plan holds at least conv1's pooled (64, 16, 16, 16) output at once (the
    # conv pools in its epilogue: its (64, 16, 32, 32) output is never stored whole).
    assert arena[False] >= 64 * 16 * 16 * 16 * 4
    assert arena[True] < arena[False] / 3, arena
