"""Learning-rate schedulers given bad arguments raise the error torch raises, naming the
argument and the value; misusing attach and step raises a clear error."""

from __future__ import annotations

import math

import pytest

import gometal as gm

S = gm.schedulers


def make_trainer(lr: float = 0.1) -> gm.Trainer:
    model = gm.ModelBuilder((3,)).dense(2).build(seed=0)
    return gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=lr), batch_size=4)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: S.StepLR(step_size=2, gamma=-0.1), ValueError, r"gamma must be .*got -0.1"),
        (lambda: S.StepLR(step_size=0), ValueError, r"step_size must be an integer >= 1, got 0"),
        (lambda: S.StepLR(step_size=1.5), TypeError, r"step_size must be an integer"),
        (lambda: S.ExponentialLR(gamma=-1.0), ValueError, r"ExponentialLR: gamma"),
        (lambda: S.ExponentialLR(gamma=math.nan), ValueError, r"gamma must be a finite"),
        (lambda: S.MultiStepLR(milestones=[]), ValueError, r"non-empty list, got \[\]"),
        (lambda: S.MultiStepLR(milestones=[5, 3]), ValueError, r"increasing order, got \[5, 3\]"),
        (lambda: S.MultiStepLR(milestones=[-1, 3]), ValueError, r"integers >= 0"),
        (lambda: S.MultiStepLR(milestones=5), TypeError, r"list of integers, got 5"),
        (lambda: S.CosineAnnealingLR(T_max=0), ValueError, r"T_max must be an integer >= 1"),
        (lambda: S.CosineAnnealingLR(T_max=5, eta_min=-1), ValueError, r"eta_min"),
        (lambda: S.ConstantLR(factor=1.5), ValueError, r"factor must be .*\[0, 1\], got 1.5"),
        (lambda: S.ConstantLR(total_iters=0), ValueError, r"total_iters"),
        (lambda: S.Constant(lr=-1.0), ValueError, r"Constant: lr"),
        (lambda: S.OneCycleLR(max_lr=0.1, total_steps=0), ValueError, r"total_steps .*got 0"),
        (lambda: S.OneCycleLR(max_lr=0.1, total_steps=-5), ValueError, r"total_steps"),
        (lambda: S.OneCycleLR(max_lr=0.1), ValueError, r"give total_steps, or both epochs"),
        (lambda: S.OneCycleLR(max_lr=0.1, epochs=3), ValueError, r"steps_per_epoch=None"),
        (lambda: S.OneCycleLR(max_lr=0.1, epochs=0, steps_per_epoch=3), ValueError, r"epochs"),
        (lambda: S.OneCycleLR(max_lr=0.0, total_steps=9), ValueError, r"max_lr"),
        (lambda: S.OneCycleLR(max_lr=0.1, total_steps=9, pct_start=1.5), ValueError, r"pct_start"),
        (lambda: S.OneCycleLR(max_lr=0.1, total_steps=100, pct_start=0.01), ValueError, r"zero"),
        (
            lambda: S.OneCycleLR(max_lr=0.1, total_steps=9, anneal_strategy="exp"),
            ValueError,
            r"anneal_strategy must be 'cos' or 'linear', got 'exp'",
        ),
        (
            lambda: S.OneCycleLR(max_lr=0.1, total_steps=9, cycle_momentum=True),
            ValueError,
            r"cycle_momentum",
        ),
        (lambda: S.ReduceLROnPlateau(mode="avg"), ValueError, r"mode must be 'min' or 'max'"),
        (lambda: S.ReduceLROnPlateau(factor=1.0), ValueError, r"factor must be .*\[0, 1\)"),
        (lambda: S.ReduceLROnPlateau(patience=-1), ValueError, r"patience"),
        (lambda: S.ReduceLROnPlateau(threshold_mode="pct"), ValueError, r"threshold_mode"),
        (lambda: S.ReduceLROnPlateau(min_lr=-0.1), ValueError, r"min_lr"),
        (lambda: S.StepLR(step_size=1, interval="step"), ValueError, r"interval must be"),
        (lambda: S.LinearWarmup("cosine", 3), TypeError, r"scheduler must be"),
        (lambda: S.LinearWarmup(S.Constant(), 0), ValueError, r"warmup_steps"),
        (lambda: S.LinearWarmup(S.Constant(), 3, 1.5), ValueError, r"start_factor"),
    ],
)
def test_bad_arguments_are_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_misuse_of_attach_and_step():
    sched = S.StepLR(step_size=2)
    with pytest.raises(RuntimeError, match="not attached to a trainer"):
        sched.step()
    with pytest.raises(RuntimeError, match="no rate yet"):
        _ = sched.last_lr
    with pytest.raises(TypeError, match="trainer must be a gm.Trainer, got str"):
        sched.attach("trainer")
    inner = S.StepLR(make_trainer(), step_size=2)
    inner.step()
    with pytest.raises(ValueError, match="already been stepped"):
        S.LinearWarmup(inner, 3, trainer=make_trainer())
