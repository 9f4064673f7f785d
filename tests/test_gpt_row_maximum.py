"""The maximum over each row's last axis (the cross-entropy's shift over a GPT's 65 logits)
and its argmax (the accuracy's prediction) run over independent lanes: every row length, the
lanes' tail, ties, NaN anywhere in a row and rows of -inf give what NumPy gives."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core


def _rows(op: str, values: np.ndarray) -> np.ndarray:
    """The op over the last axis of `values`; its NaN and -inf are made in the graph (sqrt of
    -1, log of 0), since inputs must be finite."""
    g = _core.Graph()
    shape = (-1, values.shape[1])
    x, nan_at, minus_inf_at = (g.input(name, shape, "float32") for name in ("x", "nan", "ninf"))
    nans = g.op("sqrt", [g.op("neg", [nan_at], {})], {})
    minus_infs = g.op("log", [g.op("sub", [g.constant(1.0), minus_inf_at], {})], {})
    v = g.op("add", [g.op("add", [x, nans], {}), minus_infs], {})
    attrs = {"axis": -1} if op == "argmax" else {"axes": [-1], "keepdims": True}
    y = g.op(op, [v], attrs)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x, nan_at, minus_inf_at], outputs=[y], effects=[])
    nan_mask = np.isnan(values).astype(np.float32)
    minus_inf_mask = np.isneginf(values).astype(np.float32)
    finite = np.where(np.isfinite(values), values, 0.0).astype(np.float32)
    return engine.run("f", [finite, nan_mask, minus_inf_mask])[0]


def _row_max(values: np.ndarray) -> np.ndarray:
    return _rows("max", values)


@pytest.mark.parametrize("width", [1, 15, 16, 17, 33, 65, 130])
def test_row_maximum_matches_numpy_at_every_width(width):
    rng = np.random.default_rng(width)
    values = rng.standard_normal((40, width)).astype(np.float32)
    for row in range(min(width, 40)):
        values[row, row] = 10.0 + row  # the maximum at every position of a row in turn
    values[-1] = -np.inf
    np.testing.assert_array_equal(_row_max(values), values.max(axis=-1, keepdims=True))


@pytest.mark.parametrize("position", [0, 7, 16, 47, 64])
def test_a_nan_anywhere_in_a_row_gives_nan(position):
    values = np.random.default_rng(position).standard_normal((3, 65)).astype(np.float32)
    values[1, position] = np.nan
    got = _row_max(values)
    assert np.isnan(got[1, 0])
    np.testing.assert_array_equal(got[[0, 2]], values[[0, 2]].max(axis=-1, keepdims=True))


@pytest.mark.parametrize("width", [1, 15, 16, 17, 65, 130])
def test_row_argmax_is_the_first_maximum_or_the_first_nan(width):
    rng = np.random.default_rng(width)
    values = rng.integers(-3, 3, (50, width)).astype(np.float32)  # many ties
    values[-1] = -np.inf
    values[-2] = np.nan
    values[-3, width // 2] = np.nan
    values[-4, width - 1] = np.nan
    np.testing.assert_array_equal(_rows("argmax", values), np.argmax(values, axis=-1))
