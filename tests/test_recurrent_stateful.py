"""Stateful recurrent layers: each training batch starts from the previous batch's final
states, detached (truncated backpropagation through time), as torch's loop that carries
``(h.detach(), c.detach())``; reset_states zeroes them; the batch size is fixed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm

VOCAB, EMBED, HIDDEN, STEPS, BATCH = 9, 6, 10, 8, 3


class StatefulCharLM(nn.Module):
    def __init__(self, cell: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        recurrent = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = recurrent(EMBED, HIDDEN, num_layers=2, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens, state):
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state


def paired_models(cell: str):
    """A torch character LM and its gometal twin (stateful ``cell`` layers) with equal weights.

    Returns:
        ``(module, model, rnn)``: the torch module, the gometal model and its recurrent layer.
    """
    torch.manual_seed(0)
    module = StatefulCharLM(cell)
    tokens = gm.Input((None,), dtype="int32")
    embed = gm.layers.Embedding(VOCAB, EMBED)
    layer_class = gm.layers.LSTM if cell == "lstm" else gm.layers.GRU
    rnn = layer_class(EMBED, HIDDEN, num_layers=2, stateful=True, batch_size=BATCH)
    head = gm.layers.Dense(VOCAB)
    model = gm.Model(tokens, head(rnn(embed(tokens))), seed=0)
    embed.set_weights({"weight": module.embed.weight.detach().numpy()})
    rnn.set_weights({k: v.detach().numpy() for k, v in module.rnn.state_dict().items()})
    head.set_weights({k: v.detach().numpy() for k, v in module.head.state_dict().items()})
    return module, model, rnn


def torch_training_step(
    module: StatefulCharLM, optimizer: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray, state
):
    """One torch step of truncated backpropagation through time: the batch starts from
    ``state`` and its final states come back detached for the next batch.

    Returns:
        ``(loss, state)``: the batch's loss as a float and its final states, detached.
    """
    optimizer.zero_grad()
    logits, state = module(torch.from_numpy(x.astype(np.int64)), state)
    loss = nn.functional.cross_entropy(logits.transpose(1, 2), torch.from_numpy(y.astype(np.int64)))
    loss.backward()
    optimizer.step()
    state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    return loss.item(), state


def _stream(steps: int):
    """Consecutive windows: row b of batch k+1 continues row b of batch k."""
    rng = np.random.default_rng(0)
    text = np.cumsum(rng.integers(0, 3, BATCH * (steps * STEPS + 1))) % VOCAB
    rows = text[: BATCH * (steps * STEPS + 1)].reshape(BATCH, -1)
    for k in range(steps):
        window = rows[:, k * STEPS : k * STEPS + STEPS + 1]
        yield window[:, :-1].astype(np.int32), window[:, 1:].astype(np.int32)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_carries_detached_states_as_torch(cell: str) -> None:
    module, model, rnn = paired_models(cell)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2))
    reference = torch.optim.Adam(module.parameters(), lr=1e-2)
    state = None
    for x, y in _stream(10):
        ours = trainer.train_batch(x, y).loss
        loss, state = torch_training_step(module, reference, x, y, state)
        np.testing.assert_allclose(ours, loss, rtol=1e-4)
    h_n = state[0] if cell == "lstm" else state
    np.testing.assert_allclose(
        rnn.get_weights()["state_h"], h_n.transpose(0, 1).numpy(), rtol=1e-4, atol=1e-5
    )


def test_reset_states_starts_again_from_zeros() -> None:
    _, model, rnn = paired_models("lstm")
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.0))
    (x, y), *_ = _stream(1)
    first = trainer.train_batch(x, y).loss
    assert np.abs(rnn.get_weights()["state_c"]).max() > 0
    assert trainer.train_batch(x, y).loss != first  # started from the carried states
    rnn.reset_states()
    assert not np.any(rnn.get_weights()["state_h"])
    assert trainer.train_batch(x, y).loss == pytest.approx(first, rel=1e-6)


def test_a_stateful_layer_needs_its_batch_size() -> None:
    with pytest.raises(
        ValueError,
        match=r"batch_size \(a stateful layer's batch\) must be a positive int, got None",
    ):
        gm.layers.LSTM(4, 5, stateful=True)
    with pytest.raises(
        ValueError, match=r"initial states as inputs or keeps them \(stateful\), not both"
    ):
        gm.layers.GRU(4, 5, stateful=True, batch_size=2, initial_state=True)
    _, model, _ = paired_models("gru")
    trainer = gm.Trainer(model, loss="cross_entropy")
    x = np.zeros((BATCH + 1, STEPS), np.int32)
    with pytest.raises(
        ValueError, match=rf"the state has {BATCH} rows but the batch has {BATCH + 1}"
    ):
        trainer.train_batch(x, x)
    with pytest.raises(ValueError, match=r"is not stateful"):
        gm.layers.GRU(4, 5).reset_states()


RESUME = """
import json, sys
import numpy as np
import gometal as gm
from test_recurrent_stateful import _stream
gm.set_num_threads(2)
trainer = gm.Trainer.load(sys.argv[1])
losses = [trainer.train_batch(x, y).loss for x, y in list(_stream(8))[4:]]
state = trainer.model.get_weights()
print(json.dumps({"losses": losses, "state": state["lstm_0.state_h"].tolist()}))
"""


def test_a_stateful_run_resumes_exactly_in_a_new_process(tmp_path) -> None:
    """4 steps, a checkpoint, 4 more in a new process: the losses and states of 8 at once."""
    threads = gm.get_num_threads()
    gm.set_num_threads(2)  # as the new process runs
    try:
        _check_resume(tmp_path)
    finally:
        gm.set_num_threads(threads)


def _check_resume(tmp_path: Path) -> None:
    batches = list(_stream(8))
    straight = gm.Trainer(
        paired_models("lstm")[1], loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2)
    )
    expected = [straight.train_batch(x, y).loss for x, y in batches]
    split = gm.Trainer(
        paired_models("lstm")[1], loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2)
    )
    for x, y in batches[:4]:
        split.train_batch(x, y)
    split.save(tmp_path / "run.ckpt")
    result = subprocess.run(
        [sys.executable, "-c", RESUME, str(tmp_path / "run.ckpt")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
    )
    resumed = json.loads(result.stdout.strip().splitlines()[-1])
    assert resumed["losses"] == expected[4:]
    np.testing.assert_array_equal(
        np.array(resumed["state"], np.float32), straight.model.get_weights()["lstm_0.state_h"]
    )
