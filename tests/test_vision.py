"""gometal.vision: image folders, decoding, transforms, the cache and the loader.

References are computed here with Pillow and NumPy directly, from the files on disk.
"""

from __future__ import annotations

import gc
import io
import math
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gometal.vision import (
    DataLoader,
    ImageCache,
    ImageFolderDataset,
    UnreadableImageWarning,
    find_unreadable_reason,
)
from gometal.vision import transforms as T

SIZE = 16
CORRUPT_FILES = {"cat/broken.jpg", "cat/cut.png", "cat/notes.jpg", "dog/readme.txt"}
INDEXED_COUNTS = {"c0": 12, "c1": 9, "c2": 6}
ID_STEP = 9  # the red channel of indexed image k is k * ID_STEP


def smooth_rgb(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like image: random colours on a coarse grid, upsampled, plus noise."""
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
    noise = rng.integers(-12, 13, base.shape)
    return np.clip(base.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def save_jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def messy_root(tmp_path_factory) -> Path:
    """Three classes of valid JPEG/PNG files in many modes and sizes, plus unreadable files."""
    root = tmp_path_factory.mktemp("messy")
    rng = np.random.default_rng(0)
    for name in ("bird", "cat", "dog"):
        (root / name).mkdir()
    # (16, 39) and (31, 16) center-crop at offsets 11.5 and 7.5: they test the rounding.
    sizes = [(16, 39), (50, 30), (16, 16), (31, 16), (30, 30)]
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(smooth_rgb(rng, h, w)).save(
            root / "bird" / f"b{k}.{'png' if k % 2 else 'jpg'}"
        )
    for k in range(6):
        h, w = 20 + 3 * k, 35 - 2 * k
        Image.fromarray(smooth_rgb(rng, h, w)).save(
            root / "dog" / f"d{k}.{'jpg' if k % 2 else 'png'}"
        )
    cat = root / "cat"
    Image.fromarray(smooth_rgb(rng, 40, 60)).save(cat / "rgb.jpg", quality=95)
    Image.fromarray(smooth_rgb(rng, 33, 47)[:, :, 0]).save(cat / "gray.png")
    rgba = np.dstack([smooth_rgb(rng, 28, 20), rng.integers(0, 256, (28, 20), dtype=np.uint8)])
    Image.fromarray(rgba).save(cat / "rgba.png")
    palette = Image.fromarray(smooth_rgb(rng, 25, 25)).quantize(colors=16)
    palette.save(cat / "palette.png", transparency=3)
    Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)).save(cat / "tiny.png")
    Image.fromarray(smooth_rgb(rng, 2000, 3000)).save(cat / "large.jpg", quality=90)
    whole = save_jpeg_bytes(smooth_rgb(rng, 64, 64))
    (cat / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(rng, 32, 32)).save(buffer, "PNG")
    (cat / "cut.png").write_bytes(buffer.getvalue()[:200])
    (cat / "notes.jpg").write_text("these are notes, not a JPEG\n")
    (root / "dog" / "readme.txt").write_text("a dog folder\n")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01")
    return root


@pytest.fixture(scope="module")
def indexed_root(tmp_path_factory) -> Path:
    """Small 8x8 PNG files whose red channel encodes a sample id and whose green channel
    rises from left to right (so a horizontal flip is visible)."""
    root = tmp_path_factory.mktemp("indexed")
    sample_id = 0
    cols, rows = np.meshgrid(np.arange(8), np.arange(8))
    for name, count in INDEXED_COUNTS.items():
        (root / name).mkdir()
        for _ in range(count):
            pixels = np.stack(
                [np.full((8, 8), sample_id * ID_STEP), 20 + cols * 30, 10 + rows * 25], axis=-1
            ).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{sample_id:03d}.png")
            sample_id += 1
    return root


def open_messy(root: Path, **kwargs) -> ImageFolderDataset:
    with pytest.warns(UnreadableImageWarning):
        return ImageFolderDataset(root, **kwargs)


def ids_of(x: np.ndarray) -> list[int]:
    """Sample ids of an un-normalised indexed batch, read from the red channel's center."""
    return np.rint(x[:, 0, 4, 4] * 255 / ID_STEP).astype(int).tolist()


def all_batches(loader) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.copy(), y.copy()) for x, y in loader]


