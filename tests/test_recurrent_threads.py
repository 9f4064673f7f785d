"""The recurrence's time loop over 1, 2 and 3 threads: a batch with rows enough for every
thread runs each thread's block of rows through all steps (13 rows: 6 + 7 on two threads,
4 + 4 + 5 on three), a smaller one splits each step's product and gate math instead (5 rows).
Both against torch (outputs and every gradient, training form; predict, inference form), and
the same bits at every thread count, since each row's sums run in one order."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from recurrent_parity import (
    Config,
    assert_close,
    check_parity,
    draw_inputs,
    gometal_run,
    thread_counts,
    torch_module,
    upstreams_for,
)
from test_recurrent_embedded_inputs import EMBED, _embedded_model, _torch_logits, _torch_pair

THREADS = [1, 2, 3]


threads = thread_counts(*THREADS)


# hidden 40 and 130: each step's product is large enough to be split over the threads when
# the rows are too few to split the loop.
CONFIGS = [
    Config("lstm", num_layers=2, hidden_size=40, input_size=9, lengths=True),
    Config(
        "lstm", hidden_size=40, input_size=9, proj_size=21, bidirectional=True, initial_state=True
    ),
    Config(
        "gru", hidden_size=47, input_size=9, initial_state=True, lengths=True, bidirectional=True
    ),
    Config("rnn_tanh", hidden_size=130, input_size=9, num_layers=2, lengths=True),
]


@pytest.mark.parametrize("batch", [13, 5])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id())
def test_time_loops_over_threads_match_torch(config: Config, batch: int, threads: int) -> None:
    check_parity(config, batch=batch, steps=7)


@pytest.mark.parametrize("batch", [13, 5])
def test_predict_of_an_embedded_lstm_over_threads_matches_torch(batch: int, threads: int) -> None:
    # 6 table rows for 9 steps: the first layer reads the table's projected rows by id.
    config = Config("lstm", num_layers=2, input_size=EMBED, hidden_size=40)
    embedding, module = _torch_pair(config, 6, None)
    ids = np.random.default_rng(11).integers(0, 6, size=(batch, 9)).astype(np.int32)
    model = _embedded_model(config, 6, None, embedding, module, 9)
    assert_close(model.predict(ids), _torch_logits(embedding, module, ids), "sequence")


@pytest.mark.parametrize("batch", [13, 5])
def test_outputs_and_gradients_are_the_same_bits_at_every_thread_count(batch: int) -> None:
    config = Config("lstm", num_layers=2, hidden_size=40, input_size=9, lengths=True)
    state_dict = torch_module(config).state_dict()
    arrays = draw_inputs(config, batch, 7, seed=5)
    shapes = {"sequence": (batch, 7, 40), "h_n": (batch, 2, 40), "c_n": (batch, 2, 40)}
    upstreams = upstreams_for(shapes, seed=6)
    before = gm.get_num_threads()
    runs = []
    try:
        for count in THREADS:
            gm.set_num_threads(count)
            runs.append(gometal_run(config, state_dict, arrays, upstreams))
    finally:
        gm.set_num_threads(before)
    (outputs, grads), rest = runs[0], runs[1:]
    for count, (other_outputs, other_grads) in zip(THREADS[1:], rest):
        for key, value in outputs.items():
            np.testing.assert_array_equal(other_outputs[key], value, f"{count} threads: {key}")
        for key, value in grads.items():
            np.testing.assert_array_equal(other_grads[key], value, f"{count} threads: d{key}")
