"""Convolution, pooling and batch-norm layers against PyTorch (CPU, float32): the same
weights give the same forward pass, the same training steps and the same running
statistics; a small ResNet trains; workload B builds with torch's shapes and parameter
count. Bad configurations are in test_layers_cnn_errors.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from helpers import t

RTOL, ATOL = 1e-4, 1e-5


# -- helpers -------------------------------------------------------------------------------------


def _torch_state(net: nn.Module) -> list[tuple[str, np.ndarray]]:
    """The state_dict in order, without batch norm's num_batches_tracked counter."""
    return [
        (k, v.detach().numpy().copy())
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    ]


def _copy_state(net: nn.Module, model: gm.Model) -> None:
    """Copies torch's state into the model by position: both must list the same shapes."""
    state = _torch_state(net)
    names = list(model.weight_shapes)
    assert [v.shape for _, v in state] == [model.weight_shapes[n] for n in names]
    model.set_weights({name: value for name, (_, value) in zip(names, state)})


def _assert_state_matches(model: gm.Model, net: nn.Module, rtol=RTOL, atol=ATOL) -> None:
    got = model.get_weights()
    for name, (key, value) in zip(got, _torch_state(net)):
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=f"{name}/{key}")


def _sequential_pair(chain, modules, input_shape):
    """A gometal builder chain and the torch nn.Sequential of the same layers, same weights."""
    torch.manual_seed(0)
    net = nn.Sequential(*modules)
    model = chain(gm.ModelBuilder(input_shape)).build(seed=0)
    _copy_state(net, model)
    return model, net


def _mse_steps(model, net, batches, lr=0.05, momentum=0.0):
    """One SGD step per `(x, targets)` batch on the MSE in both; returns both loss lists."""
    optimizer = gm.optim.SGD(lr=lr, momentum=momentum)
    trainer = gm.Trainer(model, loss="mse", optimizer=optimizer, batch_size=len(batches[0][0]))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    gm_losses, torch_losses = [], []
    for x, targets in batches:
        gm_losses.append(trainer.train_batch(x, targets).loss)
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(t(x)), t(targets))
        loss.backward()
        opt.step()
        torch_losses.append(loss.item())
    return trainer, gm_losses, torch_losses


def _check_forward_and_step(model, net, x, rtol=RTOL, atol=ATOL):
    """predict matches torch in eval mode; one training step matches torch's."""
    net.eval()
    expected = net(t(x)).detach().numpy()
    got = model.predict(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    net.train()
    targets = np.random.default_rng(1).standard_normal(expected.shape).astype(np.float32)
    _, gm_losses, torch_losses = _mse_steps(model, net, [(x, targets)])
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=rtol)
    _assert_state_matches(model, net, rtol=rtol, atol=atol)


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _mentions(message, *parts):
    for part in parts:
        assert re.search(part, message), f"{part!r} not in {message!r}"


# -- convolution ---------------------------------------------------------------------------------

CONV_CASES = {
    "plain": {"kernel_size": 3},
    "stride2_pad1": {"kernel_size": 3, "stride": 2, "padding": 1},
    "same_no_bias": {"kernel_size": 3, "padding": "same", "use_bias": False},
    "same_dilation2": {"kernel_size": 3, "padding": "same", "dilation": 2},
    "dilation2_stride2": {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2},
    "groups2": {"kernel_size": 3, "padding": 1, "groups": 2},
    "rectangular": {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 0)},
    "pointwise_valid": {"kernel_size": 1, "padding": "valid", "use_bias": False},
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_forward_and_training_step_match_torch(case):
    kwargs = dict(CONV_CASES[case])
    use_bias = kwargs.pop("use_bias", True)
    model, net = _sequential_pair(
        lambda b: b.conv2d(6, use_bias=use_bias, **kwargs),
        [nn.Conv2d(4, 6, bias=use_bias, **kwargs)],
        (4, 9, 10),
    )
    expected_names = ["conv2d_0.weight"] + (["conv2d_0.bias"] if use_bias else [])
    assert list(model.weight_shapes) == expected_names
    assert model.count_params() == sum(p.numel() for p in net.parameters())
    _check_forward_and_step(model, net, _images((5, 4, 9, 10)))


