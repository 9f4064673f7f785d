"""The layers Keras and PyTorch users reach for, against PyTorch (CPU, float32): the same
weights give the same outputs and the same gradients of the input and of every weight
(the engine's autodiff against torch's), within 1e-5 relative. Bad arguments and inputs
are in test_layers_keras_errors.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal import layers as L
from layer_parity import assert_matches_torch

torch.manual_seed(0)


class TorchFunction(nn.Module):
    """A torch module computing ``function`` (the reference of shape layers and Lambda)."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def _model(sample_shape, *layers):
    x = gm.Input(sample_shape)
    h = x
    for layer in layers:
        h = layer(h)
    return gm.Model(x, h, seed=3)


def _inputs(shape, batch=4, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def _seq(*modules):
    torch.manual_seed(5)
    return nn.Sequential(*modules)


def _perturbed(module: nn.Module) -> nn.Module:
    """Gives norm layers' ones and zeros random values, so the affine part is tested."""
    torch.manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return module


CASES = {
    # Dense applies to the last axis of any rank, as nn.Linear.
    "dense_rank3": ((5, 7), lambda: [L.Dense(6)], lambda: _seq(nn.Linear(7, 6))),
    "dense_rank4": ((2, 3, 7), lambda: [L.Dense(4)], lambda: _seq(nn.Linear(7, 4))),
    "dense_rank5": ((2, 2, 3, 7), lambda: [L.Dense(3)], lambda: _seq(nn.Linear(7, 3))),
    "dense_rank3_no_bias": (
        (5, 7),
        lambda: [L.Dense(6, use_bias=False)],
        lambda: _seq(nn.Linear(7, 6, bias=False)),
    ),
    "dense_relu": (
        (7,),
        lambda: [L.Dense(6, activation="relu")],
        lambda: _seq(nn.Linear(7, 6), nn.ReLU()),
    ),
    "dense_gelu": (
        (7,),
        lambda: [L.Dense(6, activation="gelu")],
        lambda: _seq(nn.Linear(7, 6), nn.GELU()),
    ),
    "dense_tanh": (
        (7,),
        lambda: [L.Dense(6, activation="tanh")],
        lambda: _seq(nn.Linear(7, 6), nn.Tanh()),
    ),
    "dense_sigmoid": (
        (7,),
        lambda: [L.Dense(6, activation="sigmoid")],
        lambda: _seq(nn.Linear(7, 6), nn.Sigmoid()),
    ),
    "dense_silu_rank3": (
        (3, 7),
        lambda: [L.Dense(6, activation="silu")],
        lambda: _seq(nn.Linear(7, 6), nn.SiLU()),
    ),
    "dense_softmax": (
        (7,),
        lambda: [L.Dense(6, activation="softmax")],
        lambda: _seq(nn.Linear(7, 6), nn.Softmax(dim=-1)),
    ),
    "dense_mish": (
        (7,),
        lambda: [L.Dense(6, activation="mish")],
        lambda: _seq(nn.Linear(7, 6), nn.Mish()),
    ),
    "dense_hardswish": (
        (7,),
        lambda: [L.Dense(6, activation="hardswish")],
        lambda: _seq(nn.Linear(7, 6), nn.Hardswish()),
    ),
    "conv2d_relu": (
        (3, 6, 6),
        lambda: [L.Conv2D(4, 3, padding=1, activation="relu")],
        lambda: _seq(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
    ),
    "conv2d_softmax_over_channels": (
        (3, 6, 6),
        lambda: [L.Conv2D(4, 3, activation="softmax")],
        lambda: _seq(nn.Conv2d(3, 4, 3), nn.Softmax(dim=1)),
    ),
    "layer_norm_last_axis": ((5, 8), lambda: [L.LayerNorm(8)], lambda: _perturbed(nn.LayerNorm(8))),
    "layer_norm_two_axes": (
        (3, 4, 5),
        lambda: [L.LayerNorm((4, 5))],
        lambda: _perturbed(nn.LayerNorm((4, 5))),
    ),
    "layer_norm_no_affine": (
        (6,),
        lambda: [L.LayerNorm(6, elementwise_affine=False)],
        lambda: nn.LayerNorm(6, elementwise_affine=False),
    ),
    "layer_norm_no_bias": (
        (6,),
        lambda: [L.LayerNorm(6, eps=1e-3, bias=False)],
        lambda: _perturbed(nn.LayerNorm(6, eps=1e-3, bias=False)),
    ),
    "group_norm_images": (
        (8, 3, 4),
        lambda: [L.GroupNorm(4, 8)],
        lambda: _perturbed(nn.GroupNorm(4, 8)),
    ),
    "group_norm_one_group": (
        (6, 3, 3),
        lambda: [L.GroupNorm(1, 6)],
        lambda: _perturbed(nn.GroupNorm(1, 6)),
    ),
    "group_norm_per_channel_features": (
        (6, 5),
        lambda: [L.GroupNorm(6, 6, eps=1e-3)],
        lambda: _perturbed(nn.GroupNorm(6, 6, eps=1e-3)),
    ),
    "group_norm_no_affine": (
        (4, 3, 3),
        lambda: [L.GroupNorm(2, 4, affine=False)],
        lambda: nn.GroupNorm(2, 4, affine=False),
    ),
    "instance_norm_default": (
        (3, 5, 4),
        lambda: [L.InstanceNorm2D(3)],
        lambda: nn.InstanceNorm2d(3),
    ),
    "instance_norm_affine": (
        (3, 5, 4),
        lambda: [L.InstanceNorm2D(3, eps=1e-3, affine=True)],
        lambda: _perturbed(nn.InstanceNorm2d(3, eps=1e-3, affine=True)),
    ),
    "prelu_shared": ((3, 4, 4), lambda: [L.PReLU()], lambda: nn.PReLU()),
    "prelu_per_channel_images": ((3, 4, 4), lambda: [L.PReLU(3)], lambda: _perturbed(nn.PReLU(3))),
    "prelu_per_feature": (
        (5,),
        lambda: [L.PReLU(5, init=0.1)],
        lambda: _perturbed(nn.PReLU(5, init=0.1)),
    ),
    "hardswish": ((4, 5), lambda: [L.Hardswish()], lambda: nn.Hardswish()),
    "mish": ((4, 5), lambda: [L.Mish()], lambda: nn.Mish()),
    "silu": ((4, 5), lambda: [L.SiLU()], lambda: nn.SiLU()),
    "flatten_start_dim_2": ((3, 4, 5), lambda: [L.Flatten(2)], lambda: nn.Flatten(2)),
    "flatten_middle_axes": ((3, 4, 5), lambda: [L.Flatten(1, 2)], lambda: nn.Flatten(1, 2)),
    "flatten_negative_axes": (
        (3, 4, 5, 2),
        lambda: [L.Flatten(-3, -2)],
        lambda: nn.Flatten(-3, -2),
    ),
    "reshape": (
        (4, 6),
        lambda: [L.Reshape((3, -1))],
        lambda: TorchFunction(lambda x: x.reshape(len(x), 3, -1)),
    ),
    "permute": (
        (2, 3, 4),
        lambda: [L.Permute((3, 1, 2))],
        lambda: TorchFunction(lambda x: x.permute(0, 3, 1, 2)),
    ),
    "lambda_ops": (
        (5,),
        lambda: [L.Lambda(lambda x: gm.ops.square(x) * 2.0 - gm.ops.tanh(x) / 3.0 + 1.0)],
        lambda: TorchFunction(lambda x: x.square() * 2.0 - torch.tanh(x) / 3.0 + 1.0),
    ),
    "lambda_reductions": (
        (3, 4),
        lambda: [
            L.Lambda(
                lambda x: (
                    x
                    - gm.ops.mean(x, axis=-1, keepdims=True)
                    + gm.ops.max(x, axis=1, keepdims=True)
                )
            )
        ],
        lambda: TorchFunction(lambda x: x - x.mean(-1, keepdim=True) + x.amax(1, keepdim=True)),
    ),
    "lambda_softmax_clip": (
        (6,),
        lambda: [L.Lambda(lambda x: gm.ops.softmax(gm.ops.clip(x, -1.0, 1.0) * 3.0))],
        lambda: TorchFunction(lambda x: torch.softmax(x.clamp(-1.0, 1.0) * 3.0, dim=-1)),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_and_gradients_match_torch(case):
    shape, make_layers, make_module = CASES[case]
    model = _model(shape, *make_layers())
    assert_matches_torch(model, make_module(), _inputs(shape))


def test_a_small_network_of_the_new_layers_trains_as_torch():
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.GroupNorm(2, 8),
        nn.PReLU(8),
        nn.Conv2d(8, 4, 3),
        nn.InstanceNorm2d(4, affine=True),
        nn.Mish(),
        nn.Flatten(2),
        nn.LayerNorm(16),
        nn.Linear(16, 5),
        nn.Hardswish(),
        nn.Flatten(),
        nn.Linear(20, 3),
    )
    model = (
        gm.ModelBuilder((3, 6, 6))
        .conv2d(8, 3, padding=1)
        .group_norm(2)
        .prelu(8)
        .conv2d(4, 3)
        .instance_norm2d(affine=True)
        .mish()
        .flatten(2)
        .layer_norm()
        .dense(5, activation="hardswish")
        .flatten()
        .dense(3)
        .build(seed=0)
    )
    from layer_parity import copy_weights_from_torch

    copy_weights_from_torch(model, net)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.05), batch_size=8)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((8, 3, 6, 6)).astype(np.float32)
        y = rng.integers(0, 3, 8).astype(np.int32)
        step = trainer.train_batch(x, y)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(
            net(torch.from_numpy(x)), torch.from_numpy(y.astype(np.int64))
        )
        loss.backward()
        optimizer.step()
        assert step.loss == pytest.approx(loss.item(), rel=1e-4)
    for name, param in zip(model.trainable_weight_names, net.parameters()):
        np.testing.assert_allclose(
            model.get_weights()[name], param.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name
        )


def test_silu_is_the_swish_layer_and_swish_keeps_its_name():
    assert L.SiLU is L.Swish
    model = gm.ModelBuilder((4,)).silu().swish().build()
    assert [layer.kind for layer in model.layers] == ["swish", "swish"]


def test_builder_normalizations_read_the_channels_of_the_current_output():
    model = gm.ModelBuilder((6, 4, 4)).group_norm(3).instance_norm2d().layer_norm().build()
    group, instance, layer_norm = model.layers
    assert (group.num_groups, group.num_channels) == (3, 6)
    assert instance.num_features == 6
    assert layer_norm.normalized_shape == (4,)
