"""``loss.per_sample``: each sample's loss before the batch reduction, against torch's
``reduction="none"`` (averaged over a sample's elements), with its gradient; the default
batch loss stays the mean of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gometal as gm
from loss_parity import loss_and_gradient, per_sample_and_weighted_gradient

N = 12


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(name, gen):
    """(gm loss, z, y, torch per-sample function of (z, y) tensors)."""
    z = (gen.standard_normal((N, 4)) * 1.5).astype(np.float32)
    z3 = (gen.standard_normal((N, 2, 3)) * 1.5).astype(np.float32)
    regression = (gen.standard_normal((N, 2, 3)) * 2).astype(np.float32)
    labels = gen.integers(0, 4, N).astype(np.int32)
    probs = _softmax(gen.standard_normal((N, 4))).astype(np.float32)
    binary = (gen.uniform(size=(N, 3)) > 0.5).astype(np.float32)

    def sample_mean(values):
        return values.reshape(len(values), -1).mean(1)

    cases = {
        "mse": (
            gm.losses.mse,
            z3,
            regression,
            lambda a, b: sample_mean(F.mse_loss(a, b, reduction="none")),
        ),
        "mae": (
            gm.losses.mae,
            z3,
            regression,
            lambda a, b: sample_mean(F.l1_loss(a, b, reduction="none")),
        ),
        "huber": (
            gm.losses.Huber(delta=0.7),
            z3,
            regression,
            lambda a, b: sample_mean(F.huber_loss(a, b, reduction="none", delta=0.7)),
        ),
        "cross_entropy": (
            gm.losses.cross_entropy,
            z,
            labels,
            lambda a, b: F.cross_entropy(a, b.long(), reduction="none"),
        ),
        "categorical": (
            gm.losses.categorical_cross_entropy,
            z,
            probs,
            lambda a, b: -(b * torch.log_softmax(a, 1)).sum(1),
        ),
        "categorical_probabilities": (
            gm.losses.CategoricalCrossEntropy(from_logits=False),
            probs,
            _softmax(z).astype(np.float32),
            lambda a, b: -(b * torch.log(a)).sum(1),
        ),
        "binary_cross_entropy": (
            gm.losses.binary_cross_entropy,
            (1 / (1 + np.exp(-z[:, :3]))).astype(np.float32),
            binary,
            lambda a, b: sample_mean(F.binary_cross_entropy(a, b, reduction="none")),
        ),
        "bce_with_logits": (
            gm.losses.bce_with_logits,
            z[:, :3].copy(),
            binary,
            lambda a, b: sample_mean(F.binary_cross_entropy_with_logits(a, b, reduction="none")),
        ),
        "bce_with_logits_pos_weight": (
            gm.losses.BCEWithLogits(pos_weight=[3.0, 0.5, 1.0]),
            z[:, :3].copy(),
            binary,
            lambda a, b: sample_mean(
                F.binary_cross_entropy_with_logits(
                    a, b, reduction="none", pos_weight=torch.tensor([3.0, 0.5, 1.0])
                )
            ),
        ),
        "cross_entropy_smoothing_ignore": (
            gm.losses.CrossEntropy(label_smoothing=0.2, ignore_index=1),
            z,
            labels,
            lambda a, b: F.cross_entropy(
                a, b.long(), reduction="none", label_smoothing=0.2, ignore_index=1
            ),
        ),
    }
    return cases[name]


CASES = [
    "mse",
    "mae",
    "huber",
    "cross_entropy",
    "categorical",
    "categorical_probabilities",
    "binary_cross_entropy",
    "bce_with_logits",
    "bce_with_logits_pos_weight",
    "cross_entropy_smoothing_ignore",
]


@pytest.mark.parametrize("name", CASES)
def test_per_sample_losses_and_their_gradients_match_torch(name):
    gen = np.random.default_rng(CASES.index(name))
    loss, z, y, reference = _case(name, gen)
    weights = gen.uniform(0.1, 2.0, N).astype(np.float32)
    per_sample, gradient, _ = per_sample_and_weighted_gradient(loss, z, y, weights)

    z_t = torch.tensor(z, requires_grad=True)
    expected = reference(z_t, torch.tensor(y))
    assert per_sample.shape == (N,)
    np.testing.assert_allclose(per_sample, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(gradient, z_t.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [c for c in CASES if c != "cross_entropy_smoothing_ignore"])
def test_the_default_batch_loss_is_the_mean_of_the_per_sample_losses(name):
    gen = np.random.default_rng(100 + CASES.index(name))
    loss, z, y, _ = _case(name, gen)
    per_sample, _, reduced = per_sample_and_weighted_gradient(loss, z, y, np.ones(N))
    value, _ = loss_and_gradient(loss, z, y)
    assert value == pytest.approx(float(per_sample.astype(np.float64).mean()), rel=1e-5)
    assert reduced == pytest.approx(value, rel=1e-5)


def test_a_loss_without_per_sample_says_so():
    class Custom(gm.losses.Loss):
        name = "custom"

    with pytest.raises(NotImplementedError, match="per_sample"):
        Custom().per_sample(None, 0, 1)