def test_conv2d_default_initialisation_follows_torch_bounds():
    model = gm.ModelBuilder((8, 12, 12)).conv2d(32, 3, groups=2).build(seed=0)
    weights = model.get_weights()
    assert weights["conv2d_0.weight"].shape == (32, 4, 3, 3)
    bound = 1.0 / np.sqrt(4 * 3 * 3)
    for part in ("weight", "bias"):
        w = weights[f"conv2d_0.{part}"]
        assert np.all(np.abs(w) <= bound)
    w = weights["conv2d_0.weight"]
    assert np.abs(w).max() > 0.95 * bound
    assert w.std() == pytest.approx(bound / np.sqrt(3.0), rel=0.1)
    again = gm.ModelBuilder((8, 12, 12)).conv2d(32, 3, groups=2).build(seed=0).get_weights()
    np.testing.assert_array_equal(again["conv2d_0.weight"], w)


def test_same_padding_keeps_the_spatial_size():
    x = gm.Input((3, 11, 7))
    for kernel, dilation in [(1, 1), (3, 1), (5, 1), (3, 2), ((3, 5), (2, 1))]:
        out = gm.layers.Conv2D(4, kernel, padding="same", dilation=dilation)(x)
        assert out.shape == (None, 4, 11, 7)


# -- pooling -------------------------------------------------------------------------------------

POOL_CASES = {
    "max_k2": ("max", {"kernel_size": 2}),
    "max_k3_s2_p1": ("max", {"kernel_size": 3, "stride": 2, "padding": 1}),
    "max_k3_s1_p1": ("max", {"kernel_size": 3, "stride": 1, "padding": 1}),
    "max_rect": ("max", {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}),
    "avg_k2": ("avg", {"kernel_size": 2}),
    "avg_k3_s2_p1": ("avg", {"kernel_size": 3, "stride": 2, "padding": 1}),
    "avg_k3_s1": ("avg", {"kernel_size": 3, "stride": 1}),
    "avg_rect": ("avg", {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 1)}),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_forward_and_training_step_match_torch(case):
    kind, kwargs = POOL_CASES[case]
    torch_pool = nn.MaxPool2d(**kwargs) if kind == "max" else nn.AvgPool2d(**kwargs)
    # A convolution in front, so the training step checks the pooling gradient too.
    model, net = _sequential_pair(
        lambda b: getattr(b.conv2d(4, 3, padding=1), f"{kind}_pool2d")(**kwargs),
        [nn.Conv2d(3, 4, 3, padding=1), torch_pool],
        (3, 9, 8),
    )
    _check_forward_and_step(model, net, _images((4, 3, 9, 8), seed=2))


def test_max_pool_ties_after_relu_route_the_gradient_as_torch():
    # Mostly negative pre-activations: many windows hold only zeros after the ReLU, so the
    # gradient goes to the first element of a tie, as in torch.
    model, net = _sequential_pair(
        lambda b: b.conv2d(4, 3, padding=1).relu().max_pool2d(2).conv2d(2, 1),
        [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 1)],
        (3, 8, 8),
    )
    with torch.no_grad():
        net[0].bias.fill_(-0.6)
    _copy_state(net, model)
    x = _images((4, 3, 8, 8), seed=12)
    assert (net[1](net[0](t(x))) == 0).float().mean() > 0.5
    _check_forward_and_step(model, net, x)


def test_pool_stride_defaults_to_the_kernel():
    assert gm.layers.MaxPool2D(3).stride == (3, 3)
    assert gm.layers.AvgPool2D((2, 3)).stride == (2, 3)
    assert gm.layers.MaxPool2D(3, stride=1).stride == (1, 1)


def test_global_avg_pool_matches_torch():
    model, net = _sequential_pair(
        lambda b: b.conv2d(5, 3).relu().global_avg_pool2d().dense(3),
        [nn.Conv2d(2, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)],
        (2, 7, 6),
    )
    assert model.layers[2].name == "global_avg_pool2d_0"
    assert model.output_shape == (3,)
    _check_forward_and_step(model, net, _images((6, 2, 7, 6), seed=3))


