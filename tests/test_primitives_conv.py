"""conv2d, max_pool2d and avg_pool2d with their gradient primitives: forward and gradients
against PyTorch (float64 CPU), central finite differences on NumPy formulas for small cases,
thread-count independence, a batch dimension of -1, and the shape errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gometal as gm
from gometal import _core
from primitive_checks import _distinct, check_graph

RTOL, ATOL = 1e-4, 1e-4


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _close(got, ref, what):
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=RTOL, atol=ATOL * scale, err_msg=what)


def _engine_grads(build, inputs, weights):
    """Runs `build(g, nodes)` over `inputs` (all engine variables); returns the output and the
    gradients of sum(out * weights) with respect to every input."""
    g = _core.Graph()
    nodes = [g.variable(f"in{i}", a.shape) for i, a in enumerate(inputs)]
    out = build(g, nodes)
    loss = g.op(
        "sum", [g.op("mul", [out, g.constant(weights)], {})], {"axes": [], "keepdims": False}
    )
    grads = g.gradients(loss, nodes)
    eng = _core.Engine(g, seed=0)
    for i, a in enumerate(inputs):
        eng.set_variable(f"in{i}", a)
    eng.define("f", inputs=[], outputs=[out, *grads], effects=[], advance_rng=False)
    results = eng.run("f", [])
    return results[0], results[1:]


def _torch_grads(fn, inputs, weights):
    """The same as `_engine_grads` in float64 PyTorch."""
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    out = fn(*ts)
    (out * torch.tensor(weights, dtype=torch.float64)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def _weights(rng, shape):
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


# -- conv2d against torch ------------------------------------------------------------------------

# (N, C, H, W), (O, KH, KW), stride, padding, dilation, groups, bias
CONV_CASES = [
    ((2, 3, 8, 8), (4, 3, 3), 1, 0, 1, 1, False),
    ((2, 3, 9, 8), (4, 3, 3), 2, 1, 1, 1, True),
    ((1, 2, 7, 9), (3, 3, 2), (2, 1), (2, 0), 1, 1, True),
    ((2, 3, 10, 9), (4, 3, 3), 1, 1, 2, 1, False),
    ((2, 3, 11, 10), (5, 3, 3), 2, (2, 0), (2, 1), 1, True),
    ((2, 4, 8, 8), (6, 3, 3), 1, 1, 1, 2, True),
    ((3, 4, 9, 7), (2, 3, 2), (2, 1), (2, 0), 2, 2, False),
    ((2, 5, 7, 8), (5, 3, 3), 1, 1, 1, 5, True),
    ((7, 3, 9, 9), (6, 3, 3), 2, 1, 1, 3, True),
    ((7, 6, 5, 5), (8, 1, 1), 1, 0, 1, 1, True),
    ((2, 6, 7, 6), (4, 1, 1), 2, 0, 1, 1, False),
    ((2, 3, 5, 4), (4, 7, 4), 1, (1, 0), 1, 1, True),
    ((1, 2, 3, 3), (3, 3, 3), 2, 1, 2, 1, True),
    ((1, 3, 12, 10), (4, 3, 3), 1, 1, 1, 1, True),
    ((7, 8, 16, 15), (16, 3, 3), 1, 1, 1, 2, True),
    # Output planes of >= 2048 pixels in rows of a multiple of 8: the direct weight
    # gradient (sums over pixels in vector lanes) instead of im2col + BLAS.
    ((2, 3, 48, 48), (8, 3, 3), 1, 1, 1, 1, True),
    ((1, 4, 50, 48), (6, 3, 3), 1, 2, 2, 2, False),
    ((1, 2, 100, 48), (5, 3, 3), (2, 1), 1, 1, 1, True),
]


def _conv_attrs(stride, padding, dilation, groups):
    pairs = {"stride": _pair(stride), "padding": _pair(padding), "dilation": _pair(dilation)}
    return {**pairs, "groups": groups}


def _conv_case(rng, xs, ws, stride, padding, dilation, groups, bias):
    c = xs[1]
    o, kh, kw = ws
    x = rng.uniform(-1.0, 1.0, xs).astype(np.float32)
    wt = rng.uniform(-1.0, 1.0, (o, c // groups, kh, kw)).astype(np.float32)
    inputs = [x, wt] + ([rng.uniform(-1.0, 1.0, (o, 1, 1)).astype(np.float32)] if bias else [])
    attrs = _conv_attrs(stride, padding, dilation, groups)

    def build(g, nodes):
        out = g.op("conv2d", nodes[:2], attrs)
        return g.op("add", [out, nodes[2]], {}) if bias else out

    def reference(xt, wt_, bt=None):
        kw = {k: tuple(attrs[k]) for k in ("stride", "padding", "dilation")}
        return F.conv2d(xt, wt_, None if bt is None else bt.reshape(-1), groups=groups, **kw)

    return inputs, build, reference


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups,bias", CONV_CASES, ids=str)
def test_conv2d_matches_torch(xs, ws, stride, padding, dilation, groups, bias, rng):
    inputs, build, reference = _conv_case(rng, xs, ws, stride, padding, dilation, groups, bias)
    ref_out = reference(*[torch.tensor(a, dtype=torch.float64) for a in inputs]).numpy()
    weights = _weights(rng, ref_out.shape)
    ref_out, ref_grads = _torch_grads(reference, inputs, weights)
    out, grads = _engine_grads(build, inputs, weights)
    assert out.shape == ref_out.shape
    _close(out, ref_out, "forward")
    for name, got, ref in zip(["dx", "dw", "db"], grads, ref_grads):
        assert got.shape == ref.shape, name
        _close(got, ref, name)


@pytest.mark.parametrize("case", [CONV_CASES[4], CONV_CASES[6], CONV_CASES[8]], ids=str)
def test_conv2d_grad_primitives_match_torch(case, rng):
    xs, ws, stride, padding, dilation, groups, _ = case
    inputs, _, reference = _conv_case(rng, xs, ws, stride, padding, dilation, groups, False)
    x, wt = inputs
    attrs = _conv_attrs(stride, padding, dilation, groups)
    out_shape = reference(torch.tensor(x), torch.tensor(wt)).shape
    gy = rng.uniform(-1.0, 1.0, tuple(out_shape)).astype(np.float32)
    g = _core.Graph()
    xn, wn, gn = g.variable("x", x.shape), g.variable("w", wt.shape), g.variable("g", gy.shape)
    dx = g.op("conv2d_input_grad", [gn, wn], {**attrs, "shape": list(x.shape)})
    dw = g.op("conv2d_weight_grad", [xn, gn], {**attrs, "shape": list(wt.shape)})
    assert tuple(g.shape(dx)) == x.shape and tuple(g.shape(dw)) == wt.shape
    eng = _core.Engine(g, seed=0)
    for name, value in (("x", x), ("w", wt), ("g", gy)):
        eng.set_variable(name, value)
    eng.define("f", inputs=[], outputs=[dx, dw], effects=[], advance_rng=False)
    got_dx, got_dw = eng.run("f", [])
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in (("x", x), ("w", wt), ("g", gy))}
    kw = {"stride": attrs["stride"], "padding": attrs["padding"], "dilation": attrs["dilation"]}
    ref_dx = torch.nn.grad.conv2d_input(x.shape, t["w"], t["g"], groups=groups, **kw)
    ref_dw = torch.nn.grad.conv2d_weight(t["x"], wt.shape, t["g"], groups=groups, **kw)
    _close(got_dx, ref_dx.numpy(), "conv2d_input_grad")
    _close(got_dw, ref_dw.numpy(), "conv2d_weight_grad")


def test_conv2d_same_result_with_one_and_two_threads(rng):
    inputs, build, _ = _conv_case(rng, (7, 6, 13, 11), (8, 3, 3), (2, 1), 1, 1, 2, True)
    weights = _weights(rng, (7, 8, 7, 11))
    saved = gm.get_num_threads()
    try:
        gm.set_num_threads(1)
        one = _engine_grads(build, inputs, weights)
        gm.set_num_threads(2)
        two = _engine_grads(build, inputs, weights)
    finally:
        gm.set_num_threads(saved)
    assert gm.get_num_threads() == saved
    for a, b in zip([one[0], *one[1]], [two[0], *two[1]]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -- pooling against torch -----------------------------------------------------------------------

# (N, C, H, W), kernel, stride, padding; stride == kernel is torch's stride=None
POOL_CASES = [
    ((2, 3, 8, 6), 2, 2, 0),
    ((2, 2, 5, 7), 2, 1, 0),
    ((2, 3, 9, 7), 3, 2, 1),
    ((1, 2, 6, 5), 3, 1, 1),
    ((2, 2, 10, 7), 3, 3, 0),
    ((2, 3, 7, 5), 2, 2, 1),
    ((2, 2, 9, 6), (3, 2), (2, 1), (1, 0)),
    ((7, 4, 11, 9), 3, 2, 1),
    ((2, 3, 8, 38), 2, 2, 0),  # 2x2: eight windows at a time, then a tail of three
]


def _pool_fns(kind, kernel, stride, padding):
    attrs = {"kernel_size": _pair(kernel), "stride": _pair(stride), "padding": _pair(padding)}
    kw = {k: tuple(v) for k, v in attrs.items()}
    if kind == "max":
        return attrs, lambda t: F.max_pool2d(t, **kw)
    return attrs, lambda t: F.avg_pool2d(t, count_include_pad=True, **kw)


def _pool_input(kind, rng, shape):
    if kind == "max":  # distinct values: one winner per window
        return (_distinct(rng, shape) / np.prod(shape)).astype(np.float32)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("xs,kernel,stride,padding", POOL_CASES, ids=str)
def test_pool_matches_torch(kind, xs, kernel, stride, padding, rng):
    attrs, reference = _pool_fns(kind, kernel, stride, padding)
    x = _pool_input(kind, rng, xs)
    ref_out = reference(torch.tensor(x, dtype=torch.float64)).numpy()
    weights = _weights(rng, ref_out.shape)
    ref_out, (ref_dx,) = _torch_grads(reference, [x], weights)
    out, (dx,) = _engine_grads(lambda g, n: g.op(f"{kind}_pool2d", n, attrs), [x], weights)
    assert out.shape == ref_out.shape
    _close(out, ref_out, "forward")
    _close(dx, ref_dx, "dx")


@pytest.mark.parametrize("xs,kernel,stride,padding", POOL_CASES[1:4], ids=str)
def test_pool_grad_primitives_match_torch(xs, kernel, stride, padding, rng):
    x = _pool_input("max", rng, xs)
    attrs, max_ref = _pool_fns("max", kernel, stride, padding)
    _, avg_ref = _pool_fns("avg", kernel, stride, padding)
    out_shape = tuple(max_ref(torch.tensor(x)).shape)
    gy = rng.uniform(-1.0, 1.0, out_shape).astype(np.float32)
    g = _core.Graph()
    xn, gn = g.variable("x", x.shape), g.variable("g", gy.shape)
    dmax = g.op("max_pool2d_grad", [xn, gn], attrs)
    davg = g.op("avg_pool2d_grad", [gn], {**attrs, "shape": list(x.shape)})
    eng = _core.Engine(g, seed=0)
    eng.set_variable("x", x)
    eng.set_variable("g", gy)
    eng.define("f", inputs=[], outputs=[dmax, davg], effects=[], advance_rng=False)
    got_max, got_avg = eng.run("f", [])
    _, (ref_max,) = _torch_grads(max_ref, [x], gy)
    _, (ref_avg,) = _torch_grads(avg_ref, [x], gy)
    _close(got_max, ref_max, "max_pool2d_grad")
    _close(got_avg, ref_avg, "avg_pool2d_grad")


@pytest.mark.parametrize(
    "xs,kernel,stride,padding", [((2, 3, 8, 8), 2, 2, 0), ((2, 2, 7, 9), 3, 2, 1)], ids=str
)
def test_relu_then_max_pool_gradient_masks_the_pooled_gradient(xs, kernel, stride, padding, rng):
    # relu's mask moves to the pooled gradient (a window's max is > 0 exactly when the
    # pooled value is); whole windows of zeros after relu must still get no gradient.
    x = rng.uniform(-1.0, 1.0, xs).astype(np.float32)
    x[:, :, :4, :4] = -np.abs(x[:, :, :4, :4])  # windows relu zeroes entirely
    attrs, reference = _pool_fns("max", kernel, stride, padding)
    ref_out = reference(torch.relu(torch.tensor(x))).numpy()
    weights = _weights(rng, ref_out.shape)

    def build(g, nodes):
        return g.op("max_pool2d", [g.op("relu", nodes, {})], attrs)

    out, (dx,) = _engine_grads(build, [x], weights)
    ref_out, (ref_dx,) = _torch_grads(lambda t: reference(torch.relu(t)), [x], weights)
    _close(out, ref_out, "forward")
    _close(dx, ref_dx, "dx")
    # The mask is taken on the pooled shape: no select over the full input remains.
    g = _core.Graph()
    xn = g.input("x", (-1, *xs[1:]), "float32")
    loss = g.op("sum", [build(g, [xn])], {"axes": []})
    (grad,) = g.gradients(loss, [xn])
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[xn], outputs=[grad], effects=[], advance_rng=False)
    plan = " ".join(eng.describe("f", xs[0]))
    assert "select] " + str(tuple(ref_out.shape)) in plan and "select] " + str(xs) not in plan, plan


@pytest.mark.parametrize(
    "xs,kernel,stride,padding",
    [
        ((2, 2, 6, 7), 2, 2, 0),
        ((2, 2, 6, 37), 2, 2, 0),
        ((2, 2, 6, 7), 3, 1, 1),
        ((1, 3, 7, 6), (3, 2), (2, 1), (1, 1)),
    ],
    ids=str,
)
def test_max_pool_ties_route_to_first_max(xs, kernel, stride, padding, rng):
    x = rng.integers(0, 2, xs).astype(np.float32)  # many equal maxima per window
    x[0, 0] = 1.0  # a plane that is all ties
    attrs, reference = _pool_fns("max", kernel, stride, padding)
    weights = _weights(rng, tuple(reference(torch.tensor(x)).shape))
    ref_out, (ref_dx,) = _torch_grads(reference, [x], weights)
    out, (dx,) = _engine_grads(lambda g, n: g.op("max_pool2d", n, attrs), [x], weights)
    np.testing.assert_array_equal(out, ref_out)
    _close(dx, ref_dx, "dx with ties")


# -- finite differences on NumPy formulas --------------------------------------------------------


def np_conv2d(x, w, stride, padding, dilation, groups):
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for gi in range(groups):
        xs = xp[:, gi * cg : (gi + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh]
                patch = patch[:, :, :, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
                out[:, gi * og : (gi + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[gi * og : (gi + 1) * og, :, i, j]
                )
    return out


def np_pool2d(x, kind, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    windows = np.stack(
        [
            xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]
    )
    return windows.max(axis=0) if kind == "max" else windows.mean(axis=0)


@pytest.mark.parametrize(
    "xs,ws,stride,padding,dilation,groups",
    [
        ((1, 2, 5, 4), (3, 3, 2), 1, 0, 1, 1),
        ((2, 2, 5, 4), (4, 3, 2), (2, 1), 1, (1, 2), 2),
        ((1, 3, 4, 5), (3, 3, 3), 2, (2, 0), 1, 3),
    ],
    ids=str,
)
def test_conv2d_finite_differences(xs, ws, stride, padding, dilation, groups, rng):
    x = rng.uniform(-1.0, 1.0, xs)
    w = rng.uniform(-1.0, 1.0, (ws[0], xs[1] // groups, ws[1], ws[2]))
    b = rng.uniform(-1.0, 1.0, (ws[0], 1, 1))
    attrs = _conv_attrs(stride, padding, dilation, groups)
    check_graph(
        lambda g, n: g.op("add", [g.op("conv2d", n[:2], attrs), n[2]], {}),
        [x, w, b],
        lambda x_, w_, b_: np_conv2d(x_, w_, stride, padding, dilation, groups) + b_,
    )


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 1, 1), ((3, 2), (2, 1), (1, 0))])
def test_pool_finite_differences(kind, kernel, stride, padding, rng):
    x = _distinct(rng, (2, 2, 5, 6))
    attrs = {"kernel_size": _pair(kernel), "stride": _pair(stride), "padding": _pair(padding)}
    check_graph(
        lambda g, n: g.op(f"{kind}_pool2d", n, attrs),
        [x],
        lambda v: np_pool2d(v, kind, kernel, stride, padding),
    )


# -- batch dimension -1 --------------------------------------------------------------------------


def test_batch_dimension_runs_two_batch_sizes(rng):
    attrs = _conv_attrs(1, 1, 1, 1)
    pool = {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    avg = {"kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1]}
    wt = rng.uniform(-1.0, 1.0, (4, 3, 3, 3)).astype(np.float32)
    g = _core.Graph()
    x = g.input("x", (-1, 3, 6, 8), "float32")
    r = g.input("r", (-1, 4, 3, 4), "float32")
    w = g.variable("w", wt.shape)
    conv = g.op("conv2d", [x, w], attrs)
    out = g.op("avg_pool2d", [g.op("max_pool2d", [conv], pool)], avg)
    assert tuple(g.shape(out)) == (-1, 4, 3, 4)
    loss = g.op("sum", [g.op("mul", [out, r], {})], {"axes": [], "keepdims": False})
    dx, dw = g.gradients(loss, [x, w])
    eng = _core.Engine(g, seed=0)
    eng.set_variable("w", wt)
    eng.define("f", inputs=[x, r], outputs=[out, dx, dw], effects=[], advance_rng=False)

    def reference(xt, wt_):
        y = F.max_pool2d(F.conv2d(xt, wt_, padding=1), 2, 2)
        return F.avg_pool2d(y, 3, 1, 1, count_include_pad=True)

    for n in (3, 5, 3):
        xv = rng.uniform(-1.0, 1.0, (n, 3, 6, 8)).astype(np.float32)
        rv = _weights(rng, (n, 4, 3, 4))
        got = eng.run("f", [xv, rv])
        ref_out, ref_grads = _torch_grads(reference, [xv, wt], rv)
        for name, a, b in zip(["out", "dx", "dw"], got, [ref_out, *ref_grads]):
            assert a.shape == b.shape, (n, name)
            _close(a, b, f"batch {n}: {name}")


# -- errors --------------------------------------------------------------------------------------


def _shape_pattern(shape):
    return r"\(" + r",\s*".join(str(d) for d in shape) + r",?\)"


def _raises(g, name, inputs, attrs, *patterns):
    with pytest.raises(ValueError) as err:
        g.op(name, inputs, attrs)
    message = str(err.value)
    assert name in message, message
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)


def test_conv2d_errors_name_op_and_shapes():
    g = _core.Graph()
    attrs = _conv_attrs(1, 0, 1, 1)
    w = g.variable("w", (4, 3, 3, 3))
    _raises(g, "conv2d", [g.variable("x3", (3, 8, 8)), w], attrs, _shape_pattern((3, 8, 8)))
    x = g.variable("x", (2, 2, 8, 8))
    _raises(g, "conv2d", [x, w], attrs, _shape_pattern((2, 2, 8, 8)), _shape_pattern((4, 3, 3, 3)))
    x6 = g.variable("x6", (2, 6, 8, 8))
    w4 = g.variable("w4", (4, 2, 3, 3))
    _raises(g, "conv2d", [x6, w4], {**attrs, "groups": 4}, r"groups\D*4", r"\b6\b")
    x4, big = g.variable("x4", (1, 2, 4, 4)), g.variable("big", (3, 2, 7, 7))
    padded = {**attrs, "padding": [1, 1]}
    _raises(g, "conv2d", [x4, big], padded, r"\b7\b", r"\b6\b", _shape_pattern((1, 2, 4, 4)))
    dilated = {**attrs, "dilation": [5, 1]}  # a 3x3 kernel spanning 11 rows of 8
    _raises(g, "conv2d", [x, g.variable("w3", (3, 2, 3, 3))], dilated, r"\b11\b", r"\b8\b")
    # The graph is still usable afterwards.
    ok = g.op("conv2d", [x6, g.variable("w2", (4, 3, 3, 3))], {**attrs, "groups": 2})
    assert tuple(g.shape(ok)) == (2, 4, 6, 6)


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pool_errors_name_op_and_values(name):
    g = _core.Graph()
    x = g.variable("x", (2, 3, 6, 6))
    for kernel, padding, patterns in [
        ([3, 3], [2, 2], [r"\b2\b", r"\b3\b"]),  # padding more than half the kernel
        ([2, 4], [0, 3], [r"\b3\b", r"\b4\b"]),
        ([7, 2], [0, 0], [r"\b7\b", _shape_pattern((2, 3, 6, 6))]),  # kernel larger than input
    ]:
        attrs = {"kernel_size": kernel, "stride": [1, 1], "padding": padding}
        _raises(g, name, [x], attrs, *patterns)
    x3 = g.variable("x3", (3, 6, 6))
    _raises(g, name, [x3], {"kernel_size": [2, 2]}, _shape_pattern((3, 6, 6)))


def test_gradient_of_wrong_shape_raises():
    g = _core.Graph()
    conv = _conv_attrs(1, 1, 1, 1)
    pool = {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    x, w = g.variable("x", (2, 3, 8, 8)), g.variable("w", (4, 3, 3, 3))
    bad, bad_pool = g.variable("bad", (2, 4, 7, 8)), g.variable("bad_pool", (2, 3, 5, 4))
    conv_x, conv_w = {**conv, "shape": [2, 3, 8, 8]}, {**conv, "shape": [4, 3, 3, 3]}
    bad_out, out = _shape_pattern((2, 4, 7, 8)), _shape_pattern((2, 4, 8, 8))
    bad_pooled, pooled = _shape_pattern((2, 3, 5, 4)), _shape_pattern((2, 3, 4, 4))
    _raises(g, "conv2d_input_grad", [bad, w], conv_x, bad_out, out)
    _raises(g, "conv2d_weight_grad", [x, bad], conv_w, bad_out, out)
    _raises(g, "max_pool2d_grad", [x, bad_pool], pool, bad_pooled, pooled)
    _raises(g, "avg_pool2d_grad", [bad_pool], {**pool, "shape": [2, 3, 8, 8]}, bad_pooled, pooled)
