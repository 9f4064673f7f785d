"""examples/char_lstm.py runs end to end: a stateful character LSTM trains on a token
stream and samples text with its states in the engine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "char_lstm.py"


def test_the_char_lstm_example_learns_and_samples(capsys):
    spec = importlib.util.spec_from_file_location("char_lstm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, last, sample = module.main(epochs=2, hidden=32, modules=("textwrap",))
    vocab_size = len(set(module.gm.text.stdlib_corpus(("textwrap",)).text))
    # Below a uniform guess over the characters after one epoch, and lower after the next.
    assert first < np.log(vocab_size) and last < first
    assert sample.startswith("def ") and len(sample) == 4 + 300
    assert "300 characters in" in capsys.readouterr().out
