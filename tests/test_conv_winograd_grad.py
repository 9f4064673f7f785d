"""The 3x3 weight gradient by Winograd's F(3x3, 2x2) tiles (conv_winograd_grad.cpp).

With GOMETAL_CONV_WINOGRAD_GRAD=always, every vector path the CPU has computes
conv2d_weight_grad as torch's autograd does in float64: odd output sizes (a last row or
column of half tiles), padding 0 to 2, 1 to 40 channels (partial vectors and channel
blocks), batch 1 and batches whose last chunk of images is short, planes cut into several
bands of tile rows. Infinite and NaN inputs give torch's Inf and NaN positions (the tiles
would turn a lone infinity into NaN: those calls take the direct sums), the bits do not depend
on the thread count (F(3x3, 4x4)'s too), and an unknown value of either variable is refused
by name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conv_checks import conv_attrs
from cpu_paths import vector_path_available
from gometal import _core

PATHS = [p for p in ("portable", "avx2", "avx512") if vector_path_available(p)]

# (N, C, H, W), O, padding (stride 1, 3x3 windows)
CASES = [
    ((2, 16, 32, 32), 32, (1, 1)),  # workload B's second layer
    ((2, 32, 16, 16), 64, (1, 1)),  # its third
    ((1, 3, 64, 64), 16, (1, 1)),  # its first, one image, bands of tile rows
    ((3, 5, 13, 29), 7, (1, 1)),  # odd outputs both ways, one partial vector of outputs
    ((1, 17, 9, 8), 20, (0, 0)),  # no padding: 7 x 6 outputs
    ((2, 16, 9, 11), 40, (2, 2)),  # padding 2: 11 x 13 outputs, three vectors of outputs
    ((1, 1, 5, 5), 1, (0, 2)),  # one channel each, mixed padding
    ((11, 9, 6, 7), 33, (1, 0)),  # 11 images: chunks of 2, the last one short
    ((2, 40, 3, 4), 24, (1, 2)),  # 40 channels: blocks of 8 or 6 and a rest; 3 x 6 outputs
    ((1, 2, 3, 3), 3, (0, 0)),  # one output pixel
]


def _case_id(case):
    x_shape, o, padding = case
    return f"{'x'.join(map(str, x_shape))}to{o}p{padding[0]}{padding[1]}"


def _weight_grad_engine(x_shape, w_shape, out_shape, attrs):
    g = _core.Graph()
    x = g.input("x", x_shape, "float32")
    dy = g.input("dy", out_shape, "float32")
    dw = g.op("conv2d_weight_grad", [x, dy], {**attrs, "shape": list(w_shape)})
    engine = _core.Engine(g, seed=0)
    engine.define("dw", inputs=[x, dy], outputs=[dw], effects=[])
    return engine


def _torch_weight_grad(x, w_shape, dy, attrs):
    wt = torch.zeros(w_shape, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(torch.from_numpy(x).double(), wt, padding=attrs["padding"])
    y.backward(torch.from_numpy(dy).double())
    return wt.grad.numpy()


def _case_arrays(case, seed):
    x_shape, o, padding = case
    attrs = conv_attrs((1, 1), padding, (1, 1), 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w_shape = (o, x_shape[1], 3, 3)
    out = torch.nn.functional.conv2d(torch.from_numpy(x), torch.zeros(w_shape), padding=padding)
    dy = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    return x, dy, w_shape, attrs


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_each_path_computes_the_weight_gradient_as_torch(case, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", "never")  # F(3x3, 4x4) has its own tests
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x, dy, w_shape, attrs = _case_arrays(case, seed=sum(case[0]) + case[1])
    got = _weight_grad_engine(x.shape, w_shape, dy.shape, attrs).run("dw", [x, dy])[0]
    want = _torch_weight_grad(x, w_shape, dy, attrs)
    # Sums of N*OH*OW products of unit normals: the tolerance scales with their square root,
    # twice the direct sums' (the transformed values add up to 4 inputs, then 9 sums mix).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4e-6 * np.sqrt(dy[0, 0].size * len(x)))


def run_on_variables(op: str, a: np.ndarray, b: np.ndarray, attrs: dict) -> np.ndarray:
    """op(a, b) with a and b as variables: inputs refuse non-finite values, variables take them."""
    g = _core.Graph()
    out = g.op(op, [g.variable("a", a.shape), g.variable("b", b.shape)], attrs)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[], outputs=[out], effects=[])
    engine.set_variable("a", a)
    engine.set_variable("b", b)
    return engine.run("f", [])[0]


def _non_finite_pattern(a):
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


@pytest.mark.parametrize("f4", ["never", "always"])  # F(3x3, 4x4) leaves them to F(3x3, 2x2)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("where", ["x", "dy", "x-nan", "both"])
def test_infinite_and_nan_inputs_give_torchs_positions(where, path, f4, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", f4)
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x, dy, w_shape, attrs = _case_arrays(((2, 16, 10, 12), 32, (1, 1)), seed=3)
    # Positive dy: a lone +Inf in x then gives +Inf in the direct sums, where the tiles'
    # transforms (which subtract copies of it) would give NaN.
    dy = np.abs(dy) + 0.5
    if where in ("x", "both"):
        x[1, 5, 4, 7] = np.inf
    if where == "x-nan":
        x[0, 2, 0, 0] = np.nan
    if where in ("dy", "both"):
        dy[0, 9, 3, 3] = -np.inf
    got = run_on_variables("conv2d_weight_grad", x, dy, {**attrs, "shape": list(w_shape)})
    want = _torch_weight_grad(x, w_shape, dy, attrs)
    assert not np.isfinite(want).all()
    for got_mask, want_mask in zip(_non_finite_pattern(got), _non_finite_pattern(want)):
        np.testing.assert_array_equal(got_mask, want_mask)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("f4", ["never", "always"])  # F(3x3, 2x2) and F(3x3, 4x4)
def test_the_same_bits_on_one_and_two_threads(f4, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", f4)
    x, dy, w_shape, attrs = _case_arrays(CASES[7], seed=5)
    threads = _core.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            _core.set_num_threads(count)
            engine = _weight_grad_engine(x.shape, w_shape, dy.shape, attrs)
            results.append(engine.run("dw", [x, dy])[0])
    finally:
        _core.set_num_threads(threads)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize(
    "variable", ["GOMETAL_CONV_WINOGRAD_GRAD", "GOMETAL_CONV_WINOGRAD_GRAD_F4"]
)
def test_an_unknown_value_of_the_variable_is_refused_by_name(variable, monkeypatch):
    monkeypatch.setenv(variable, "sometimes")
    x, dy, w_shape, attrs = _case_arrays(CASES[0], seed=1)
    with pytest.raises(Exception, match=f"{variable} must be always or never, got 'sometimes'"):
        _weight_grad_engine(x.shape, w_shape, dy.shape, attrs).run("dw", [x, dy])
