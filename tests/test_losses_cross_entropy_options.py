"""``CrossEntropy(label_smoothing=, ignore_index=, reduction=)`` and ``BCEWithLogits(pos_weight=)``
against torch: loss value, gradient w.r.t. the model output, training runs, accuracy, bad
arguments and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gometal as gm
from helpers import assert_weights_match, mlp_pair, t
from loss_parity import loss_and_gradient

COMBINATIONS = [
    (0.0, None, "mean"),
    (0.1, None, "mean"),
    (0.0, 2, "mean"),
    (0.25, 2, "mean"),
    (0.0, -100, "mean"),
    (0.1, -100, "sum"),
    (0.0, None, "sum"),
    (0.3, 0, "sum"),
]


@pytest.mark.parametrize(("smoothing", "ignore", "reduction"), COMBINATIONS)
def test_cross_entropy_options_match_torch_value_and_gradient(smoothing, ignore, reduction):
    gen = np.random.default_rng(COMBINATIONS.index((smoothing, ignore, reduction)))
    z = (gen.standard_normal((16, 5)) * 2).astype(np.float32)
    labels = gen.integers(0, 5, 16).astype(np.int32)
    if ignore is not None:
        labels[[1, 4, 9]] = ignore
    loss = gm.losses.CrossEntropy(
        label_smoothing=smoothing, ignore_index=ignore, reduction=reduction
    )
    value, gradient = loss_and_gradient(loss, z, labels)

    z_t = torch.tensor(z, requires_grad=True)
    expected = F.cross_entropy(
        z_t,
        torch.tensor(labels.astype(np.int64)),
        label_smoothing=smoothing,
        ignore_index=-100 if ignore is None else ignore,
        reduction=reduction,
    )
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-5)
    np.testing.assert_allclose(gradient, z_t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_a_batch_whose_every_label_is_ignored_gives_zero_loss_and_gradient():
    # torch gives NaN here; a step over such a batch must leave the weights alone instead.
    z = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    loss = gm.losses.CrossEntropy(ignore_index=1, label_smoothing=0.1)
    value, gradient = loss_and_gradient(loss, z, np.ones(4, np.int32))
    assert value == 0.0
    np.testing.assert_array_equal(gradient, np.zeros_like(z))


def _batches(steps, classes, seed, binary=False):
    gen = np.random.default_rng(seed)
    teacher = gen.standard_normal((10, classes))
    out = []
    for _ in range(steps):
        x = gen.standard_normal((16, 10)).astype(np.float32)
        scores = x @ teacher + 0.5 * gen.standard_normal((16, classes))
        y = (scores > 0).astype(np.float32) if binary else np.argmax(scores, 1).astype(np.int32)
        out.append((x, y))
    return out


def _train_both(gm_loss, torch_loss, classes, batches, seed=0):
    net, model = mlp_pair([10, 16, classes], "tanh", seed=seed)
    trainer = gm.Trainer(
        model, loss=gm_loss, optimizer=gm.optim.SGD(lr=0.05, momentum=0.9), batch_size=16
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    ours, theirs = [], []
    for x, y in batches:
        ours.append(trainer.train_batch(x, y).loss)
        optimizer.zero_grad()
        value = torch_loss(net(t(x)), t(y))
        value.backward()
        optimizer.step()
        theirs.append(value.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert np.mean(theirs[-5:]) < np.mean(theirs[:5])  # it learned, so the check means something
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)
    return trainer


@pytest.mark.parametrize(
    ("arguments", "torch_arguments"),
    [
        ({"label_smoothing": 0.1, "ignore_index": 1}, {"label_smoothing": 0.1, "ignore_index": 1}),
        (
            {"reduction": "sum", "label_smoothing": 0.05},
            {"reduction": "sum", "label_smoothing": 0.05},
        ),
    ],
)
def test_training_with_cross_entropy_options_matches_torch(arguments, torch_arguments):
    _train_both(
        gm.losses.CrossEntropy(**arguments),
        nn.CrossEntropyLoss(**torch_arguments),
        4,
        _batches(25, 4, seed=1),
    )


def test_torchs_default_ignore_index_passes_the_label_checks_and_trains_as_torch():
    batches = _batches(25, 4, seed=2)
    gen = np.random.default_rng(3)
    for _, y in batches:
        y[gen.random(len(y)) < 0.25] = -100
    trainer = _train_both(
        gm.losses.CrossEntropy(ignore_index=-100), nn.CrossEntropyLoss(), 4, batches
    )
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    trainer.fit((x, y), epochs=1, verbose=0)  # fit's whole-dataset label check too
    y[0] = -7
    with pytest.raises(ValueError, match="holds the label -7, outside the valid range"):
        trainer.train_batch(x[:16], y[:16])


def test_training_with_bce_pos_weight_matches_torch():
    weights = [2.0, 0.5, 1.5]
    _train_both(
        gm.losses.BCEWithLogits(pos_weight=weights),
        nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights)),
        3,
        _batches(25, 3, seed=2, binary=True),
    )


def test_a_scalar_pos_weight_matches_torch():
    gen = np.random.default_rng(5)
    z = gen.standard_normal((8, 2)).astype(np.float32)
    y = (gen.uniform(size=(8, 2)) > 0.3).astype(np.float32)
    value, gradient = loss_and_gradient(gm.losses.BCEWithLogits(pos_weight=4), z, y)
    z_t = torch.tensor(z, requires_grad=True)
    expected = F.binary_cross_entropy_with_logits(z_t, t(y), pos_weight=torch.tensor(4.0))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-5)
    np.testing.assert_allclose(gradient, z_t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_accuracy_counts_only_the_samples_not_ignored():
    gen = np.random.default_rng(3)
    model = gm.ModelBuilder((6,)).dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss=gm.losses.CrossEntropy(ignore_index=2), batch_size=5)
    x = gen.standard_normal((23, 6)).astype(np.float32)
    y = gen.integers(0, 3, 23).astype(np.int32)
    predicted = model.predict(x).argmax(1)
    kept = y != 2
    expected = float((predicted[kept] == y[kept]).mean())
    assert trainer.evaluate(x, y)["accuracy"] == pytest.approx(expected, abs=1e-7)
    assert expected != pytest.approx(float((predicted == y).mean()))  # the mask matters here


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be in \[0, 1\], got 1.5"),
        ({"label_smoothing": -0.1}, ValueError, r"label_smoothing must be in \[0, 1\], got -0.1"),
        ({"label_smoothing": "0.1"}, TypeError, "label_smoothing must be a number, got '0.1'"),
        (
            {"ignore_index": 1.5},
            TypeError,
            "ignore_index must be an integer label or None, got 1.5",
        ),
        (
            {"ignore_index": True},
            TypeError,
            "ignore_index must be an integer label or None, got True",
        ),
        ({"reduction": "none"}, ValueError, "reduction='none' gives one loss per sample"),
        (
            {"reduction": "avg"},
            ValueError,
            r"reduction must be one of \['mean', 'sum'\], got 'avg'",
        ),
    ],
)
def test_bad_cross_entropy_arguments_are_named(arguments, error, message):
    with pytest.raises(error, match=message):
        gm.losses.CrossEntropy(**arguments)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1.0, ValueError, r"pos_weight must be finite and >= 0, got -1.0"),
        (float("nan"), ValueError, r"pos_weight must be finite and >= 0, got nan"),
        ([1.0, float("inf")], ValueError, r"pos_weight must be finite and >= 0, got inf"),
        ("2", TypeError, "pos_weight must be a number or a sequence of numbers"),
        ([1.0, "a"], TypeError, "pos_weight must hold numbers, got 'a'"),
        ([], ValueError, "pos_weight must not be empty"),
    ],
)
def test_bad_pos_weight_is_named(value, error, message):
    with pytest.raises(error, match=message):
        gm.losses.BCEWithLogits(pos_weight=value)


def test_pos_weight_of_the_wrong_length_for_the_output_is_refused():
    model = gm.ModelBuilder((4,)).dense(3).build(seed=0)
    with pytest.raises(ValueError, match=r"pos_weight has 2 values, but the model's output has 3"):
        gm.Trainer(model, loss=gm.losses.BCEWithLogits(pos_weight=[1.0, 2.0]))


@pytest.mark.parametrize(
    "loss",
    [
        gm.losses.CrossEntropy(label_smoothing=0.2, ignore_index=0, reduction="sum"),
        gm.losses.SparseCrossEntropy(label_smoothing=0.1),
        gm.losses.BCEWithLogits(pos_weight=[0.5, 2.0]),
        gm.losses.BCEWithLogits(pos_weight=3.0),
    ],
    ids=repr,
)
def test_loss_arguments_survive_a_checkpoint(tmp_path, loss):
    model = gm.ModelBuilder((4,)).dense(2).build(seed=0)
    trainer = gm.Trainer(model, loss=loss, batch_size=4)
    trainer.save(tmp_path / "c.safetensors")
    restored = gm.Trainer.load(tmp_path / "c.safetensors")
    assert type(restored.loss) is type(loss)
    assert restored.loss.get_config() == loss.get_config()
    gen = np.random.default_rng(0)
    x = gen.standard_normal((6, 4)).astype(np.float32)
    y = gen.integers(0, 2, 6) if loss.integer_labels else (gen.uniform(size=(6, 2)) > 0.5)
    y = y.astype(np.int32 if loss.integer_labels else np.float32)
    assert restored.evaluate(x, y)["loss"] == trainer.evaluate(x, y)["loss"]