def test_flatten_after_convolutions_matches_torch():
    model, net = _sequential_pair(
        lambda b: b.conv2d(3, 3, stride=2).flatten().dense(4),
        [nn.Conv2d(2, 3, 3, stride=2), nn.Flatten(), nn.Linear(3 * 3 * 4, 4)],
        (2, 7, 9),
    )
    assert model.layers[1].name == "flatten_0"
    _check_forward_and_step(model, net, _images((5, 2, 7, 9), seed=4))


# -- batch norm ----------------------------------------------------------------------------------


def _bn_pair_2d(momentum=0.1, affine=True, eps=1e-5):
    return _sequential_pair(
        lambda b: b.conv2d(4, 3, padding=1).batch_norm(eps=eps, momentum=momentum, affine=affine),
        [
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4, eps=eps, momentum=momentum, affine=affine),
        ],
        (3, 6, 5),
    )


def _bn_pair_1d(momentum=0.1, affine=True):
    return _sequential_pair(
        lambda b: b.dense(6).batch_norm(momentum=momentum, affine=affine).relu().dense(3),
        [
            nn.Linear(5, 6),
            nn.BatchNorm1d(6, momentum=momentum, affine=affine),
            nn.ReLU(),
            nn.Linear(6, 3),
        ],
        (5,),
    )


def _bn_pair_sequence():
    """(batch, channels, length) input: torch's BatchNorm1d over batch and length."""
    return _sequential_pair(
        lambda b: b.batch_norm().flatten().dense(3),
        [nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(28, 3)],
        (4, 7),
    )


def _batches(shape, count, seed):
    """Shifted, scaled inputs (so the running statistics move away from (0, 1)); the batch
    size cycles through shape[0], shape[0] - 2 and shape[0] - 4, as the unbiased variance
    depends on it."""
    gen = np.random.default_rng(seed)
    sizes = [shape[0] - 2 * (i % 3) for i in range(count)]
    return [(2.0 * gen.standard_normal((n, *shape[1:])) + 0.5).astype(np.float32) for n in sizes]


@pytest.mark.parametrize(
    "make,input_shape",
    [
        (lambda: _bn_pair_2d(), (8, 3, 6, 5)),
        (lambda: _bn_pair_2d(momentum=0.3, eps=1e-3), (8, 3, 6, 5)),
        (lambda: _bn_pair_2d(affine=False), (8, 3, 6, 5)),
        (lambda: _bn_pair_1d(), (16, 5)),
        (lambda: _bn_pair_1d(momentum=0.5, affine=False), (16, 5)),
        (lambda: _bn_pair_sequence(), (6, 4, 7)),
    ],
    ids=["2d", "2d_momentum_eps", "2d_no_affine", "1d", "1d_no_affine", "1d_sequence"],
)
def test_batch_norm_training_and_running_statistics_match_torch(make, input_shape):
    model, net = make()
    bn = next(m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    names = [n for n in model.weight_shapes if n.startswith("batch_norm_0.")]
    expected = ["weight", "bias"] if bn.affine else []
    assert names == [f"batch_norm_0.{p}" for p in [*expected, "running_mean", "running_var"]]
    assert model.count_params() == sum(p.numel() for p in net.parameters())

    batches = _batches(input_shape, 20, seed=5)
    out_shape = net.eval()(t(batches[0])).shape  # eval: torch's training forward updates stats
    net.train()
    gen = np.random.default_rng(6)
    pairs = [(x, gen.standard_normal((len(x), *out_shape[1:])).astype(np.float32)) for x in batches]
    trainer, gm_losses, torch_losses = _mse_steps(model, net, pairs, momentum=0.9)
    # The training step's output (through the loss) uses batch statistics, as torch's does.
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=2e-4)
    weights = model.get_weights()
    for stat in ("running_mean", "running_var"):
        np.testing.assert_allclose(
            weights[f"batch_norm_0.{stat}"], getattr(bn, stat).numpy(), rtol=1e-4, atol=1e-5
        )
    assert not np.allclose(weights["batch_norm_0.running_mean"], 0.0, atol=1e-2)
    _assert_state_matches(model, net, rtol=2e-4, atol=2e-5)

    # Evaluation uses the running statistics, and differs from batch-statistics output.
    x = batches[0]
    net.eval()
    eval_out = net(t(x)).detach().numpy()
    net.train()
    with torch.no_grad():
        train_out = net(t(x)).numpy()  # torch updates its stats here; compared already
    np.testing.assert_allclose(model.predict(x), eval_out, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(trainer.predict(x), eval_out, rtol=2e-4, atol=2e-5)
    assert np.abs(eval_out - train_out).max() > 1e-2
    # Eval and predict leave the running statistics alone.
    before = model.get_weights()
    trainer.evaluate(x, np.zeros(eval_out.shape, np.float32))
    model.predict(x)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_batch_norm_train_and_eval_losses_differ_and_eval_is_batch_independent():
    model, _ = _bn_pair_1d()
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.0), batch_size=16)
    x = _batches((16, 5), 1, seed=8)[0]
    y = np.zeros((16, 3), np.float32)
    train_loss = trainer.train_batch(x, y).loss
    assert trainer.evaluate(x, y)["loss"] != pytest.approx(train_loss, rel=1e-3)
    # With the running statistics, a sample's output does not depend on its batch.
    whole = model.predict(x)
    np.testing.assert_allclose(model.predict(x[:3]), whole[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, batch_size=5), whole, rtol=1e-5, atol=1e-6)


