"""Bad input to SimpleRNN, LSTM and GRU: clear errors naming the layer, the argument and the
expected and received values."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal.layers import GRU, LSTM, SimpleRNN


def test_a_wrong_input_size_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"layer 'lstm_0' \(LSTM\).*input_size=8\), got \(None, None, 7\)"
    ):
        LSTM(8, 16).apply(gm.Input((None, 7)), "lstm_0")
    with pytest.raises(ValueError, match=r"GRU layer.*\(N, T, input_size=4\), got \(None, 5\)"):
        GRU(4, 3)(gm.Input((5,)))


@pytest.mark.parametrize(
    "layer, shapes, pattern",
    [
        (
            LSTM(4, 6, num_layers=2, initial_state=True),
            [(1, 6), (2, 6)],
            r"h0 of shape \(N, D\*num_layers=2, 6\).*got \(None, 1, 6\)",
        ),
        (
            LSTM(4, 6, num_layers=2, initial_state=True, proj_size=3),
            [(2, 6), (2, 6)],
            r"h0 of shape \(N, D\*num_layers=2, 3\).*got \(None, 2, 6\)",
        ),
        (
            LSTM(4, 6, bidirectional=True, initial_state=True),
            [(2, 6), (1, 6)],
            r"c0 of shape \(N, D\*num_layers=2, 6\).*got \(None, 1, 6\)",
        ),
        (
            GRU(4, 6, initial_state=True),
            [(1, 5)],
            r"h0 of shape \(N, D\*num_layers=1, 6\).*got \(None, 1, 5\)",
        ),
    ],
)
def test_wrong_initial_state_shapes_are_named(layer, shapes, pattern) -> None:
    x = gm.Input((None, 4))
    with pytest.raises(ValueError, match=pattern):
        layer([x, *[gm.Input(s) for s in shapes]])


def test_a_missing_or_extra_input_is_named() -> None:
    x = gm.Input((None, 4))
    with pytest.raises(ValueError, match=r"takes 3 input\(s\) \(x, h0, c0\), got 2"):
        LSTM(4, 6, initial_state=True)([x, gm.Input((1, 6))])
    with pytest.raises(ValueError, match=r"takes 2 input\(s\) \(x, lengths\), got 1"):
        SimpleRNN(4, 6, lengths=True)(x)


def test_lengths_and_masks_of_the_wrong_shape_or_dtype_are_named() -> None:
    x = gm.Input((None, 4))
    with pytest.raises(ValueError, match=r"lengths \(N,\) or \(N, 1\), got \(None, 2\)"):
        GRU(4, 6, lengths=True)([x, gm.Input((2,), dtype="int32")])
    with pytest.raises(ValueError, match=r"expects lengths as int32, got float32"):
        GRU(4, 6, lengths=True)([x, gm.Input((1,))])
    with pytest.raises(ValueError, match=r"key_padding_mask \(N, T\), got \(None, 3\)"):
        GRU(4, 6, key_padding_mask=True)([x, gm.Input((3,))])


def _model_with_lengths(steps: int) -> gm.Model:
    x, lengths = gm.Input((None, 4)), gm.Input((1,), dtype="int32")
    return gm.Model([x, lengths], LSTM(4, 6, lengths=True)([x, lengths]), seed=0)


@pytest.mark.parametrize("bad, index", [(6, 1), (0, 2), (-3, 0)])
def test_lengths_outside_one_to_t_are_named_with_their_index(bad: int, index: int) -> None:
    model = _model_with_lengths(5)
    lengths = np.array([[5], [3], [1]], dtype=np.int32)
    lengths[index] = bad
    with pytest.raises(
        ValueError, match=rf"lengths must lie in \[1, T\] with T = 5.*got {bad} at index {index}"
    ):
        model.predict([np.zeros((3, 5, 4), np.float32), lengths])


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"LSTM hidden_size must be a positive int, got 0"):
        LSTM(4, 0)
    with pytest.raises(
        ValueError, match=r"proj_size must be an int in \[0, hidden_size=6\), got 6"
    ):
        LSTM(4, 6, proj_size=6)
    with pytest.raises(
        ValueError, match=r"SimpleRNN nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"
    ):
        SimpleRNN(4, 6, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"batch_first=True only.*got False"):
        GRU(4, 6, batch_first=False)
    with pytest.raises(
        ValueError, match=r"GRU output must be one of \['sequence', 'last', 'h_n'\], got 'c_n'"
    ):
        GRU(4, 6, output="c_n")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        LSTM(4, 6, dropout=1.5)
    with pytest.raises(ValueError, match=r"lengths or a key_padding_mask, not both"):
        LSTM(4, 6, lengths=True, key_padding_mask=True)


def test_a_mask_value_outside_zero_and_one_is_named() -> None:
    x, mask = gm.Input((None, 4)), gm.Input((None,))
    model = gm.Model([x, mask], GRU(4, 6, key_padding_mask=True, name="gru")([x, mask]), seed=0)
    bad = np.zeros((2, 3), np.float32)
    bad[1, 2] = 2.0
    with pytest.raises(
        ValueError, match=r"\[gru\] key_padding_mask must hold 1 at padded steps.*got 2.*\(1, 2\)"
    ):
        model.predict([np.zeros((2, 3, 4), np.float32), bad])


@pytest.mark.parametrize(
    "row, first_bad_step",
    [([1, 0, 0, 0], 0), ([0, 1, 0, 1], 1), ([0, 0, 1, 0], 2), ([1, 1, 1, 0], 0)],
)
def test_a_mask_whose_padding_is_not_a_suffix_is_named_by_row_and_step(row, first_bad_step):
    """Such a mask is not a length: predict and training refuse it, naming the first padded
    step that a kept step follows, and a refused training batch changes no weight."""
    x, mask = gm.Input((None, 4)), gm.Input((None,))
    lstm = LSTM(4, 6, key_padding_mask=True, output="last", name="lstm")
    model = gm.Model([x, mask], lstm([x, mask]), seed=0)
    masks = np.array([[0, 0, 0, 0], [0, 0, 1, 1], row], np.float32)
    inputs = [np.ones((3, 4, 4), np.float32), masks]
    pattern = (
        rf"\[lstm\] key_padding_mask must pad the end of each row only.*\(2, {first_bad_step}\)"
    )
    with pytest.raises(ValueError, match=pattern):
        model.predict(inputs)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1))
    before = model.get_weights()
    with pytest.raises(ValueError, match=pattern):
        trainer.train_batch(inputs, np.zeros((3, 6), np.float32))
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    # The same batch with the row's padding moved to its end trains.
    masks[2] = np.sort(masks[2])
    trainer.train_batch(inputs, np.zeros((3, 6), np.float32))
