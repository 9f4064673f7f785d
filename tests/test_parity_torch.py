"""gometal against PyTorch (CPU, float32): the same model, the same initial weights and the
same batches must give the same losses, updates, loss values and activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from helpers import assert_weights_match, gm_weights_from_torch, mlp_pair, t, torch_step

SIZES = [20, 32, 16, 5]
STEPS = 50
BATCH = 16

OPTIMIZERS = {
    "sgd": (
        lambda: gm.optim.SGD(lr=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1),
    ),
    "sgd_momentum": (
        lambda: gm.optim.SGD(lr=0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "sgd_nesterov": (
        lambda: gm.optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "sgd_weight_decay": (
        lambda: gm.optim.SGD(lr=0.05, momentum=0.9, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
    ),
    "adam": (
        lambda: gm.optim.Adam(lr=5e-3),
        lambda p: torch.optim.Adam(p, lr=5e-3),
    ),
    "adam_weight_decay": (
        lambda: gm.optim.Adam(lr=5e-3, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=5e-3, weight_decay=0.01),
    ),
    "adam_betas_eps": (
        lambda: gm.optim.Adam(lr=5e-3, betas=(0.8, 0.99), eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=5e-3, betas=(0.8, 0.99), eps=1e-6),
    ),
}


def _batches(steps=STEPS, batch=BATCH, features=SIZES[0], classes=SIZES[-1], seed=0):
    gen = np.random.default_rng(seed)
    teacher = gen.standard_normal((features, classes))
    out = []
    for _ in range(steps):
        x = gen.standard_normal((batch, features)).astype(np.float32)
        y = np.argmax(x @ teacher + 0.5 * gen.standard_normal((batch, classes)), axis=1)
        out.append((x, y.astype(np.int32)))
    return out


def _train_both(
    net, model, gm_optimizer, torch_optimizer, batches, loss="cross_entropy", torch_loss=None
):
    torch_loss = torch_loss or nn.CrossEntropyLoss()
    trainer = gm.Trainer(model, loss=loss, optimizer=gm_optimizer, batch_size=BATCH)
    gm_losses, torch_losses, gm_acc, torch_acc = [], [], [], []
    for x, y in batches:
        step = trainer.train_batch(x, y)
        gm_losses.append(step.loss)
        gm_acc.append(step.accuracy)
        torch_optimizer.zero_grad()
        out = net(t(x))
        value = torch_loss(out, t(y))
        value.backward()
        torch_optimizer.step()
        torch_losses.append(value.item())
        torch_acc.append(float((out.argmax(1).numpy() == y).mean()))
    return trainer, np.array(gm_losses), np.array(torch_losses), gm_acc, torch_acc


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_mlp_training_matches_torch(optimizer):
    net, model = mlp_pair(SIZES, "relu", seed=0)
    make_gm, make_torch = OPTIMIZERS[optimizer]
    _, gm_losses, torch_losses, gm_acc, torch_acc = _train_both(
        net, model, make_gm(), make_torch(net.parameters()), _batches()
    )
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=1e-4)
    assert gm_acc == torch_acc
    # The run must actually learn something, or the comparison proves little.
    assert torch_losses[-10:].mean() < torch_losses[:10].mean()
    assert_weights_match(model, net, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_mlp_variants_match_torch(activation, optimizer):
    net, model = mlp_pair(SIZES, activation, seed=1)
    make_gm, make_torch = OPTIMIZERS[optimizer]
    _, gm_losses, torch_losses, _, _ = _train_both(
        net, model, make_gm(), make_torch(net.parameters()), _batches(seed=1)
    )
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=1e-4)
    assert_weights_match(model, net, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd_weight_decay", "adam", "adam_weight_decay"])
def test_wide_mlp_training_matches_torch(optimizer):
    # Layers and batches large enough for blocked, threaded kernels. tanh, not relu: with
    # this many units, rounding can flip a relu at its kink and both runs legitimately part.
    sizes = [64, 256, 128, 10]
    net, model = mlp_pair(sizes, "tanh", seed=5)
    make_gm, make_torch = OPTIMIZERS[optimizer]
    batches = _batches(steps=20, batch=100, features=64, classes=10, seed=5)
    _, gm_losses, torch_losses, _, _ = _train_both(
        net, model, make_gm(), make_torch(net.parameters()), batches
    )
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=1e-4)
    # Adam moves a weight by lr * m / (sqrt(v) + eps): where a gradient is as small as eps
    # (~1e-8), float32 rounding of that gradient alone shifts the step by ~1e-5 at lr 5e-3.
    assert_weights_match(model, net, rtol=1e-4, atol=5e-5)


def test_optimizer_by_name_uses_torch_defaults():
    # "adam" is Adam(lr=1e-3) with torch's default betas and eps. tanh keeps the check free of
    # relu kinks, where a pre-activation within rounding of 0 can flip a whole unit's gradient.
    net, model = mlp_pair(SIZES, "tanh", seed=2)
    _, gm_losses, torch_losses, _, _ = _train_both(
        net, model, "adam", torch.optim.Adam(net.parameters(), lr=1e-3), _batches(steps=10)
    )
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=1e-4)
    assert_weights_match(model, net)


# -- losses --------------------------------------------------------------------------------------


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _loss_case(name, gen, n=24):
    """Returns (gm loss, torch loss fn, gm model layers, torch head, targets, accuracy fn)."""
    x = gen.standard_normal((n, 6)).astype(np.float32) * 1.5
    regression_y = (gen.standard_normal((n, 3)) * 2).astype(np.float32)
    labels = gen.integers(0, 4, n).astype(np.int32)
    labels[:4] = np.arange(4)
    probs = _softmax(gen.standard_normal((n, 4)) * 2).astype(np.float32)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    binary = (gen.uniform(size=(n, 1)) > 0.5).astype(np.float32)
    soft_binary = gen.uniform(size=(n, 1)).astype(np.float32)
    multilabel = (gen.uniform(size=(n, 3)) > 0.5).astype(np.float32)

    def argmax_acc(out, y):
        return float((out.argmax(1) == y).mean())

    def argmax_agree(out, y):
        return float((out.argmax(1) == y.argmax(1)).mean())

    def threshold(level):
        return lambda out, y: float(((out > level) == (y >= 0.5)).mean())

    def nmae(out, y):
        return max(0.0, 1.0 - np.abs(out - y).sum() / np.abs(y).sum())

    def huber(delta):
        return (
            gm.losses.Huber(delta=delta),
            nn.HuberLoss(delta=delta),
            3,
            None,
            regression_y,
            nmae,
        )

    ce = nn.CrossEntropyLoss()
    cases = {
        "mse": ("mse", nn.MSELoss(), 3, None, regression_y, nmae),
        "mae": ("mae", nn.L1Loss(), 3, None, regression_y, nmae),
        "huber": ("huber", nn.HuberLoss(delta=1.0), 3, None, regression_y, nmae),
        "huber_delta_0.5": huber(0.5),
        "huber_delta_2": huber(2.0),
        "mse_object": (gm.losses.mse, nn.MSELoss(), 3, None, regression_y, nmae),
        "cross_entropy": ("cross_entropy", ce, 4, None, labels, argmax_acc),
        "cross_entropy_object": (gm.losses.cross_entropy, ce, 4, None, labels, argmax_acc),
        "sparse_cross_entropy": ("sparse_cross_entropy", ce, 4, None, labels, argmax_acc),
        "categorical_probabilities": (
            "categorical_cross_entropy",
            ce,
            4,
            None,
            probs,
            argmax_agree,
        ),
        "categorical_one_hot": ("categorical_cross_entropy", ce, 4, None, one_hot, argmax_agree),
        "categorical_from_probabilities": (
            gm.losses.CategoricalCrossEntropy(from_logits=False),
            lambda out, y: -(y * torch.log(out)).sum(1).mean(),
            4,
            "softmax",
            probs,
            argmax_agree,
        ),
        "binary_cross_entropy": (
            "binary_cross_entropy",
            nn.BCELoss(),
            1,
            "sigmoid",
            binary,
            threshold(0.5),
        ),
        "binary_cross_entropy_soft_targets": (
            "binary_cross_entropy",
            nn.BCELoss(),
            1,
            "sigmoid",
            soft_binary,
            threshold(0.5),
        ),
        "bce_with_logits": (
            "bce_with_logits",
            nn.BCEWithLogitsLoss(),
            1,
            None,
            binary,
            threshold(0.0),
        ),
        "bce_with_logits_multilabel": (
            "bce_with_logits",
            nn.BCEWithLogitsLoss(),
            3,
            None,
            multilabel,
            threshold(0.0),
        ),
    }
    return x, cases[name]


LOSS_CASES = [
    "mse",
    "mae",
    "huber",
    "huber_delta_0.5",
    "huber_delta_2",
    "mse_object",
    "cross_entropy",
    "cross_entropy_object",
    "sparse_cross_entropy",
    "categorical_probabilities",
    "categorical_one_hot",
    "categorical_from_probabilities",
    "binary_cross_entropy",
    "binary_cross_entropy_soft_targets",
    "bce_with_logits",
    "bce_with_logits_multilabel",
]


@pytest.mark.parametrize("case", LOSS_CASES)
def test_loss_value_gradient_and_accuracy_match_torch(case):
    gen = np.random.default_rng(LOSS_CASES.index(case))
    x, (gm_loss, torch_loss, outputs, head, y, accuracy) = _loss_case(case, gen)
    torch.manual_seed(3)
    linear = nn.Linear(6, outputs)
    heads = {None: nn.Identity(), "softmax": nn.Softmax(dim=-1), "sigmoid": nn.Sigmoid()}
    net = nn.Sequential(linear, heads[head])
    builder = gm.ModelBuilder((6,)).dense(outputs)
    if head is not None:
        builder = getattr(builder, head)()
    model = builder.build(seed=0)
    model.set_weights(gm_weights_from_torch(net))

    trainer = gm.Trainer(model, loss=gm_loss, optimizer=gm.optim.SGD(lr=0.1), batch_size=len(x))
    out = net(t(x))
    expected = torch_loss(out, t(y))
    expected_accuracy = accuracy(out.detach().numpy(), y)

    evaluated = trainer.evaluate(x, y)
    assert evaluated["loss"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert evaluated["accuracy"] == pytest.approx(expected_accuracy, abs=1e-6)

    # One SGD step: its reported loss is the pre-update loss, and the update uses the gradient
    # of exactly this loss.
    step = trainer.train_batch(x, y)
    assert step.loss == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert step.accuracy == pytest.approx(expected_accuracy, abs=1e-6)
    expected.backward()
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert_weights_match(model, net, rtol=1e-5, atol=1e-6)


def test_huber_default_delta_is_one():
    assert gm.losses.Huber().delta == 1.0


# -- activations ---------------------------------------------------------------------------------

ACTIVATIONS = [
    ("relu", {}, nn.ReLU()),
    ("leaky_relu", {}, nn.LeakyReLU()),
    ("leaky_relu", {"negative_slope": 0.2}, nn.LeakyReLU(negative_slope=0.2)),
    ("elu", {}, nn.ELU()),
    ("elu", {"alpha": 0.7}, nn.ELU(alpha=0.7)),
    ("sigmoid", {}, nn.Sigmoid()),
    ("tanh", {}, nn.Tanh()),
    ("swish", {}, nn.SiLU()),
    ("gelu", {}, nn.GELU()),
    ("softmax", {}, nn.Softmax(dim=-1)),
    ("softmax", {"axis": -1}, nn.Softmax(dim=-1)),
    ("softmax", {"axis": 1}, nn.Softmax(dim=1)),
]
ACTIVATION_IDS = [f"{a[0]}{a[1] or ''}" for a in ACTIVATIONS]


@pytest.mark.parametrize("activation,kwargs,torch_module", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_activation_forward_and_backward_match_torch(activation, kwargs, torch_module):
    gen = np.random.default_rng(5)
    x = (gen.standard_normal((12, 7)) * 2).astype(np.float32)
    targets = gen.standard_normal((12, 4)).astype(np.float32)
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(7, 9), torch_module, nn.Linear(9, 4))

    # Forward through predict, up to the activation.
    head = getattr(gm.ModelBuilder((7,)).dense(9), activation)(**kwargs).build(seed=0)
    head.set_weights({k: v for k, v in gm_weights_from_torch(net).items() if "dense_0" in k})
    expected = net[1](net[0](t(x))).detach().numpy()
    got = head.predict(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # Backward: three SGD steps through the activation.
    builder = getattr(gm.ModelBuilder((7,)).dense(9), activation)(**kwargs)
    model = builder.dense(4).build(seed=0)
    model.set_weights(gm_weights_from_torch(net))
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1), batch_size=12)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        step = trainer.train_batch(x, targets)
        expected = torch_step(net, opt, nn.functional.mse_loss, x, targets)
        assert step.loss == pytest.approx(expected, rel=1e-5)
    assert_weights_match(model, net, rtol=1e-4, atol=1e-6)


def test_flatten_matches_torch():
    gen = np.random.default_rng(6)
    x = gen.standard_normal((5, 3, 4)).astype(np.float32)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    model = gm.ModelBuilder((3, 4)).flatten().dense(6).build(seed=0)
    model.set_weights(gm_weights_from_torch(net))
    np.testing.assert_allclose(model.predict(x), net(t(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


# -- model API against the torch layout ----------------------------------------------------------


def test_model_weights_layout_and_counts_match_torch(capsys):
    net, model = mlp_pair(SIZES, "relu", seed=0)
    weights = model.get_weights()
    state = net.state_dict()
    linear_keys = sorted({k.split(".")[0] for k in state}, key=int)
    assert set(weights) == {f"dense_{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    for i, key in enumerate(linear_keys):
        assert weights[f"dense_{i}.weight"].shape == tuple(state[f"{key}.weight"].shape)
        assert weights[f"dense_{i}.bias"].shape == tuple(state[f"{key}.bias"].shape)
        assert weights[f"dense_{i}.weight"].dtype == np.float32
    assert model.count_params() == sum(p.numel() for p in net.parameters())

    assert model.summary() is None  # Keras' contract: it prints
    printed = capsys.readouterr().out
    for i in range(3):
        assert f"dense_{i}" in printed
    assert f"Trainable params: {model.count_params():,}" in printed


def test_default_initialisation_follows_torch_linear_bounds():
    model = gm.ModelBuilder((64,)).dense(200).relu().dense(10).build(seed=0)
    weights = model.get_weights()
    for name, fan_in in [("dense_0", 64), ("dense_1", 200)]:
        bound = 1.0 / np.sqrt(fan_in)
        for part in ("weight", "bias"):
            w = weights[f"{name}.{part}"]
            assert np.all(np.abs(w) <= bound)
            if w.size >= 200:  # enough draws to see the whole interval
                assert np.abs(w).max() > 0.9 * bound
                assert abs(w.mean()) < 0.1 * bound
                assert w.std() == pytest.approx(bound / np.sqrt(3.0), rel=0.1)
    other = gm.ModelBuilder((64,)).dense(200).relu().dense(10).build(seed=1).get_weights()
    same = gm.ModelBuilder((64,)).dense(200).relu().dense(10).build(seed=0).get_weights()
    assert not np.array_equal(other["dense_0.weight"], weights["dense_0.weight"])
    for name in weights:
        np.testing.assert_array_equal(same[name], weights[name])


def test_predict_in_chunks_matches_torch():
    net, model = mlp_pair(SIZES, "relu", seed=0)
    x = np.random.default_rng(8).standard_normal((50, 20)).astype(np.float32)
    expected = net(t(x)).detach().numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, batch_size=7), expected, rtol=1e-5, atol=1e-6)


def test_use_bias_false_matches_torch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 3, bias=False))
    model = gm.ModelBuilder((5,)).dense(3, use_bias=False).build(seed=0)
    assert set(model.get_weights()) == {"dense_0.weight"}
    model.set_weights(gm_weights_from_torch(net))
    x = np.random.default_rng(9).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), net(t(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert model.count_params() == 15
