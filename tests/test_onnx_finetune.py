"""examples/finetune_onnx.py end to end (an ONNX CNN gets a new head, is fine-tuned and
exported again), and the Model API it uses to cut a model at a layer."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import gometal as gm

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "finetune_onnx.py"


def _example():
    spec = importlib.util.spec_from_file_location("finetune_onnx", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_example_trains_from_an_onnx_file_and_exports_again(tmp_path, capsys):
    assert _example().main(["--out", str(tmp_path), "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(re.search(r"fine-tuned on all ten digits: val accuracy ([0-9.]+)", printed)[1])
    assert accuracy >= 0.9, printed
    diff = float(re.search(r"max \|difference\| ([0-9.e+-]+)", printed)[1])
    assert diff <= 1e-4

    # The exported file has the new 10-class head and runs in onnxruntime.
    session = onnxruntime.InferenceSession(str(tmp_path / "finetuned.onnx"))
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32), dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (3, 10)


def test_a_new_head_keeps_the_imported_layers_and_their_weights(tmp_path):
    base = gm.ModelBuilder((1, 8, 8)).conv2d(4, 3, padding=1).relu().flatten().dense(3).build(1)
    base.export_onnx(tmp_path / "base.onnx")
    loaded = gm.onnx.load(tmp_path / "base.onnx")
    flatten = [layer for layer in loaded.layers if isinstance(layer, gm.layers.Flatten)][-1]
    model = _example().new_head(loaded, classes=5, seed=0)
    assert model.output_shape == (5,)
    assert any(layer is flatten for layer in model.layers)
    conv = next(name for name in base.get_weights() if name.endswith(".weight"))
    np.testing.assert_array_equal(model.get_weights()[conv], base.get_weights()[conv])


def test_layer_lookup_errors_name_the_layers():
    x = gm.Input((4,))
    shared = gm.layers.Dense(4)
    model = gm.Model(x, shared(shared(x)))
    assert model.input is x
    assert model.get_layer(shared.name) is shared
    with pytest.raises(KeyError, match=r"no layer named 'nope'; layers: \['dense_0'\]"):
        model.get_layer("nope")
    with pytest.raises(ValueError, match=r"called 2 times"):
        model.layer_output(shared.name)
