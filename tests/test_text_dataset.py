"""Token windows: y is x shifted by one, windows are a function of (seed, epoch), the split by
position keeps validation tokens out of training, fit drives the loader, bad sizes are named."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal import text

BLOCK = 8


@pytest.fixture
def tokens() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 50, size=1000).astype(np.uint16)


def all_batches(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_y_is_x_shifted_by_one_and_both_are_the_windows_tokens(tokens):
    data = text.TokenDataset(tokens, block_size=BLOCK, validation_fraction=0.0)
    loader = data.loader("train", batch_size=4, batches_per_epoch=3, seed=1)
    starts = loader.epoch_starts(0)
    batches = all_batches(loader)
    assert len(batches) == len(loader) == 3
    for (x, y), row in zip(batches, starts):
        assert x.dtype == y.dtype == np.int32
        assert x.shape == y.shape == (4, BLOCK)
        assert x.flags.c_contiguous and y.flags.c_contiguous
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        for i, start in enumerate(row):
            np.testing.assert_array_equal(x[i], tokens[start : start + BLOCK])
            np.testing.assert_array_equal(y[i], tokens[start + 1 : start + BLOCK + 1])


def test_windows_are_deterministic_per_seed_and_epoch_and_differ_across_epochs(tokens):
    data = text.TokenDataset(tokens, block_size=BLOCK)
    first = data.loader("train", 4, 5, seed=7)
    second = data.loader("train", 4, 5, seed=7)
    epoch0, epoch1 = all_batches(first), all_batches(first)
    assert first.epoch == 2
    for a, b in zip(epoch0, all_batches(second)):
        np.testing.assert_array_equal(a[0], b[0])
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(epoch0, epoch1))
    # set_epoch jumps to an epoch: the batches an uninterrupted run would see there.
    second.set_epoch(1)
    for a, b in zip(epoch1, all_batches(second)):
        np.testing.assert_array_equal(a[0], b[0])
    other_seed = data.loader("train", 4, 5, seed=8)
    assert not np.array_equal(other_seed.epoch_starts(0), first.epoch_starts(0))
    # The starts cover the whole range of windows over many epochs, uniformly.
    starts = np.concatenate([first.epoch_starts(e).ravel() for e in range(200)])
    assert starts.min() == 0 and starts.max() == data.train.num_windows - 1


def test_a_train_and_a_validation_loader_with_one_seed_draw_different_windows(tokens):
    data = text.TokenDataset(tokens, block_size=BLOCK, validation_fraction=0.5)
    train, validation = data.loader("train", 4, 3), data.loader("validation", 4, 3)
    assert not np.array_equal(train.epoch_starts(0), validation.epoch_starts(0))


def test_the_split_by_position_has_no_overlap(tokens):
    positions = np.arange(len(tokens))
    data = text.TokenDataset(positions, block_size=BLOCK, validation_fraction=0.25)
    cut = 750
    assert len(data.train.tokens) == cut and len(data.validation.tokens) == 250
    seen = {}
    for split in ("train", "validation"):
        loader = data.loader(split, batch_size=16, batches_per_epoch=20, seed=3)
        seen[split] = np.concatenate([np.concatenate([x, y], axis=1) for x, y in loader])
    assert seen["train"].max() < cut <= seen["validation"].min()
    train, validation = text.split_by_position(positions, 0.25)
    np.testing.assert_array_equal(np.concatenate([train, validation]), positions)


def test_a_token_file_gives_the_same_batches_as_its_array(tmp_path):
    corpus = "abcdefghij klmnop\n" * 40
    tokenizer = text.CharTokenizer.from_text(corpus)
    text.write_token_file(tmp_path / "c.tokens", corpus, tokenizer)
    from_file = text.TokenDataset(tmp_path / "c.tokens", block_size=BLOCK)
    from_array = text.TokenDataset(tokenizer.encode(corpus), block_size=BLOCK)
    assert isinstance(from_file.tokens, np.memmap)
    assert from_file.tokenizer == tokenizer
    for a, b in zip(
        all_batches(from_file.loader("validation", 2, 4)),
        all_batches(from_array.loader("validation", 2, 4)),
    ):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_fit_drives_the_loader_epoch_by_epoch(tokens):
    data = text.TokenDataset(tokens % 4, block_size=BLOCK)
    loader = data.loader("train", batch_size=4, batches_per_epoch=3, seed=2)

    def trainer():
        model = gm.ModelBuilder((BLOCK,)).dense(BLOCK).build(seed=0)
        return gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=1e-3), batch_size=4)

    fitted = trainer()
    history = fitted.fit(loader, epochs=2, verbose=0)
    by_hand = trainer()
    for epoch in range(2):
        losses = [
            by_hand.train_batch(*data.train.batch(row)).loss for row in loader.epoch_starts(epoch)
        ]
        assert history.history["loss"][epoch] == pytest.approx(np.mean(losses), rel=1e-6)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            {"block_size": 1000},
            ValueError,
            r"block_size 1000 needs at least 1001 tokens, the train",
        ),
        ({"block_size": 100, "validation_fraction": 0.05}, ValueError, r"validation split has 50"),
        ({"block_size": 0}, ValueError, r"block_size must be a positive int, got 0"),
        ({"block_size": 2.5}, TypeError, r"block_size must be a positive int, got 2.5"),
        ({"block_size": 8, "validation_fraction": 1.0}, ValueError, r"in \[0, 1\), got 1.0"),
        ({"block_size": 8, "validation_fraction": "0.1"}, TypeError, r"must be a number"),
    ],
)
def test_bad_sizes_are_refused_with_their_values(tokens, arguments, error, message):
    with pytest.raises(error, match=message):
        text.TokenDataset(tokens, **arguments)


def test_bad_loader_arguments_are_refused(tokens):
    data = text.TokenDataset(tokens, block_size=BLOCK, validation_fraction=0.0)
    with pytest.raises(ValueError, match=r"no validation split: validation_fraction is 0"):
        data.loader("validation", 4, 2)
    with pytest.raises(
        ValueError, match=r"split must be one of \['train', 'validation'\], got 'test'"
    ):
        data.loader("test", 4, 2)
    with pytest.raises(ValueError, match=r"batches_per_epoch must be a positive int, got 0"):
        data.loader("train", 4, 0)
    with pytest.raises(ValueError, match=r"epoch must be a non-negative int, got -1"):
        data.loader("train", 4, 2).set_epoch(-1)
    with pytest.raises(ValueError, match=r"starts must be in \[0, 992\), got 0..992"):
        data.train.batch(np.array([0, 992]))
    with pytest.raises(ValueError, match=r"1-D integer array, got shape \(2, 500\)"):
        text.TokenDataset(tokens.reshape(2, 500), block_size=BLOCK)