def test_batch_norm_running_statistics_get_no_gradient_or_optimizer_slots():
    model, _ = _bn_pair_2d()
    trainable = ["conv2d_0.weight", "conv2d_0.bias", "batch_norm_0.weight", "batch_norm_0.bias"]
    assert model.trainable_weight_names == trainable
    trainer = gm.Trainer(model, loss="mse", optimizer="adam", batch_size=4)
    variables = set(trainer._engine.variable_names())
    assert "batch_norm_0.weight.exp_avg" in variables
    assert not any(".running_mean." in v or ".running_var." in v for v in variables)
    # Running statistics still load and save like the other weights.
    model.set_weights({"batch_norm_0.running_var": np.full(4, 2.0, np.float32)})
    np.testing.assert_array_equal(model.get_weights()["batch_norm_0.running_var"], 2.0)


def test_batch_norm_loads_torch_running_statistics():
    model, net = _bn_pair_2d()
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        bn.running_var.copy_(torch.tensor([0.25, 4.0, 1.5, 9.0]))
        bn.weight.copy_(torch.tensor([1.5, 0.5, -1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3, -0.4]))
    _copy_state(net, model)
    x = _images((3, 3, 6, 5), seed=9)
    net.eval()
    np.testing.assert_allclose(model.predict(x), net(t(x)).detach().numpy(), rtol=RTOL, atol=ATOL)


def test_a_batch_norm_layer_can_be_called_only_once_per_model():
    x = gm.Input((4,))
    bn = gm.layers.BatchNorm(name="shared_bn")
    out = bn(gm.layers.Dense(4)(bn(x)))
    with pytest.raises(ValueError) as err:
        gm.Model(x, out)
    _mentions(str(err.value), "shared_bn", "BatchNorm", "2 times")


# -- a small ResNet through the functional API -----------------------------------------------------


class _TorchResNet(nn.Module):
    def __init__(self, channels=8, classes=3):
        super().__init__()
        # No bias before a batch norm: its gradient is zero up to rounding, which Adam
        # would turn into full-size steps of arbitrary sign.
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        h = torch.relu(self.stem_bn(self.stem(x)))
        r = torch.relu(self.bn1(self.conv1(h)))
        r = self.bn2(self.conv2(r))
        h = torch.relu(r + h)
        return self.head(h.mean(dim=(2, 3)))