def reference_shorter_crop(path: Path, size: int, mode: str = "RGB") -> np.ndarray:
    """torchvision's Resize(size) + CenterCrop(size) on a Pillow image, written out."""
    with Image.open(path) as image:
        image = image.convert("RGBA").convert(mode) if image.mode == "P" else image.convert(mode)
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = round((new_w - size) / 2.0), round((new_h - size) / 2.0)
    return np.asarray(image.crop((left, top, left + size, top + size)))


def as_hwc(chw: np.ndarray) -> np.ndarray:
    return chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)


# --- the folder index ---------------------------------------------------------------------


def test_classes_sorted_and_unreadable_files_named_in_one_warning(messy_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = ImageFolderDataset(messy_root, image_size=SIZE)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert caught[0].category is UnreadableImageWarning
    message = str(caught[0].message)
    for name in CORRUPT_FILES:
        assert name in message
    assert "rgb.jpg" not in message and ".DS_Store" not in message
    assert data.classes == ["bird", "cat", "dog"]
    assert data.class_to_index == {"bird": 0, "cat": 1, "dog": 2}
    assert len(data) == 5 + 6 + 6
    skipped = {Path(path).relative_to(messy_root).as_posix() for path, _ in data.skipped}
    assert skipped == CORRUPT_FILES
    kept = {Path(path).relative_to(messy_root).as_posix() for path in data.paths}
    assert not kept & CORRUPT_FILES
    assert data.class_distribution() == {"bird": 5, "cat": 6, "dog": 6}


def test_full_verification_skips_the_same_files(messy_root):
    fast = open_messy(messy_root, image_size=SIZE)
    full = open_messy(messy_root, image_size=SIZE, verify="full")
    assert full.paths == fast.paths
    assert [path for path, _ in full.skipped] == [path for path, _ in fast.skipped]


def test_unreadable_reasons(messy_root):
    assert find_unreadable_reason(messy_root / "cat" / "large.jpg") is None
    assert "truncated" in find_unreadable_reason(messy_root / "cat" / "broken.jpg")
    assert find_unreadable_reason(messy_root / "cat" / "notes.jpg") is not None
    assert find_unreadable_reason(messy_root / "cat" / "cut.png") is not None


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        ImageFolderDataset(missing)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        ImageFolderDataset(tmp_path)


def test_folder_of_images_without_class_folders_says_so(tmp_path):
    for i in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.png")
    with pytest.raises(ValueError) as caught:
        ImageFolderDataset(tmp_path)
    message = str(caught.value)
    assert "3 images but no class sub-folders" in message
    assert "empty" not in message


def test_class_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "a.png")
    (tmp_path / "dog" / "notes.txt").write_text("no images here")
    with pytest.warns(UnreadableImageWarning), pytest.raises(ValueError, match="dog"):
        ImageFolderDataset(tmp_path)


def test_root_that_is_a_file_is_rejected(tmp_path):
    file = tmp_path / "file.png"
    Image.new("RGB", (4, 4)).save(file)
    with pytest.raises(NotADirectoryError, match="file.png"):
        ImageFolderDataset(file)


# --- decoding, resizing and normalising -----------------------------------------------------


def test_item_shapes_and_dtypes(messy_root):
    data = open_messy(messy_root, image_size=SIZE)
    x, label = data[0]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == np.float32 and x.flags.c_contiguous
    assert isinstance(label, int) and label == 0
    assert data[-1][1] == 2
    with pytest.raises(IndexError):
        data[len(data)]
    gray = open_messy(messy_root, image_size=(12, 20), channels=1)
    assert gray[0][0].shape == (1, 12, 20)
    pixels = gray.load_uint8(3)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 12, 20)


