"""`gometal train` on `Trainer.fit`: checkpoints, --resume, early stopping, plots, progress,
and the preprocessing recorded with the saved model."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

import gometal as gm
from gometal.apps.cli import main
from image_folders import write_colour_folder

ARGPARSE_USAGE_ERROR = 2
SMALL = ["--image-size", "8", "--batch-size", "8", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("colours") / "data")


def _train(data, out, *options):
    assert main(["train", str(data), "--out", str(out), *SMALL, *options]) == 0


def _model_json(out):
    return json.loads((out / "model.json").read_text())


def _error_line(capsys, argv):
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == ARGPARSE_USAGE_ERROR
    assert len(lines) == 1, lines
    assert lines[0].startswith("gometal train: ")
    return lines[0]


def test_the_saved_model_records_its_preprocessing(colours, tmp_path):
    out = tmp_path / "run"
    _train(colours, out, "--epochs", "2", "--channels", "1")
    expected = {
        "image_size": [8, 8],
        "channels": 1,
        "resize": "shorter",
        "mean": [0.0],
        "std": [1.0],
        "pixel_max": 255,
        "jpeg_draft": True,
    }
    meta = _model_json(out)
    assert meta["preprocessing"] == expected
    assert meta["classes"] == ["blue", "green", "red"]
    assert meta["outputs"] == "logits"
    assert meta["settings"]["epochs"] == 2 and meta["settings"]["channels"] == 1
    # The model file carries the same record: gometal predict needs nothing else.
    assert gm.serialization.read_metadata(out / "model.safetensors")["user"] == meta
    assert [row["epoch"] for row in meta["history"]] == [1, 2]


def test_resume_gives_the_weights_of_an_uninterrupted_run(colours, tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    _train(colours, straight, "--epochs", "4", "--seed", "3")
    _train(colours, halves, "--epochs", "2", "--seed", "3")
    # Only --epochs may change; the settings (seed, sizes, data) come from run.json.
    assert main(["train", "--resume", str(halves), "--epochs", "4", "--no-progress"]) == 0
    expected, resumed = (
        load_file(straight / "model.safetensors"),
        load_file(halves / "model.safetensors"),
    )
    assert sorted(expected) == sorted(resumed)
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    expected_history = [
        {k: v for k, v in r.items() if k != "seconds"} for r in _model_json(straight)["history"]
    ]
    resumed_history = [
        {k: v for k, v in r.items() if k != "seconds"} for r in _model_json(halves)["history"]
    ]
    assert resumed_history == expected_history
    # The newest two epoch checkpoints stay; run.json holds the new total for a later resume.
    names = sorted(p.name for p in (halves / "checkpoints").iterdir())
    assert names == ["epoch-003.gmckpt", "epoch-004.gmckpt"]
    assert json.loads((halves / "run.json").read_text())["settings"]["epochs"] == 4


def test_a_new_run_in_a_used_folder_drops_the_old_checkpoints(colours, tmp_path, capsys):
    out = tmp_path / "run"
    _train(colours, out, "--epochs", "3")
    _train(colours, out, "--epochs", "1")
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["epoch-001.gmckpt"]
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert [row["epoch"] for row in _model_json(out)["history"]] == [1, 2]


def test_resume_refuses_what_it_cannot_continue(colours, tmp_path, capsys):
    out = tmp_path / "run"
    _train(colours, out, "--epochs", "1")
    line = _error_line(capsys, ["train", "--resume", str(out), "--image-size", "16"])
    assert "--image-size 16 differs from the resumed run's 8" in line
    line = _error_line(capsys, ["train", "--resume", str(out), "--epochs", "1"])
    assert "has trained 1 epochs" in line and "--epochs above 1" in line
    line = _error_line(capsys, ["train", "--resume", str(tmp_path / "nowhere")])
    assert "nowhere" in line and "is not a folder" in line
    line = _error_line(capsys, ["train", "--resume", str(colours)])
    assert "holds no run.json" in line
    line = _error_line(capsys, ["train", str(tmp_path), "--resume", str(out)])
    assert "DATA_DIR" in line and "differs from the resumed run's" in line
    (last,) = (out / "checkpoints").iterdir()
    last.write_bytes(last.read_bytes()[:100])  # a checkpoint cut short
    line = _error_line(capsys, ["train", "--resume", str(out), "--epochs", "2"])
    assert "cannot load" in line and "epoch-001.gmckpt" in line
    last.unlink()
    line = _error_line(capsys, ["train", "--resume", str(out), "--epochs", "2"])
    assert "has no checkpoint" in line


def test_early_stopping_stops_at_the_first_epoch_without_a_better_val_loss(tmp_path):
    # Noise with arbitrary labels: the validation loss cannot keep improving.
    rng = np.random.default_rng(0)
    data = tmp_path / "noise"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / name / f"{i}.png")
    out = tmp_path / "run"
    _train(data, out, "--epochs", "30", "--patience", "0", "--lr", "0.02")
    val_losses = [row["val_loss"] for row in _model_json(out)["history"]]
    # Keras's rule, recomputed: stop after the first epoch that does not beat the best.
    stop = next(e for e in range(1, 30) if val_losses[e] >= min(val_losses[:e]))
    assert len(val_losses) == stop + 1 < 30
    # The best epoch's weights are kept: those of the checkpoint before the last.
    best = gm.load_model(out / "checkpoints" / f"epoch-{stop:03d}.gmckpt").get_weights()
    saved = load_file(out / "model.safetensors")
    for name, value in best.items():
        np.testing.assert_array_equal(saved[name], value, err_msg=name)


def test_plots_html_writes_the_dashboard(colours, tmp_path):
    out = tmp_path / "run"
    _train(colours, out, "--epochs", "1", "--plots", "html")
    page = (out / "plots" / "dashboard.html").read_text()
    assert "<html" in page.lower()


def _run_cli(*argv, cwd):
    done = subprocess.run(
        [sys.executable, "-m", "gometal.apps.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_no_progress_leaves_only_the_epoch_lines(colours, tmp_path):
    common = ["train", str(colours), "--epochs", "2", "--image-size", "8", "--workers", "0"]
    shown = _run_cli(*common, "--out", str(tmp_path / "a"), cwd=tmp_path)
    hidden = _run_cli(*common, "--out", str(tmp_path / "b"), "--no-progress", cwd=tmp_path)
    assert "epoch 1/2" in shown.stderr and "step" in shown.stderr  # the bar, on stderr
    assert hidden.stderr == ""
    lines = [line for line in hidden.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert "val_accuracy" in lines[-1]
