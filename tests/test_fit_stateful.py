"""``fit`` on a stateful loader (``gm.text.TokenStreamLoader``): truncated backpropagation
through time over consecutive batches, the states reset at each epoch's start, gives the
losses and weights of torch's loop that carries ``(h.detach(), c.detach())`` through an
epoch and starts each epoch from zeros."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from test_recurrent_stateful import BATCH, STEPS, VOCAB, paired_models, torch_training_step


def _tokens() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (np.cumsum(rng.integers(0, 3, 130)) % VOCAB).astype(np.int32)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fit_resets_states_each_epoch_and_carries_them_within_it_as_torch(cell: str) -> None:
    module, model, rnn = paired_models(cell)
    loader = gm.text.TokenStreamLoader(_tokens(), BATCH, STEPS, seed=1)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2))
    history = trainer.fit(loader, epochs=3, verbose=0)

    reference = torch.optim.Adam(module.parameters(), lr=1e-2)
    epoch_losses = []
    for epoch in range(3):
        state, losses = None, []
        for x, y in loader.epoch_batches(epoch):
            loss, state = torch_training_step(module, reference, x, y, state)
            losses.append(loss)
        epoch_losses.append(np.mean(losses))
    assert loader.batches_in(0) >= 3  # several batches carry states within an epoch
    np.testing.assert_allclose(history.loss, epoch_losses, rtol=1e-4)
    for name, value in module.rnn.state_dict().items():
        np.testing.assert_allclose(
            rnn.get_weights()[name], value.numpy(), rtol=1e-3, atol=1e-5, err_msg=name
        )


def test_model_reset_states_names_the_stateful_layers_and_zeroes_them() -> None:
    _, model, rnn = paired_models("lstm")
    trainer = gm.Trainer(model, loss="cross_entropy")
    x = _tokens()[: BATCH * STEPS].reshape(BATCH, STEPS)
    trainer.train_batch(x, x)
    assert np.abs(rnn.get_weights()["state_h"]).max() > 0
    assert model.reset_states() == [rnn.name]
    weights = rnn.get_weights()
    assert not weights["state_h"].any() and not weights["state_c"].any()
    features = gm.Input((3,))
    plain = gm.Model(features, gm.layers.Dense(2)(features))
    assert plain.reset_states() == []
