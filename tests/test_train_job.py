"""The main job, end to end: `gometal train` on the digits and on a generated folder."""

import json
import warnings

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

import gometal as gm
from gometal.apps.cli import main
from gometal.apps.train_job import build_cnn


def _history(out):
    return json.loads((out / "model.json").read_text())


def test_default_job_trains_the_digits_to_97_percent(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--workers", "0"]) == 0
    meta = _history(out)
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["history"][-1]["val_accuracy"] >= 0.97
    # The saved weights are the model's: they load back into the same architecture, and
    # gm.load_model rebuilds the model from the file alone, with those weights.
    weights = load_file(str(out / "model.safetensors"))
    model = build_cnn(tuple(meta["input_shape"]), 10)
    model.set_weights(weights)
    assert set(weights) == set(model.get_weights())
    loaded = gm.load_model(out / "model.safetensors")
    x = np.random.default_rng(0).standard_normal((4, *meta["input_shape"]), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def _write_two_class_folder(root, rng, per_class=40):
    # "left": the left half is brighter; "right": the right half is. Sizes and modes vary.
    for label, side in (("left", 0), ("right", 1)):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(20, 48, size=2)
            pixels = rng.integers(0, 80, size=(h, w, 3)).astype(np.uint8)
            half = slice(0, w // 2) if side == 0 else slice(w // 2, w)
            pixels[:, half] += 150
            image = Image.fromarray(pixels)
            if i % 5 == 0:
                image = image.convert("L")
            image.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "left" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_job_on_an_image_folder_skips_bad_files_and_saves_the_model(tmp_path):
    data = tmp_path / "data"
    _write_two_class_folder(data, np.random.default_rng(0))
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", str(data), "--epochs", "4", "--image-size", "16", "--out", str(out)])
    assert code == 0
    assert any("broken.jpg" in str(w.message) for w in caught)
    meta = _history(out)
    assert meta["classes"] == ["left", "right"]
    assert meta["input_shape"] == [3, 16, 16]
    assert len(meta["history"]) == 4
    assert meta["history"][-1]["val_accuracy"] >= 0.9
    assert (out / "model.safetensors").stat().st_size > 0


def test_cats_dogs_example_trains_on_a_cat_dog_folder(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    rng = np.random.default_rng(1)
    for label, channel in (("cat", 0), ("dog", 2)):  # cats reddish, dogs bluish
        (tmp_path / label).mkdir()
        for i in range(24):
            pixels = rng.integers(0, 90, size=(70, 80, 3)).astype(np.uint8)
            pixels[..., channel] += 160
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.jpg")
    (tmp_path / "bird").mkdir()  # other classes are ignored
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "bird" / "0.png")
    path = Path(__file__).resolve().parents[1] / "examples" / "cats_dogs.py"
    spec = importlib.util.spec_from_file_location("cats_dogs", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([str(tmp_path), "--epochs", "3", "--batch-size", "8"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 3
    assert float(lines[-1].split()[-1]) >= 0.9
    assert example.cats_dogs_cnn().count_params() == 548_322  # torch's count for this CNN
