"""Consecutive token batches for truncated BPTT: each row continues the previous batch's
row, y is x shifted by one within the stream, the streams are the corpus cut in
batch_size equal parts, offsets are a function of (seed, epoch), bad sizes are named."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import text

SEQ = 5


@pytest.fixture
def tokens() -> np.ndarray:
    return np.arange(203, dtype=np.uint16)  # the ids are their positions


def test_rows_continue_each_other_and_y_is_x_shifted_within_the_stream(tokens):
    loader = text.TokenStreamLoader(tokens, batch_size=4, seq_len=SEQ, seed=3)
    offset, length = loader.offset(0), loader.stream_length(0)
    assert 0 <= offset < SEQ and length == (len(tokens) - offset) // 4
    batches = list(loader)
    assert len(batches) == (length - 1) // SEQ
    for b, (x, y) in enumerate(batches):
        assert x.dtype == y.dtype == np.int32 and x.shape == y.shape == (4, SEQ)
        assert x.flags.c_contiguous and y.flags.c_contiguous
        for i in range(4):
            first = offset + i * length + b * SEQ
            np.testing.assert_array_equal(x[i], np.arange(first, first + SEQ))
            np.testing.assert_array_equal(y[i], np.arange(first + 1, first + SEQ + 1))
    # Every token of a stream that an x reads is read once, in order; no stream runs into
    # the next one's tokens.
    xs = np.concatenate([x for x, _ in batches], axis=1)
    for i in range(4):
        assert xs[i, -1] + 1 < offset + (i + 1) * length + 1
        np.testing.assert_array_equal(np.diff(xs[i]), 1)


def test_offsets_are_a_function_of_seed_and_epoch(tokens):
    a = text.TokenStreamLoader(tokens, 2, SEQ, seed=7)
    b = text.TokenStreamLoader(tokens, 2, SEQ, seed=7)
    offsets = [a.offset(e) for e in range(12)]
    assert offsets == [b.offset(e) for e in range(12)]
    assert len(set(offsets)) > 1
    b.set_epoch(4)
    first = next(iter(b))[0]
    np.testing.assert_array_equal(first, next(a.epoch_batches(4))[0])
    assert [text.TokenStreamLoader(tokens, 2, SEQ, seed=8).offset(e) for e in range(12)] != (
        offsets
    )


def test_iterating_advances_the_epoch_and_len_counts_the_next_epochs_batches(tokens):
    loader = text.TokenStreamLoader(tokens, 3, SEQ, seed=1)
    assert loader.epoch == 0 and len(loader) == loader.batches_in(0)
    list(loader)
    assert loader.epoch == 1 and len(loader) == loader.batches_in(1)


def test_the_dataset_gives_a_stream_loader_per_split(tokens):
    data = text.TokenDataset(tokens, block_size=4, validation_fraction=0.25)
    train = data.stream_loader("train", 2, SEQ, seed=0)
    validation = data.stream_loader("validation", 2, SEQ, seed=0)
    assert train.stateful and validation.stateful
    assert int(next(iter(validation))[0].min()) >= len(data.train.tokens)
    assert int(next(iter(train))[1].max()) < len(data.train.tokens)


def test_bad_sizes_are_named(tokens):
    with pytest.raises(ValueError, match=r"needs at least 79 tokens, got 20"):
        text.TokenStreamLoader(tokens[:20], batch_size=2, seq_len=26)
    with pytest.raises(ValueError, match="seq_len"):
        text.TokenStreamLoader(tokens, 2, 0)
    with pytest.raises(ValueError, match="1-D integer array"):
        text.TokenStreamLoader(np.zeros((4, 4), np.int32), 2, SEQ)
    with pytest.raises(ValueError, match="1-D integer array"):
        text.TokenStreamLoader(np.zeros(100, np.float32), 2, SEQ)
