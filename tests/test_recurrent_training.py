"""A character LSTM language model (Embedding -> 2-layer LSTM -> Dense) trained 50 Adam steps
in gometal and in torch from the same weights on the same batches: the same losses."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import gometal as gm

VOCAB, EMBED, HIDDEN, STEPS, BATCH = 11, 8, 16, 12, 4


class CharLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=2, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(tokens))[0])


def _models():
    torch.manual_seed(0)
    module = CharLM()
    tokens = gm.Input((None,), dtype="int32")
    embed = gm.layers.Embedding(VOCAB, EMBED)
    lstm = gm.layers.LSTM(EMBED, HIDDEN, num_layers=2)
    head = gm.layers.Dense(VOCAB)
    model = gm.Model(tokens, head(lstm(embed(tokens))), seed=0)
    embed.set_weights({"weight": module.embed.weight.detach().numpy()})
    lstm.set_weights({k: v.detach().numpy() for k, v in module.lstm.state_dict().items()})
    head.set_weights(
        {"weight": module.head.weight.detach().numpy(), "bias": module.head.bias.detach().numpy()}
    )
    return module, model


def test_fifty_adam_steps_give_torchs_losses() -> None:
    module, model = _models()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2))
    reference = torch.optim.Adam(module.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    # A text with structure (each character mostly follows its predecessor) so the loss falls.
    text = np.cumsum(rng.integers(0, 3, 4000)) % VOCAB
    ours, theirs = [], []
    for step in range(50):
        starts = rng.integers(0, len(text) - STEPS - 1, BATCH)
        x = np.stack([text[s : s + STEPS] for s in starts]).astype(np.int32)
        y = np.stack([text[s + 1 : s + STEPS + 1] for s in starts]).astype(np.int32)
        ours.append(trainer.train_batch(x, y).loss)
        reference.zero_grad()
        logits = module(torch.from_numpy(x.astype(np.int64)))
        loss = nn.functional.cross_entropy(
            logits.transpose(1, 2), torch.from_numpy(y.astype(np.int64))
        )
        loss.backward()
        reference.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert theirs[-1] < 0.8 * theirs[0]