def _gm_resnet(channels=8, classes=3):
    L = gm.layers
    x = gm.Input((3, 8, 8))
    h = L.ReLU()(
        L.BatchNorm(name="stem_bn")(
            L.Conv2D(channels, 3, padding=1, use_bias=False, name="stem")(x)
        )
    )
    r = L.Conv2D(channels, 3, padding=1, use_bias=False, name="conv1")(h)
    r = L.ReLU()(L.BatchNorm(name="bn1")(r))
    r = L.BatchNorm(name="bn2")(L.Conv2D(channels, 3, padding=1, use_bias=False, name="conv2")(r))
    h = L.ReLU()(r + h)
    out = L.Dense(classes, name="head")(L.GlobalAvgPool2D()(h))
    return gm.Model(x, out, seed=0)


def _resnet_data(n=64, seed=10):
    gen = np.random.default_rng(seed)
    y = gen.integers(0, 3, n).astype(np.int32)
    x = 0.5 * gen.standard_normal((n, 3, 8, 8)).astype(np.float32)
    # The class is visible as a brighter channel, so the network can learn it.
    x[np.arange(n), y] += 1.0
    return x, y


def test_small_resnet_matches_torch_and_trains():
    torch.manual_seed(0)
    net = _TorchResNet()
    model = _gm_resnet()
    state = dict(_torch_state(net))
    assert list(model.weight_shapes) == list(state)
    assert model.count_params() == sum(p.numel() for p in net.parameters())
    model.set_weights(state)

    x, y = _resnet_data()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gm_losses, torch_losses = [], []
    for step in range(5):
        rows = slice(16 * (step % 4), 16 * (step % 4) + 16)
        gm_losses.append(trainer.train_batch(x[rows], y[rows]).loss)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(t(x[rows])), t(y[rows]))
        loss.backward()
        opt.step()
        torch_losses.append(loss.item())
    np.testing.assert_allclose(gm_losses, torch_losses, rtol=2e-4)
    _assert_state_matches(model, net, rtol=1e-3, atol=1e-4)
    net.eval()
    np.testing.assert_allclose(
        model.predict(x[:16]), net(t(x[:16])).detach().numpy(), rtol=1e-3, atol=1e-4
    )

    first = trainer.evaluate(x, y)["loss"]
    for epoch in range(15):
        for i in range(4):
            rows = slice(16 * i, 16 * i + 16)
            trainer.train_batch(x[rows], y[rows])
    final = trainer.evaluate(x, y)
    assert final["loss"] < 0.5 * first
    assert final["accuracy"] > 0.9


# -- workload B: the cats-vs-dogs CNN --------------------------------------------------------------


def _workload_b_torch():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4096, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 2),
    )


def _workload_b(builder):
    return (
        builder.conv2d(16, 3, padding=1).relu().max_pool2d(2)
        .conv2d(32, 3, padding=1).batch_norm().relu().max_pool2d(2)
        .conv2d(64, 3, padding=1).relu().max_pool2d(2)
        .flatten().dense(128).relu().dropout(0.5).dense(2)
    )  # fmt: skip


def test_workload_b_builds_with_torch_shapes_and_parameter_count(capsys):
    model, net = _sequential_pair(_workload_b, list(_workload_b_torch()), (3, 64, 64))
    assert model.count_params() == sum(p.numel() for p in net.parameters()) == 548_322
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["conv2d_0", "relu_0", "max_pool2d_0", "conv2d_1", "batch_norm_0"]

    # Output shapes layer by layer, as torch computes them.
    shapes, h = [], torch.zeros(1, 3, 64, 64)
    net.eval()  # torch's training forward would update the running statistics
    for module in net:
        h = module(h)
        shapes.append(tuple(h.shape[1:]))
    model.summary()
    text = capsys.readouterr().out
    for layer, shape in zip(model.layers, shapes):
        dims = ", ".join(map(str, shape))
        assert re.search(rf"{layer.name} \(\w+\)\s+\(batch, {dims}\)", text), (layer.name, text)
    assert "(batch, 16, 64, 64)" in text and "(batch, 64, 8, 8)" in text
    assert "548,322" in text

    x = _images((2, 3, 64, 64), seed=11)
    np.testing.assert_allclose(model.predict(x), net(t(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-3))
    assert np.isfinite(trainer.train_batch(x, np.array([0, 1], np.int32)).loss)
