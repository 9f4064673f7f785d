"""PyTorch twins of gometal models: build both from the same layer list, copy weights across."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

import gometal as gm

torch.set_num_threads(1)

TORCH_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def gm_weights_from_torch(net: nn.Module) -> dict[str, np.ndarray]:
    """Maps the i-th nn.Linear of `net` to gometal's `dense_i` (state_dict `k.weight` ->
    `dense_i.weight`, both in (out_features, in_features) layout)."""
    weights = {}
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for i, linear in enumerate(linears):
        weights[f"dense_{i}.weight"] = linear.weight.detach().numpy().copy()
        if linear.bias is not None:
            weights[f"dense_{i}.bias"] = linear.bias.detach().numpy().copy()
    return weights


def mlp_pair(sizes, activation="relu", seed=0):
    """A torch nn.Sequential MLP and the same gometal model holding the same weights."""
    torch.manual_seed(seed)
    modules = []
    builder = gm.ModelBuilder((sizes[0],))
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        modules.append(nn.Linear(fan_in, fan_out))
        builder = builder.dense(fan_out)
        if i < len(sizes) - 2:
            modules.append(TORCH_ACTIVATIONS[activation]())
            builder = getattr(builder, activation)()
    net = nn.Sequential(*modules)
    model = builder.build(seed=seed)
    model.set_weights(gm_weights_from_torch(net))
    return net, model


def assert_weights_match(model, net, rtol=1e-4, atol=1e-5):
    """Every gometal weight equals the matching torch parameter."""
    got = model.get_weights()
    expected = gm_weights_from_torch(net)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=name)


def t(x: np.ndarray) -> torch.Tensor:
    """A torch tensor sharing `x`'s values (int arrays become int64, as torch's losses want)."""
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        return torch.from_numpy(x.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def torch_step(net, optimizer, loss_fn, x, y) -> float:
    """One torch training step on numpy inputs; returns the pre-update loss."""
    optimizer.zero_grad()
    loss = loss_fn(net(t(x)), t(y))
    loss.backward()
    optimizer.step()
    return loss.item()
