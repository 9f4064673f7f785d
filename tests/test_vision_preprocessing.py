"""`gm.vision.ImagePreprocessing`: the record a model keeps of its training images' pipeline."""

import json

import numpy as np
import pytest
from PIL import Image

import gometal as gm

ImagePreprocessing = gm.vision.ImagePreprocessing


def _write_mixed_folder(root):
    # Sizes, aspect ratios, formats and modes vary, as in a real folder.
    rng = np.random.default_rng(4)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i, (h, w) in enumerate([(20, 31), (40, 18), (16, 16), (63, 50)]):
            image = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
            if i == 2:
                image = image.convert("L")
            image.save(root / label / f"{i}.{'jpg' if i % 2 else 'png'}")


@pytest.mark.parametrize(
    "channels, resize, mean, std",
    [(3, "shorter", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (1, "stretch", 0.5, 0.25)],
)
def test_loading_files_gives_the_datasets_own_inputs(tmp_path, channels, resize, mean, std):
    _write_mixed_folder(tmp_path)
    dataset = gm.vision.ImageFolderDataset(
        tmp_path, image_size=(12, 16), channels=channels, resize=resize, mean=mean, std=std
    )
    record = ImagePreprocessing.from_dataset(dataset)
    # Through JSON, as a model file stores it.
    restored = ImagePreprocessing.from_dict(json.loads(json.dumps(record.to_dict())))
    assert restored == record
    batch = restored.load_batch(dataset.paths)
    expected = np.stack([dataset[i][0] for i in range(len(dataset))])
    assert batch.dtype == np.float32 and batch.shape == (8, channels, 12, 16)
    np.testing.assert_array_equal(batch, expected)


def test_normalisation_is_the_numpy_formula(tmp_path):
    path = tmp_path / "one.png"
    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    record = ImagePreprocessing((8, 8), 3, "shorter", (0.1, 0.2, 0.3), (0.5, 0.4, 0.2))
    expected = (pixels / 255.0 - [0.1, 0.2, 0.3]) / [0.5, 0.4, 0.2]
    got = record.load_batch([path])[0].transpose(1, 2, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


GOOD = ImagePreprocessing((8, 8), 3, "shorter", (0.0,) * 3, (1.0,) * 3).to_dict()


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"channels": 2}, ValueError, "channels must be 3 (RGB) or 1 (grayscale), got 2"),
        (
            {"resize": "crop"},
            ValueError,
            "resize must be one of ('shorter', 'stretch'), got 'crop'",
        ),
        ({"mean": [0.1, 0.2]}, ValueError, "mean must be 1 or 3 finite numbers"),
        ({"std": [1.0, 0.0, 1.0]}, ValueError, "std must be positive, got (1.0, 0.0, 1.0)"),
        ({"std": ["1"]}, ValueError, "std must be 1 or 3 finite numbers"),
        ({"pixel_max": 65535}, ValueError, "pixel_max must be 255 (8-bit images), got 65535"),
        ({"image_size": "8"}, TypeError, "image_size must be [height, width], got '8'"),
        ({"image_size": [8, 0]}, ValueError, "image_size must be a positive int"),
        ({"jpeg_draft": "yes"}, TypeError, "jpeg_draft must be true or false, got 'yes'"),
    ],
)
def test_bad_records_name_the_entry(change, error, message):
    with pytest.raises(error) as raised:
        ImagePreprocessing.from_dict({**GOOD, **change})
    assert message in str(raised.value)


def test_a_record_missing_entries_lists_them():
    partial = {key: value for key, value in GOOD.items() if key not in ("mean", "std")}
    with pytest.raises(ValueError, match="preprocessing lacks mean, std"):
        ImagePreprocessing.from_dict(partial)
    with pytest.raises(TypeError, match="preprocessing must be a mapping, got list"):
        ImagePreprocessing.from_dict([GOOD])


def test_an_unreadable_file_names_itself(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(OSError, match="notes.jpg"):
        ImagePreprocessing.from_dict(GOOD).load_uint8(path)
