"""The recurrence's per-step products run on W_hh (and an LSTM's W_hr) packed into panels of
columns: widths and batches that are not whole panels or row blocks, and products large
enough to be split over two threads, against torch's layers (outputs and every gradient)."""

from __future__ import annotations

import pytest

from recurrent_parity import Config, check_parity, thread_counts

threads = thread_counts(1, 2)


# hidden 40: an LSTM's 160 gate columns are 5 panels of 32 (10 of 16); proj_size 21 leaves a
# partial panel; batch 11 leaves a partial row block. 11 x 160 x 40 multiply-adds per step
# pass the size at which a product is split over the threads. Hidden 130: W_hh's 520 x 130
# floats are packed by both threads (16.25 panels of 32 columns, 8.125 blocks of 16 rows).
@pytest.mark.parametrize(
    "config",
    [
        Config("lstm", hidden_size=40, input_size=9),
        Config("lstm", hidden_size=40, input_size=9, proj_size=21, bidirectional=True),
        Config("lstm", hidden_size=130, input_size=9),
        Config("gru", hidden_size=47, input_size=9, initial_state=True, lengths=True),
        Config("rnn_tanh", hidden_size=130, input_size=9, num_layers=2),
    ],
    ids=lambda c: c.id(),
)
def test_products_across_panels_and_threads_match_torch(config: Config, threads: int) -> None:
    check_parity(config, batch=11, steps=6)


# The backward pass packs W_hh (4H x H) and W_hr (P x H) split over the threads once either
# holds 65,536 floats: hidden 130 packs 520 x 130 (thread 2 takes the partial panel of 2
# columns) for one padded row; hidden 300 projected to 230 packs W_hr's 230 x 300 too.
@pytest.mark.parametrize(
    "config,batch",
    [
        (Config("lstm", hidden_size=130, input_size=9, lengths=True), 1),
        (Config("lstm", hidden_size=300, input_size=7, proj_size=230), 3),
    ],
    ids=lambda v: v.id() if isinstance(v, Config) else f"batch{v}",
)
def test_gradients_of_weights_packed_over_threads_match_torch(
    config: Config, batch: int, threads: int
) -> None:
    check_parity(config, batch=batch, steps=4)
