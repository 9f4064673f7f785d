"""The 3x3 weight gradient by Winograd's F(3x3, 4x4) tiles (conv_winograd_grad_f4.cpp).

With GOMETAL_CONV_WINOGRAD_GRAD_F4=always, every vector path computes conv2d_weight_grad as
torch's autograd does in float64: planes not multiples of 4 (dy tiles zero past the plane),
odd planes, channel counts not multiples of 8 or 16, batch 1 and short last chunks, bands of
64 tiles across images, padding 0 to 2. Inputs of 2^100 and more, Inf and NaN take F(3x3, 2x2)
(then the direct sums where dw is not finite), as the forward F(4x4) pass does. The thread
count and the variable's refusal: test_conv_winograd_grad.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from conv_checks import conv_attrs
from test_conv_plan_env_switch import _assert_close, _run_child
from test_conv_winograd_grad import (
    PATHS,
    _case_arrays,
    _case_id,
    _torch_weight_grad,
    _weight_grad_engine,
    run_on_variables,
)

# (N, C, H, W), O, padding (stride 1, 3x3 windows)
CASES = [
    ((2, 16, 32, 32), 32, (1, 1)),  # workload B's second layer
    ((2, 32, 16, 16), 64, (1, 1)),  # its third: bands across the images
    ((1, 16, 15, 13), 16, (1, 1)),  # batch 1, odd planes: 4 x 4 tiles, the last ones partial
    ((3, 5, 13, 29), 7, (1, 1)),  # odd outputs both ways, one partial vector of outputs
    ((1, 17, 9, 8), 20, (0, 0)),  # no padding: 7 x 6 outputs
    ((2, 24, 9, 11), 40, (2, 2)),  # padding 2: 11 x 13 outputs, three vectors of outputs
    ((1, 1, 5, 5), 1, (0, 2)),  # one channel each, mixed padding
    ((11, 9, 6, 7), 33, (1, 0)),  # 11 images: chunks of 2, the last one short
    ((5, 40, 18, 18), 24, (1, 1)),  # 81 tiles an image: bands end inside an image
    ((1, 2, 3, 3), 3, (0, 0)),  # one output pixel
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_each_path_computes_the_weight_gradient_as_torch(case, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x, dy, w_shape, attrs = _case_arrays(case, seed=sum(case[0]) + case[1])
    got = _weight_grad_engine(x.shape, w_shape, dy.shape, attrs).run("dw", [x, dy])[0]
    want = _torch_weight_grad(x, w_shape, dy, attrs)
    # Sums of N*OH*OW products of unit normals: the tolerance scales with their square root.
    # Measured largest |error| / sqrt(N*OH*OW) over these cases: 1.2e-5 on every path (F(3x3,
    # 2x2): 1.4e-6), the transforms adding up to 10 inputs and 15 dy values a side; 3x margin.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4e-5 * np.sqrt(dy[0, 0].size * len(x)))


@pytest.mark.parametrize("path", PATHS)
def test_inputs_of_2_to_the_110_give_torchs_values(path, monkeypatch):
    # 2^110: finite in torch's sums and in F(3x3, 2x2)'s, past F(3x3, 4x4)'s transforms' reach
    # (Inf and NaN: test_conv_winograd_grad.py, with this variable set both ways).
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", "always")
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    x, dy, w_shape, attrs = _case_arrays(((2, 16, 12, 12), 32, (1, 1)), seed=3)
    x[1, 5, 4, 7] = 2.0**110
    dy[0, 9, 3, 3] = -(2.0**110)
    got = run_on_variables("conv2d_weight_grad", x, dy, {**attrs, "shape": list(w_shape)})
    want = _torch_weight_grad(x, w_shape, dy, attrs)
    assert np.isfinite(want).all() and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("first,then", [("never", "always"), ("", "never"), ("always", "never")])
@pytest.mark.parametrize("n,c,plane,o", [(2, 16, 18, 32), (3, 32, 8, 64)])
def test_a_plan_survives_the_variable_changing_between_runs(tmp_path, n, c, plane, o, first, then):
    # The plan sizes its scratch once, for F(3x3, 2x2) and F(3x3, 4x4) alike: a write past it
    # aborts the child process.
    rng = np.random.default_rng(n * 1000 + c + o)
    x = rng.standard_normal((n, c, plane, plane)).astype(np.float32)
    dy = rng.standard_normal((n, o, plane, plane)).astype(np.float32)
    w_shape = (o, c, 3, 3)
    before, after = _run_child(
        tmp_path, "conv2d_weight_grad", "GOMETAL_CONV_WINOGRAD_GRAD_F4", first, then, x, dy, w_shape
    )
    want = _torch_weight_grad(x, w_shape, dy, conv_attrs((1, 1), (1, 1), (1, 1), 1))
    _assert_close("first run", before, want)
    _assert_close("run after the switch", after, want)


@pytest.mark.parametrize(
    "plane, tiles", [(4, False), (6, False), (8, True), (10, False), (12, True), (32, True)]
)
def test_unforced_the_planes_choose_the_tiles(plane, tiles, monkeypatch):
    # The two tile sizes round differently: unforced, the bits are those of "always" where the
    # shape rule takes F(3x3, 4x4) (planes of 8+ with 0.6 of F(3x3, 2x2)'s products at most).
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD", "always")
    x, dy, w_shape, attrs = _case_arrays(((2, 16, plane, plane), 16, (1, 1)), seed=plane)
    results = {}
    for forced in ("", "always", "never"):
        monkeypatch.setenv("GOMETAL_CONV_WINOGRAD_GRAD_F4", forced)
        results[forced] = _weight_grad_engine(x.shape, w_shape, dy.shape, attrs).run("dw", [x, dy])[
            0
        ]
    assert not np.array_equal(results["always"], results["never"])
    np.testing.assert_array_equal(results[""], results["always" if tiles else "never"])
