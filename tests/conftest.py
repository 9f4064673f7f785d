"""Shared fixtures: seeded random generators, small synthetic datasets, a headless browser, the
engine's thread count put back after a test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The benchmarks' peers double as test references (benchmarks/_torch_gpt.py's nanoGPT).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, fresh for every test."""
    return np.random.default_rng(1234)


@pytest.fixture
def classification_data() -> tuple[np.ndarray, np.ndarray]:
    """96 samples of 20 float32 features with int32 labels in [0, 5).

    The labels depend on the features (argmax of a fixed linear map), so a model can learn
    them, and every class appears.
    """
    gen = np.random.default_rng(7)
    x = gen.standard_normal((96, 20)).astype(np.float32)
    w = gen.standard_normal((20, 5))
    y = np.argmax(x @ w, axis=1).astype(np.int32)
    y[:5] = np.arange(5, dtype=np.int32)
    return x, y


@pytest.fixture
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    """64 samples of 6 float32 features with 3 float32 targets (a noisy linear map)."""
    gen = np.random.default_rng(11)
    x = gen.standard_normal((64, 6)).astype(np.float32)
    w = gen.standard_normal((6, 3))
    y = (x @ w + 0.1 * gen.standard_normal((64, 3))).astype(np.float32)
    return x, y


@pytest.fixture
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    """80 samples of 8 float32 features with 0/1 float32 targets of shape (N, 1)."""
    gen = np.random.default_rng(13)
    x = gen.standard_normal((80, 8)).astype(np.float32)
    w = gen.standard_normal(8)
    y = (x @ w > 0).astype(np.float32)[:, None]
    return x, y


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium per test module (``cdp_browser.Browser``, ``WINDOW`` sized)."""
    from cdp_browser import WINDOW, Browser

    chromium = Browser(tmp_path_factory.mktemp("chromium") / "profile", window=WINDOW)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Puts the engine's thread count back after a test that sets it."""
    from gometal import _core

    before = _core.get_num_threads()
    yield
    _core.set_num_threads(before)
