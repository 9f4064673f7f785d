"""examples/keras_style.py runs end to end: fit on arrays, evaluate, save, reload."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "keras_style.py"


def test_the_keras_style_example_trains_saves_and_reloads(capsys):
    spec = importlib.util.spec_from_file_location("keras_style", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accuracy = module.main(epochs=8)
    printed = capsys.readouterr().out
    assert accuracy > 0.85  # digits: a few epochs of a small MLP reach ~0.95
    assert "predictions identical: True" in printed
    assert "val_loss" in printed
