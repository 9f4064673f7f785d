"""Freezing layers and parameter groups, trained side by side with torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gometal as gm
from gometal.io.serialization.container import read_container, write_container
from helpers import assert_weights_match, mlp_pair, t

SIZES = (6, 8, 8, 3)


def batches(steps: int, seed: int = 0, n: int = 16):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield (
            rng.normal(size=(n, SIZES[0])).astype(np.float32),
            rng.integers(0, SIZES[-1], n).astype(np.int32),
        )


def torch_step(net, optimizer, x, y) -> float:
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(t(x)), t(y))
    loss.backward()
    optimizer.step()
    return loss.item()


def set_requires_grad(module, flag):
    for p in module.parameters():
        p.requires_grad_(flag)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_frozen_layers_train_as_torch_requires_grad_false(optimizer):
    net, model = mlp_pair(SIZES, seed=1)
    if optimizer == "sgd":
        ours, theirs = (
            gm.optim.SGD(lr=0.1, momentum=0.9),
            torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        )
    else:
        ours, theirs = gm.optim.Adam(lr=0.01), torch.optim.Adam(net.parameters(), lr=0.01)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=ours)
    for step, (x, y) in enumerate(batches(24)):
        if step == 8:
            # Mid-training: torch keeps the frozen parameter's state; no grad, no update.
            assert model.freeze("dense_0") == ["dense_0"]
            set_requires_grad(net[0], False)
            for p in net[0].parameters():
                p.grad = None
        if step == 16:
            # torch resumes the parameter's own state and its own step count.
            model.unfreeze("dense_*")
            set_requires_grad(net[0], True)
        expected = torch_step(net, theirs, x, y)
        assert trainer.train_batch(x, y).loss == pytest.approx(expected, rel=1e-5)
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)
    assert trainer.engine_stats()["steps"] > 0


@pytest.mark.parametrize(
    "make",
    [
        lambda params: (gm.optim.Adam(lr=0.01), torch.optim.Adam(params, lr=0.01)),
        lambda params: (
            gm.optim.NAdam(lr=0.01),
            torch.optim.NAdam(params, lr=0.01),
        ),
        lambda params: (
            gm.optim.SGD(lr=0.05, momentum=0.9, dampening=0.3),
            torch.optim.SGD(params, lr=0.05, momentum=0.9, dampening=0.3),
        ),
    ],
    ids=["adam", "nadam", "sgd-dampening"],
)
def test_a_layer_frozen_from_the_start_then_unfrozen_counts_its_own_steps(make, tmp_path):
    # Fine-tuning: train the head first, then everything. torch starts the backbone's
    # optimizer state (and its bias corrections) at its first gradient.
    net, model = mlp_pair(SIZES, seed=7)
    model.freeze("dense_0")
    set_requires_grad(net[0], False)
    ours, theirs = make(net.parameters())
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=ours)
    for step, (x, y) in enumerate(batches(30, seed=8)):
        if step == 10:
            model.unfreeze()
            set_requires_grad(net[0], True)
        if step == 20:
            # A checkpoint in the middle resumes the weights' own step counts.
            trainer.save(tmp_path / "ckpt.safetensors")
            trainer = gm.Trainer.load(tmp_path / "ckpt.safetensors")
            model = trainer.model
        expected = torch_step(net, theirs, x, y)
        assert trainer.train_batch(x, y).loss == pytest.approx(expected, rel=1e-5)
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_keeps_frozen_weights_slots_and_frozen_layers(tmp_path):
    net, model = mlp_pair(SIZES, seed=9)
    theirs = torch.optim.Adam(net.parameters(), lr=0.01)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=0.01))
    data = list(batches(24, seed=10))
    for step, (x, y) in enumerate(data):
        if step == 6:
            model.freeze("dense_1")
            set_requires_grad(net[2], False)
            for p in net[2].parameters():
                p.grad = None
        if step == 12:
            trainer.save(tmp_path / "frozen.safetensors")
            trainer = gm.Trainer.load(tmp_path / "frozen.safetensors")
            model = trainer.model
            assert not model.get_layer("dense_1").trainable
        if step == 18:
            model.unfreeze("dense_1")
            set_requires_grad(net[2], True)
        expected = torch_step(net, theirs, x, y)
        assert trainer.train_batch(x, y).loss == pytest.approx(expected, rel=1e-5)
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)


def test_freezing_drops_gradients_and_slots_and_recompiles_once():
    _, model = mlp_pair(SIZES, seed=2)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=0.01))
    x, y = next(batches(1))
    trainer.train_batch(x, y)
    model.get_layer("dense_1").trainable = False
    before = model.get_weights()
    trainer.train_batch(x, y)
    trainer.train_batch(x, y)
    after = model.get_weights()
    for name in ("dense_1.weight", "dense_1.bias"):
        np.testing.assert_array_equal(after[name], before[name])
    assert not np.array_equal(after["dense_0.weight"], before["dense_0.weight"])
    variables = trainer.variable_shapes()
    assert "dense_1.weight.exp_avg" not in variables and "dense_0.weight.exp_avg" in variables
    assert trainer.step == 3
    engine = trainer.read_state()
    trainer.train_batch(x, y)  # no change since: the same engine keeps running
    assert set(trainer.read_state().variables) == set(engine.variables)


def test_freezing_every_layer_is_refused_clearly():
    _, model = mlp_pair(SIZES)
    trainer = gm.Trainer(model, loss="cross_entropy")
    model.freeze()
    x, y = next(batches(1))
    with pytest.raises(ValueError, match="every weight of the model is frozen"):
        trainer.train_batch(x, y)
    with pytest.raises(ValueError, match=r"the pattern 'conv\*' matches no layer"):
        model.unfreeze("conv*")
    with pytest.raises(TypeError, match="trainable must be True or False, got 1"):
        model.get_layer("dense_0").trainable = 1


@pytest.mark.parametrize("scheduled", [False, True])
def test_param_groups_match_torch_groups(scheduled):
    net, model = mlp_pair(SIZES, seed=3)
    ours = gm.optim.AdamW(
        lr=0.01,
        weight_decay=0.1,
        param_groups=[
            {"params": "*.bias", "weight_decay": 0.0},
            {"params": lambda name: name == "dense_0.weight", "lr": 0.002, "betas": (0.8, 0.99)},
        ],
    )
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    theirs = torch.optim.AdamW(
        [
            {"params": biases, "weight_decay": 0.0},
            {"params": [net[0].weight], "lr": 0.002, "betas": (0.8, 0.99)},
            {"params": [net[2].weight, net[4].weight]},
        ],
        lr=0.01,
        weight_decay=0.1,
    )
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=ours)
    scheduler = reference = None
    if scheduled:
        scheduler = gm.schedulers.StepLR(step_size=2, gamma=0.5)
        scheduler.attach(trainer)
        reference = torch.optim.lr_scheduler.StepLR(theirs, step_size=2, gamma=0.5)
    for step, (x, y) in enumerate(batches(20, seed=4)):
        expected = torch_step(net, theirs, x, y)
        assert trainer.train_batch(x, y).loss == pytest.approx(expected, rel=1e-5)
        if scheduled and step % 4 == 3:
            scheduler.step()
            reference.step()
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)


def test_param_groups_with_patterns_round_trip_through_a_checkpoint(tmp_path):
    _, model = mlp_pair(SIZES, seed=5)
    groups = [{"params": ["*.bias"], "weight_decay": 0.0, "momentum": 0.5}]
    trainer = gm.Trainer(
        model,
        loss="cross_entropy",
        optimizer=gm.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, param_groups=groups),
    )
    data = list(batches(4, seed=6))
    trainer.train_batch(*data[0])
    trainer.save(tmp_path / "ckpt.safetensors")
    resumed = gm.Trainer.load(tmp_path / "ckpt.safetensors")
    assert resumed.optimizer.param_groups == groups
    for x, y in data[1:]:
        assert resumed.train_batch(x, y).loss == trainer.train_batch(x, y).loss
    predicate = gm.optim.SGD(lr=0.1, param_groups=[{"params": lambda n: True, "lr": 0.5}])
    with pytest.raises(TypeError, match=r"param_groups\[0\] selects weights with a function"):
        gm.Trainer(model, loss="cross_entropy", optimizer=predicate).save(
            tmp_path / "p.safetensors"
        )


@pytest.mark.parametrize(
    ("groups", "error", "match"),
    [
        ({"params": "*.bias"}, TypeError, "param_groups must be a list of dicts, got dict"),
        ([{"lr": 0.1}], ValueError, r"param_groups\[0\] needs 'params'"),
        (
            [{"params": "*", "clip_grad_norm": 1.0}],
            ValueError,
            r"param_groups\[0\] sets \['clip_grad_norm'\], which a group cannot set",
        ),
        ([{"params": "*", "nonsense": 1.0}], ValueError, r"sets \['nonsense'\]"),
        ([{"params": 3}], TypeError, r"param_groups\[0\]\['params'\] must be a name pattern"),
        ([{"params": "*", "momentum": 2.0}], ValueError, r"param_groups\[0\]: .*momentum"),
    ],
)
def test_bad_param_groups_are_named(groups, error, match):
    with pytest.raises(error, match=match):
        gm.optim.SGD(lr=0.1, param_groups=groups)


def test_a_weight_in_two_groups_is_refused():
    _, model = mlp_pair(SIZES)
    optimizer = gm.optim.SGD(lr=0.1, param_groups=[{"params": "dense_0.*"}, {"params": "*.bias"}])
    with pytest.raises(
        ValueError, match=r"weight 'dense_0.bias' is selected by param_groups \[0, 1\]"
    ):
        gm.Trainer(model, loss="cross_entropy", optimizer=optimizer)


def test_a_forged_frozen_step_count_is_refused(tmp_path):
    _, model = mlp_pair(SIZES, seed=11)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=0.01))
    trainer.train_batch(*next(batches(1)))
    trainer.save(tmp_path / "ckpt.safetensors")
    document, tensors = read_container(tmp_path / "ckpt.safetensors")
    document["training"]["step_offsets"] = {"dense_0.weight": 10**6}
    write_container(tmp_path / "forged.safetensors", tensors, json.loads(json.dumps(document)))
    with pytest.raises(
        gm.serialization.CheckpointError,
        match=r"training.step_offsets gives 'dense_0.weight' 1000000",
    ):
        gm.Trainer.load(tmp_path / "forged.safetensors")