@pytest.mark.parametrize(
    "relative",
    [
        "bird/b0.jpg",
        "bird/b1.png",
        "bird/b2.jpg",
        "bird/b3.png",
        "cat/gray.png",
        "cat/rgba.png",
        "cat/palette.png",
        "cat/tiny.png",
        "cat/large.jpg",
    ],
)
def test_resize_shorter_and_center_crop_match_pillow(messy_root, relative):
    data = open_messy(messy_root, image_size=SIZE, jpeg_draft=False)
    index = data.paths.index(str(messy_root / relative))
    expected = reference_shorter_crop(messy_root / relative, SIZE)
    np.testing.assert_array_equal(as_hwc(data.load_uint8(index)), expected)


def test_special_modes_convert_as_expected(messy_root):
    data = open_messy(messy_root, image_size=SIZE)
    gray = as_hwc(data.load_uint8(data.paths.index(str(messy_root / "cat/gray.png"))))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    tiny = as_hwc(data.load_uint8(data.paths.index(str(messy_root / "cat/tiny.png"))))
    assert (tiny == np.array([200, 30, 90], dtype=np.uint8)).all()


def test_grayscale_output_matches_pillow_luma(messy_root):
    data = open_messy(messy_root, image_size=SIZE, channels=1, jpeg_draft=False)
    for relative in ("bird/b0.jpg", "cat/rgba.png", "cat/palette.png"):
        index = data.paths.index(str(messy_root / relative))
        expected = reference_shorter_crop(messy_root / relative, SIZE, mode="L")
        np.testing.assert_array_equal(as_hwc(data.load_uint8(index)), expected)


def test_reduced_jpeg_decode_stays_close_to_full_decode(messy_root):
    data = open_messy(messy_root, image_size=SIZE)
    assert data.jpeg_draft
    index = data.paths.index(str(messy_root / "cat/large.jpg"))
    fast = as_hwc(data.load_uint8(index)).astype(np.float64)
    exact = reference_shorter_crop(messy_root / "cat/large.jpg", SIZE).astype(np.float64)
    assert np.abs(fast - exact).mean() < 1.0
    assert np.abs(fast - exact).max() <= 8


