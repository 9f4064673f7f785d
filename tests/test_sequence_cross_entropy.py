"""Cross entropy with one label per position: (N, T, V) logits against (N, T) targets, as
torch's CrossEntropyLoss over (N, V, T), with ignore_index and label smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm

T, D, V = 7, 6, 5


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Linear(D, V)
    x = gm.Input((T, D))
    model = gm.Model(x, gm.layers.Dense(V)(x), seed=seed)
    model.set_weights(
        {
            "dense_0.weight": net.weight.detach().numpy().copy(),
            "dense_0.bias": net.bias.detach().numpy().copy(),
        }
    )
    return net, model


@pytest.mark.parametrize(
    "arguments", [{}, {"ignore_index": -100}, {"label_smoothing": 0.1, "ignore_index": 2}]
)
def test_sequence_cross_entropy_trains_as_torch(arguments):
    net, model = _pair()
    trainer = gm.Trainer(
        model, loss=gm.losses.CrossEntropy(**arguments), optimizer=gm.optim.SGD(lr=0.5)
    )
    reference = torch.optim.SGD(net.parameters(), lr=0.5)
    torch_loss = nn.CrossEntropyLoss(**arguments)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.standard_normal((4, T, D)).astype(np.float32)
        y = rng.integers(0, V, (4, T)).astype(np.int32)
        if "ignore_index" in arguments:
            y[rng.random((4, T)) < 0.3] = arguments["ignore_index"]
        result = trainer.train_batch(x, y)
        reference.zero_grad()
        logits = net(torch.from_numpy(x))
        loss = torch_loss(logits.transpose(1, 2), torch.from_numpy(y.astype(np.int64)))
        loss.backward()
        reference.step()
        assert result.loss == pytest.approx(loss.item(), rel=1e-5)
        predicted = logits.argmax(-1).numpy()
        kept = y != arguments.get("ignore_index", -(10**9))
        assert result.accuracy == pytest.approx((predicted == y)[kept].mean())
    np.testing.assert_allclose(
        model.get_weights()["dense_0.weight"], net.weight.detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_sequence_labels_of_the_wrong_shape_are_named():
    _, model = _pair()
    trainer = gm.Trainer(model, loss="cross_entropy")
    x = np.zeros((2, T, D), np.float32)
    with pytest.raises(
        ValueError, match=r"y must have shape \(N, 7\) of class indices, got \(2,\)"
    ):
        trainer.train_batch(x, np.zeros(2, np.int32))
    with pytest.raises(ValueError, match=r"holds the label 5, outside the valid range \[0, 5\)"):
        trainer.train_batch(x, np.full((2, T), 5, np.int32))
