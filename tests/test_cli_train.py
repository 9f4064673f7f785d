"""`gometal train` and `gometal train-digits` on bad data and bad values: one line, exit 2.

argparse answers bad arguments with exit status 2 and no traceback; the jobs answer the
values argparse cannot judge (and data folders they cannot use) the same way, in one
``gometal <command>: ...`` line that names the problem.
"""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gometal.apps.cli import main

ARGPARSE_USAGE_ERROR = 2


def _write_images(folder, count, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture
def two_class_folder(tmp_path):
    root = tmp_path / "data"
    _write_images(root / "cat", 4, seed=1)
    _write_images(root / "dog", 4, seed=2)
    return root


def _train_error(capsys, *args):
    """Runs ``gometal train ...`` in process; returns the single stderr line it printed."""
    code = main(["train", *args])
    captured = capsys.readouterr()
    assert code == ARGPARSE_USAGE_ERROR
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gometal train: ")
    return lines[0]


def test_two_images_is_an_error_not_a_zero_division(tmp_path, capsys):
    data = tmp_path / "data"
    _write_images(data / "cat", 1, seed=1)
    _write_images(data / "dog", 1, seed=2)
    out = tmp_path / "run"
    line = _train_error(capsys, str(data), "--out", str(out), "--workers", "0")
    assert "no validation images" in line
    assert "at least 2 images in each class folder" in line
    assert not (out / "model.safetensors").exists()


def test_a_split_with_no_training_images_is_an_error(tmp_path, capsys):
    data = tmp_path / "data"
    _write_images(data / "cat", 1, seed=1)
    _write_images(data / "dog", 1, seed=2)
    line = _train_error(capsys, str(data), "--val-fraction", "0.6", "--out", str(tmp_path / "r"))
    assert "no training images" in line


def test_one_class_is_an_error(tmp_path, capsys):
    data = tmp_path / "data"
    _write_images(data / "cat", 6)
    out = tmp_path / "run"
    line = _train_error(capsys, str(data), "--out", str(out), "--workers", "0")
    assert "single class folder ('cat')" in line
    assert "two or more" in line
    assert not (out / "model.safetensors").exists()


def test_images_without_class_folders_are_not_called_empty(tmp_path, capsys):
    data = tmp_path / "data"
    _write_images(data, 5)
    line = _train_error(capsys, str(data), "--out", str(tmp_path / "run"))
    assert "5 images but no class sub-folders" in line
    assert "empty" not in line


def test_a_missing_folder_is_one_line(tmp_path, capsys):
    line = _train_error(capsys, str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert "nowhere" in line and "does not exist" in line
    assert not (tmp_path / "run").exists()  # nothing is created for a job that cannot run


def test_a_file_as_data_folder_is_one_line(tmp_path, capsys):
    image = tmp_path / "one.png"
    Image.new("RGB", (4, 4)).save(image)
    line = _train_error(capsys, str(image), "--out", str(tmp_path / "run"))
    assert "one.png" in line and "is a file" in line


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--lr", "-1", "--lr must be a finite number >= 0, got -1.0"),
        ("--lr", "nan", "--lr must be a finite number >= 0, got nan"),
        ("--lr", "inf", "--lr must be a finite number >= 0, got inf"),
        ("--epochs", "0", "--epochs must be at least 1, got 0"),
        ("--batch-size", "0", "--batch-size must be between 1 and 2147483647, got 0"),
        ("--batch-size", str(2**31), f"--batch-size must be between 1 and 2147483647, got {2**31}"),
        ("--image-size", "0", "--image-size must be a positive multiple of 8"),
        ("--image-size", "-8", "--image-size must be a positive multiple of 8"),
        ("--image-size", "20", "got 20; e.g. 16 or 24"),
        ("--val-fraction", "0", "--val-fraction must be between 0 and 1 (both excluded), got 0.0"),
        ("--val-fraction", "1", "--val-fraction must be between 0 and 1 (both excluded), got 1.0"),
        ("--val-fraction", "-0.2", "got -0.2"),
        ("--val-fraction", "nan", "got nan"),
        ("--workers", "-1", "--workers must be >= 0 (0 decodes on the main thread), got -1"),
        ("--seed", "-1", "--seed must be between 0 and 2**64 - 1, got -1"),
        ("--seed", str(2**64), f"--seed must be between 0 and 2**64 - 1, got {2**64}"),
    ],
)
def test_bad_values_are_one_line_errors(
    two_class_folder, tmp_path, capsys, option, value, expected
):
    out = tmp_path / "run"
    line = _train_error(capsys, str(two_class_folder), "--out", str(out), option, value)
    assert expected in line
    assert not out.exists()


def test_an_out_path_that_is_a_file_is_one_line(two_class_folder, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder")
    line = _train_error(capsys, str(two_class_folder), "--out", str(taken))
    assert "--out" in line and "taken.txt" in line and "is a file" in line
    assert taken.read_text() == "not a folder"


def test_an_out_path_below_a_file_is_one_line(two_class_folder, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder")
    line = _train_error(capsys, str(two_class_folder), "--out", str(taken / "run"))
    assert "cannot be written" in line and "Not a directory" in line


def test_a_model_too_large_for_memory_is_one_line(two_class_folder, tmp_path, capsys):
    # 2**20 pixels a side: the dense head alone would need 2**47 weights.
    line = _train_error(
        capsys, str(two_class_folder), "--out", str(tmp_path / "run"), "--image-size", str(2**20)
    )
    assert "not enough memory" in line and "--image-size 1048576" in line


def test_the_command_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gometal.apps.cli", "train", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == ARGPARSE_USAGE_ERROR
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("gometal train: DATA_DIR ")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--lr", "inf", "argument --lr: must be a finite number >= 0, got inf"),
        ("--seed", "-1", "argument --seed: must be between 0 and 2**32 - 1, got -1"),
        ("--batch-size", str(2**31), f"argument --batch-size: must be at most {2**31 - 1}"),
    ],
)
def test_train_digits_rejects_bad_values_through_argparse(capsys, option, value, expected):
    with pytest.raises(SystemExit) as stopped:
        main(["train-digits", option, value])
    assert stopped.value.code == ARGPARSE_USAGE_ERROR
    assert expected in capsys.readouterr().err


def test_train_digits_with_too_many_hidden_units_is_one_line(capsys):
    # 2**44 hidden units: the first weight matrix alone exceeds any address space.
    code = main(["train-digits", "--hidden", str(2**44), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == ARGPARSE_USAGE_ERROR
    assert err.count("\n") == 1
    assert err.startswith("gometal train-digits: not enough memory for --hidden 17592186044416")
