"""Inputs with a run-time sequence length (``gm.Input((None, D))``) and int32 token inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

import gometal as gm


def test_a_sequence_input_takes_any_length_and_shows_none():
    x = gm.Input((None, 8), name="tokens")
    assert x.shape == (None, None, 8)
    h = gm.layers.GELU()(gm.layers.LayerNorm(8)(x))
    assert h.shape == (None, None, 8)
    model = gm.Model(x, h)
    for length in (1, 5, 17):
        data = np.random.default_rng(length).standard_normal((3, length, 8)).astype(np.float32)
        got = model.predict(data)
        normed = (data - data.mean(-1, keepdims=True)) / np.sqrt(data.var(-1, keepdims=True) + 1e-5)
        expected = 0.5 * normed * (1 + erf(normed / np.sqrt(2)))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(
        ValueError, match=r"x must have shape \(N, T, 8\) for this model, got \(3, 4, 9\)"
    ):
        model.predict(np.zeros((3, 4, 9), np.float32))


def test_token_inputs_are_int32_and_float_layers_refuse_them():
    ids = gm.Input((None,), dtype="int32")
    assert ids.dtype == "int32" and ids.shape == (None, None)
    with pytest.raises(TypeError, match=r"Dense layer takes float32 inputs, got int32 .*Embedding"):
        gm.layers.Dense(4)(ids)
    with pytest.raises(ValueError, match="Input dtype must be one of"):
        gm.Input((4,), dtype="float64")
    with pytest.raises(ValueError, match="positive ints, None or symbol names"):
        gm.Input((0,))
