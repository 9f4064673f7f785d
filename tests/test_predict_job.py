"""`gometal predict MODEL IMAGE...`: the classes and probabilities of image files, loaded with
the preprocessing the model records, checked against Pillow and NumPy."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gometal as gm
from gometal.apps.cli import main
from gometal.apps.train_job import build_cnn
from image_folders import COLOURS, solid_image, write_colour_folder

ARGPARSE_USAGE_ERROR = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on blue, green and red images, and unseen images of each colour."""
    root = tmp_path_factory.mktemp("predict")
    data = write_colour_folder(root / "data")
    out = root / "run"
    argv = ["train", str(data), "--out", str(out), "--epochs", "8", "--image-size", "8"]
    assert (
        main([*argv, "--batch-size", "8", "--lr", "0.01", "--workers", "0", "--no-progress"]) == 0
    )
    unseen = {}
    for index, (name, colour) in enumerate(sorted(COLOURS.items())):
        path = root / f"new-{name}.png"
        solid_image(colour, size=(12, 12), seed=900 + index).save(path)
        unseen[name] = str(path)
    return out, unseen


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _predict_json(capsys, *argv):
    assert main(["predict", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_names_the_right_colour(trained, capsys):
    out, unseen = trained
    results = _predict_json(capsys, str(out), *unseen.values(), "--top", "1")
    assert [r["predictions"][0]["class"] for r in results] == list(unseen)


def test_json_lists_the_top_classes_with_softmax_probabilities(trained, capsys):
    out, unseen = trained
    images = list(unseen.values())
    results = _predict_json(capsys, str(out / "model.safetensors"), *images, "--top", "2")
    # Reference: Pillow's pixels (already 12x12: resized to 8x8 bilinear, as torchvision),
    # scaled to [0, 1] (mean 0, std 1 recorded), through the saved model and a softmax.
    pixels = np.stack(
        [
            np.asarray(Image.open(p).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
            for p in images
        ]
    )
    x = (pixels.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    model = gm.load_model(out / "model.safetensors")
    expected = _softmax(model.predict(x).astype(np.float64))
    classes = ["blue", "green", "red"]
    assert [r["image"] for r in results] == images
    for result, row in zip(results, expected):
        assert set(result) == {"image", "predictions"}
        predictions = result["predictions"]
        assert len(predictions) == 2
        assert all(set(p) == {"class", "index", "probability"} for p in predictions)
        assert [p["index"] for p in predictions] == list(np.argsort(-row)[:2])
        assert all(p["class"] == classes[p["index"]] for p in predictions)
        np.testing.assert_allclose(
            [p["probability"] for p in predictions], np.sort(row)[::-1][:2], rtol=1e-5
        )


def test_top_beyond_the_classes_lists_them_all_summing_to_one(trained, capsys):
    out, unseen = trained
    (result,) = _predict_json(capsys, str(out), unseen["red"], "--top", "10")
    probabilities = [p["probability"] for p in result["predictions"]]
    assert sorted(p["class"] for p in result["predictions"]) == ["blue", "green", "red"]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)


def test_the_text_output_is_one_line_per_image(trained, capsys):
    out, unseen = trained
    assert main(["predict", str(out), unseen["green"], unseen["blue"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, (name, path) in zip(lines, [("green", unseen["green"]), ("blue", unseen["blue"])]):
        image, shown = line.split(": ")
        assert image == path
        # The default --top 3 shows all three classes, most probable first.
        pairs = [entry.split() for entry in shown.split(", ")]
        assert sorted(c for c, _ in pairs) == ["blue", "green", "red"] and pairs[0][0] == name
        probabilities = [float(p) for _, p in pairs]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=2e-4)


def test_predict_applies_the_recorded_resize_channels_and_normalisation(tmp_path, capsys):
    # A model saved by hand with grey 16x8 inputs, stretched, mean 0.4 and std 0.2.
    preprocessing = gm.vision.ImagePreprocessing((16, 8), 1, "stretch", (0.4,), (0.2,))
    model = build_cnn((1, 16, 8), 4, seed=5)
    metadata = {"classes": list("abcd"), "preprocessing": preprocessing.to_dict()}
    model.save(tmp_path / "model.safetensors", metadata=metadata)
    image = tmp_path / "wide.png"
    solid_image((120, 60, 200), size=(10, 30), seed=1, noise=60).save(image)
    (result,) = _predict_json(capsys, str(tmp_path), str(image), "--top", "4")
    grey = Image.open(image).convert("L").resize((8, 16), Image.Resampling.BILINEAR)
    x = ((np.asarray(grey, dtype=np.float32) / 255.0 - 0.4) / 0.2)[None, None]
    expected = _softmax(model.predict(x.astype(np.float32)).astype(np.float64))[0]
    got = {p["class"]: p["probability"] for p in result["predictions"]}
    np.testing.assert_allclose([got[c] for c in "abcd"], expected, rtol=1e-5)


def _predict_error(capsys, *argv):
    code = main(["predict", *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == ARGPARSE_USAGE_ERROR
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gometal predict: ")
    assert captured.out == ""
    return lines[0]


def test_bad_models_are_one_line_errors(trained, tmp_path, capsys):
    out, unseen = trained
    image = unseen["red"]
    line = _predict_error(capsys, str(tmp_path / "nowhere"), image)
    assert "nowhere" in line and "does not exist" in line
    line = _predict_error(capsys, str(tmp_path), image)
    assert "holds no model.safetensors" in line
    text = tmp_path / "notes.safetensors"
    text.write_text("not a model")
    line = _predict_error(capsys, str(text), image)
    assert "notes.safetensors" in line and "is not a gometal model file" in line
    bare = tmp_path / "bare.safetensors"
    gm.load_model(out / "model.safetensors").save(bare)
    line = _predict_error(capsys, str(bare), image)
    assert "records no image preprocessing and class names" in line
    broken = tmp_path / "broken.safetensors"
    record = json.loads((out / "model.json").read_text())
    record["preprocessing"]["channels"] = 2
    gm.load_model(out / "model.safetensors").save(broken, metadata=record)
    line = _predict_error(capsys, str(broken), image)
    assert "channels must be 3 (RGB) or 1 (grayscale), got 2" in line
    line = _predict_error(capsys, str(out), image, "--top", "0")
    assert "--top must be at least 1, got 0" in line


def test_bad_images_are_one_line_errors(trained, tmp_path, capsys):
    out, unseen = trained
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    line = _predict_error(capsys, str(out), unseen["red"], str(notes))
    assert "notes.png" in line and "is not a readable image" in line
    line = _predict_error(capsys, str(out), str(tmp_path / "missing.png"))
    assert "missing.png" in line and "does not exist" in line
    line = _predict_error(capsys, str(out), str(tmp_path))
    assert "is a folder" in line


def test_the_command_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gometal.apps.cli", "predict", "nowhere", "cat.png"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == ARGPARSE_USAGE_ERROR
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("gometal predict: MODEL 'nowhere' does not exist")
    assert done.stderr.count("\n") == 1