def test_stretch_resize_matches_pillow(messy_root):
    data = open_messy(messy_root, image_size=(12, 20), resize="stretch", jpeg_draft=False)
    for relative in ("bird/b1.png", "cat/large.jpg", "cat/tiny.png"):
        with Image.open(messy_root / relative) as image:
            expected = np.asarray(image.convert("RGB").resize((20, 12), Image.Resampling.BILINEAR))
        index = data.paths.index(str(messy_root / relative))
        np.testing.assert_array_equal(as_hwc(data.load_uint8(index)), expected)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    (tmp_path / "scan").mkdir()
    deep = np.arange(256, dtype=np.uint16).reshape(16, 16) * 256 + 50
    Image.fromarray(deep).save(tmp_path / "scan" / "deep.png")
    data = ImageFolderDataset(tmp_path, image_size=16, channels=1)
    expected = np.clip(np.rint(deep / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(data.load_uint8(0)[0], expected)


def test_normalisation_matches_numpy(messy_root):
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    data = open_messy(messy_root, image_size=SIZE, mean=mean, std=std, jpeg_draft=False)
    relative = "bird/b1.png"
    index = data.paths.index(str(messy_root / relative))
    pixels = reference_shorter_crop(messy_root / relative, SIZE).astype(np.float64)
    expected = ((pixels / 255.0 - mean) / std).transpose(2, 0, 1)
    x, _ = data[index]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    with DataLoader(data, 4, shuffle=False, num_workers=0) as loader:
        x_batch, y_batch = next(iter(loader))
    for row in range(4):
        np.testing.assert_allclose(x_batch[row], data[row][0], rtol=0, atol=1e-6)
        assert y_batch[row] == data[row][1]


# --- split, subset, filter ------------------------------------------------------------------


def test_split_is_stratified_disjoint_and_deterministic(indexed_root):
    data = ImageFolderDataset(indexed_root, image_size=8)
    train, val = data.split(0.25, seed=3)
    assert set(train.paths).isdisjoint(val.paths)
    assert sorted(train.paths + val.paths) == sorted(data.paths)
    assert train.classes == val.classes == data.classes
    for name, count in INDEXED_COUNTS.items():
        expected_val = min(max(math.floor(count * 0.25 + 0.5), 1), count - 1)
        assert val.class_distribution()[name] == expected_val
        assert train.class_distribution()[name] == count - expected_val
    again_train, again_val = data.split(0.25, seed=3)
    assert again_train.paths == train.paths and again_val.paths == val.paths
    _, other_val = data.split(0.25, seed=4)
    assert other_val.paths != val.paths
    for subset in (train, val):
        for path, label in subset.samples:
            assert Path(path).parent.name == data.classes[label]
    with pytest.raises(ValueError):
        data.split(1.0)


def test_subset_filter_classes_and_distribution(indexed_root):
    data = ImageFolderDataset(indexed_root, image_size=8)
    assert data.class_distribution() == INDEXED_COUNTS
    small = data.subset(9, seed=1)
    assert len(small) == 9
    assert small.class_distribution() == {"c0": 4, "c1": 3, "c2": 2}
    assert small.paths == data.subset(9, seed=1).paths
    assert set(small.paths) <= set(data.paths)
    assert data.subset(1000).paths == data.paths
    two = data.filter_classes(["c2", "c0"])
    assert two.classes == ["c0", "c2"]
    assert two.class_to_index == {"c0": 0, "c2": 1}
    assert two.class_distribution() == {"c0": 12, "c2": 6}
    for path, label in two.samples:
        assert Path(path).parent.name == two.classes[label]
    with pytest.raises(ValueError, match="c9"):
        data.filter_classes(["c9"])


# --- the loader -----------------------------------------------------------------------------


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_covers_each_sample_once_per_epoch(indexed_root, drop_last):
    data = ImageFolderDataset(indexed_root, image_size=8)
    loader = DataLoader(data, 5, seed=1, num_workers=2, drop_last=drop_last)
    total = len(data)
    assert len(loader) == (total // 5 if drop_last else math.ceil(total / 5))
    for _ in range(2):
        seen = []
        batches = all_batches(loader)
        assert len(batches) == len(loader)
        for x, y in batches:
            assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape[1:] == (3, 8, 8)
            assert y.dtype == np.int32 and y.shape == (len(x),)
            ids = ids_of(x)
            assert [data.labels[i] for i in ids] == y.tolist()
            seen += ids
        assert len(seen) == len(set(seen))
        if drop_last:
            assert len(seen) == (total // 5) * 5
        else:
            assert sorted(seen) == list(range(total))
    loader.close()


def test_order_is_deterministic_per_seed_and_epoch(indexed_root):
    data = ImageFolderDataset(indexed_root, image_size=8)

    def epoch_ids(loader):
        return [i for x, _ in loader for i in ids_of(x)]

    first, second = DataLoader(data, 4, seed=7), DataLoader(data, 4, seed=7, num_workers=0)
    epochs_first = [epoch_ids(first) for _ in range(2)]
    epochs_second = [epoch_ids(second) for _ in range(2)]
    assert epochs_first == epochs_second
    assert epochs_first[0] != epochs_first[1]
    resumed = DataLoader(data, 4, seed=7)
    resumed.set_epoch(1)
    assert epoch_ids(resumed) == epochs_first[1]
    assert resumed.epoch == 2
    assert epoch_ids(DataLoader(data, 4, seed=8)) != epochs_first[0]
    assert epoch_ids(DataLoader(data, 4, shuffle=False)) == list(range(len(data)))


def test_worker_count_does_not_change_batches(messy_root):
    data = open_messy(messy_root, image_size=SIZE, mean=0.5, std=0.25)
    runs = []
    for workers in (0, 2):
        with DataLoader(data, 4, seed=5, num_workers=workers, prefetch=3, augment=True) as loader:
            runs.append([all_batches(loader) for _ in range(2)])
    for epoch_a, epoch_b in zip(*runs):
        assert len(epoch_a) == len(epoch_b)
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(runs[0][0][0][0], runs[0][1][0][0])


def test_shared_cache_hits_every_image_from_the_second_epoch(indexed_root):
    data = ImageFolderDataset(indexed_root, image_size=8)
    train, val = data.split(0.25, seed=0)
    cache = ImageCache()
    train_loader = DataLoader(train, 4, cache=cache, augment=True)
    val_loader = DataLoader(val, 8, shuffle=False, cache=cache)
    first = all_batches(train_loader), all_batches(val_loader)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (0, len(data), len(data))
    assert stats.bytes == len(data) * 3 * 8 * 8
    cache.reset_stats()
    second = all_batches(train_loader), all_batches(val_loader)
    stats = cache.stats()
    assert stats.hit_rate == 1.0 and stats.hits == len(data) and stats.misses == 0
    for (x1, _), (x2, _) in zip(first[1], second[1]):
        np.testing.assert_array_equal(x1, x2)
    uncached = DataLoader(train, 4, cache_size=0, augment=True)
    assert uncached.cache is None
    uncached.set_epoch(1)
    for (x_cached, _), (x_plain, _) in zip(second[0], all_batches(uncached)):
        np.testing.assert_array_equal(x_cached, x_plain)


def test_lru_cache_evicts_least_recently_used():
    cache = ImageCache(max_items=2)
    images = {key: np.full((1, 2, 2), i, np.uint8) for i, key in enumerate("abc")}
    cache.put("a", images["a"])
    cache.put("b", images["b"])
    assert cache.get("a") is not None
    cache.put("c", images["c"])
    assert "b" not in cache and "a" in cache and "c" in cache
    stats = cache.stats()
    assert (stats.hits, stats.evictions, stats.size, stats.bytes) == (1, 1, 2, 8)
    with pytest.raises(ValueError):
        cache.get("a")[0, 0, 0] = 9
    by_bytes = ImageCache(max_bytes=10)
    by_bytes.put("a", np.zeros(6, np.uint8))
    by_bytes.put("b", np.zeros(6, np.uint8))
    assert len(by_bytes) == 1 and "b" in by_bytes
    by_bytes.put("huge", np.zeros(11, np.uint8))
    assert "huge" not in by_bytes


def test_flip_augmentation_rate(indexed_root):
    data = ImageFolderDataset(indexed_root, image_size=8)

    def flipped_fraction(p, epochs):
        loader = DataLoader(data, 8, num_workers=0, augment=[T.RandomHorizontalFlip(p)])
        flags = []
        for _ in range(epochs):
            for x, _ in loader:
                green = x[:, 1, 0, :]
                assert np.all((green[:, 0] < green[:, -1]) | (green[:, 0] > green[:, -1]))
                flags += (green[:, 0] > green[:, -1]).tolist()
        return np.mean(flags)

    assert 0.42 < flipped_fraction(0.5, 20) < 0.58
    assert flipped_fraction(0.0, 2) == 0.0
    assert flipped_fraction(1.0, 2) == 1.0


def test_random_crop_takes_windows_of_the_zero_padded_image(indexed_root):
    data = ImageFolderDataset(indexed_root, image_size=8)
    loader = DataLoader(data, 9, num_workers=0, augment=[T.RandomCrop(8, padding=2)])
    offsets = set()
    for x, _ in loader:
        for sample in np.rint(x * 255).astype(np.uint8):
            # The red channel is the sample id times ID_STEP, zero only in the padding.
            sample_id = int(sample[0].max()) // ID_STEP
            padded = np.pad(data.load_uint8(sample_id), ((0, 0), (2, 2), (2, 2)))
            matches = [
                (top, left)
                for top in range(5)
                for left in range(5)
                if np.array_equal(padded[:, top : top + 8, left : left + 8], sample)
            ]
            assert matches, "a crop is not a window of the padded image"
            offsets.add(matches[0])
    assert len(offsets) > 5


def test_close_and_garbage_collection_do_not_hang(indexed_root):
    data = ImageFolderDataset(indexed_root, image_size=8)
    threads_before = set(threading.enumerate())
    start = time.perf_counter()
    with DataLoader(data, 2, num_workers=2, prefetch=4) as loader:
        iterator = iter(loader)
        next(iterator)
    with pytest.raises(RuntimeError, match="closed"):
        iter(loader)
    abandoned = DataLoader(data, 2, num_workers=2)
    iterator = iter(abandoned)
    next(iterator)
    del iterator, abandoned
    gc.collect()
    assert time.perf_counter() - start < 5.0

    def lingering():
        return [
            t for t in set(threading.enumerate()) - threads_before if t.name.startswith("gometal")
        ]

    deadline = time.monotonic() + 5.0
    while lingering() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lingering()


def test_worker_errors_reach_the_caller(tmp_path):
    (tmp_path / "cat").mkdir()
    for k in range(3):
        Image.new("RGB", (6, 6), (k, k, k)).save(tmp_path / "cat" / f"{k}.png")
    data = ImageFolderDataset(tmp_path, image_size=4)
    (tmp_path / "cat" / "1.png").unlink()
    loader = DataLoader(data, 2, shuffle=False, num_workers=2)
    with loader, pytest.raises(OSError, match="1.png"):
        all_batches(loader)


# --- transforms on their own ----------------------------------------------------------------


def test_compose_pipeline_on_a_pillow_image_matches_numpy():
    rng = np.random.default_rng(3)
    image = Image.fromarray(smooth_rgb(rng, 30, 45))
    pipeline = T.Compose(
        [
            T.Resize(12),
            T.CenterCrop(10),
            T.ToCHWFloat(),
            T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD),
        ]
    )
    resized = image.resize((18, 12), Image.Resampling.BILINEAR)
    cropped = np.asarray(resized.crop((4, 1, 14, 11))).astype(np.float64) / 255.0
    expected = ((cropped - T.IMAGENET_MEAN) / T.IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(pipeline(image), expected, rtol=1e-5, atol=1e-5)
    hwc = np.asarray(image)
    chw = T.ToCHWFloat()(hwc)
    assert chw.dtype == np.float32 and chw.flags.c_contiguous
    np.testing.assert_allclose(chw, hwc.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert T.Resize(64).output_size(width=500, height=375) == (85, 64)
    assert T.Resize((48, 64), mode="stretch").output_size(500, 375) == (64, 48)


def test_random_transforms_follow_the_generator():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 12, 12), dtype=np.uint8)
    pipeline = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip()])
    first = [pipeline(image, np.random.default_rng(s)) for s in range(6)]
    again = [pipeline(image, np.random.default_rng(s)) for s in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.tobytes() for a in first}) > 1
    mirrored = T.RandomHorizontalFlip(p=1.0)(Image.fromarray(image.transpose(1, 2, 0)))
    np.testing.assert_array_equal(np.asarray(mirrored), image.transpose(1, 2, 0)[:, ::-1])
    batch = rng.integers(0, 256, (5, 3, 12, 12), dtype=np.uint8)
    as_array = pipeline.apply_batch(batch, np.random.default_rng(9))
    as_list = pipeline.apply_batch(list(batch), np.random.default_rng(9))
    np.testing.assert_array_equal(as_array, np.stack(as_list))
    edge = T.RandomCrop(8, padding=2, padding_mode="edge")
    np.testing.assert_array_equal(
        edge.apply_batch(batch, np.random.default_rng(2)),
        np.stack(edge.apply_batch(list(batch), np.random.default_rng(2))),
    )
    with pytest.raises(ValueError, match="RandomCrop"):
        T.RandomCrop(20)(image, rng)
    assert T.RandomCrop(20, pad_if_needed=True)(image, rng).shape == (3, 20, 20)
