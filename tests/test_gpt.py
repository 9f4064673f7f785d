"""``gm.models.GPT`` against a nanoGPT-style torch GPT: the same weights give the same
logits, and 50 AdamW steps (decay on 2-D weights, tied embedding) the same losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from _torch_gpt import TorchGPT  # benchmarks/: the peer of workloads D and D-long

VOCAB, BLOCK, LAYERS, HEADS, EMBD = 29, 16, 2, 2, 32
KEYS = slice(EMBD, 2 * EMBD)  # the key part of in_proj_bias


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    net = TorchGPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD)
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD, seed=seed)
    model.set_weights(gm.models.gpt_weights_from_nanogpt(net.state_dict(), LAYERS))
    return net, model


def _batches(steps: int, batch: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    # A learnable stream: each token is the previous one plus a small step, mod VOCAB.
    for _ in range(steps):
        start = rng.integers(0, VOCAB, (batch, 1))
        seq = (start + np.cumsum(rng.integers(1, 3, (batch, BLOCK + 1)), axis=1)) % VOCAB
        yield seq[:, :-1].astype(np.int32), seq[:, 1:].astype(np.int32)


def test_gpt_trains_as_nanogpt_for_50_adamw_steps():
    net, model = _pair()
    shapes = model.weight_shapes
    optimizer = gm.optim.AdamW(
        lr=1e-3,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        param_groups=[{"params": lambda name: len(shapes[name]) < 2, "weight_decay": 0.0}],
    )
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer)
    reference = net.optimizer(lr=1e-3, weight_decay=0.1)
    ours, theirs = [], []
    for x, y in _batches(50):
        ours.append(trainer.train_batch(x, y).loss)
        reference.zero_grad()
        loss = net(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
        loss.backward()
        reference.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert (
        np.mean(theirs[-5:]) < np.mean(theirs[:5]) - 0.03
    )  # it learned: the check means something
    expected = gm.models.gpt_weights_from_nanogpt(net.state_dict(), LAYERS)
    for name, value in model.get_weights().items():
        if name.endswith("in_proj_bias"):
            # The key bias shifts every score of a query equally, so softmax cancels it: its
            # true gradient is 0, and Adam amplifies each framework's rounding noise there.
            value, expected[name] = np.delete(value, KEYS), np.delete(expected[name], KEYS)
        np.testing.assert_allclose(value, expected[name], rtol=1e-3, atol=1e-5, err_msg=name)


def test_gpt_weights_are_tied_and_start_as_nanogpt():
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD, seed=3)
    assert "lm_head.weight" not in model.weight_shapes  # the head reads wte.weight
    weights = model.get_weights()
    assert weights["wte.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert weights["h.layers.0.linear2.weight"].std() == pytest.approx(
        0.02 / np.sqrt(2 * LAYERS), rel=0.1
    )
    np.testing.assert_array_equal(weights["h.norm.weight"], np.ones(EMBD, np.float32))
    with pytest.raises(ValueError, match=r"\[gather\] index 29"):
        model.predict(np.full((1, BLOCK), VOCAB, np.int32))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 16\)"):
        model.predict(np.zeros((1, BLOCK + 1), np.int32))


def test_on_the_stdlib_corpus_gometal_and_torch_reach_the_same_validation_loss(tmp_path):
    corpus = gm.text.stdlib_corpus().text[:200_000]
    tokenizer = gm.text.CharTokenizer.from_text(corpus)
    gm.text.write_token_file(tmp_path / "c.tokens", corpus, tokenizer)
    data = gm.text.TokenDataset(tmp_path / "c.tokens", block_size=BLOCK)
    train = data.loader("train", 8, batches_per_epoch=120, seed=0)
    val = data.loader("validation", 8, batches_per_epoch=10, seed=0)
    vocab = tokenizer.vocab_size
    torch.manual_seed(5)
    net = TorchGPT(vocab, BLOCK, LAYERS, HEADS, EMBD)
    model = gm.models.GPT(vocab, BLOCK, LAYERS, HEADS, EMBD)
    model.set_weights(gm.models.gpt_weights_from_nanogpt(net.state_dict(), LAYERS))
    shapes = model.weight_shapes
    trainer = gm.Trainer(
        model,
        loss="cross_entropy",
        optimizer=gm.optim.AdamW(
            lr=3e-3,
            betas=(0.9, 0.95),
            weight_decay=0.1,
            param_groups=[{"params": lambda n: len(shapes[n]) < 2, "weight_decay": 0.0}],
        ),
    )
    reference = net.optimizer(lr=3e-3, weight_decay=0.1)
    history = trainer.fit(train, epochs=1, validation=val, verbose=0)
    train.set_epoch(0)
    for x, y in train:
        reference.zero_grad()
        net(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))).backward()
        reference.step()
    val.set_epoch(0)
    with torch.no_grad():
        losses = [
            net(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))).item()
            for x, y in val
        ]
    assert history.val_loss[-1] == pytest.approx(np.mean(losses), rel=0.02)
    assert history.val_loss[-1] < np.log(vocab) - 0.5  # well below a uniform guess
