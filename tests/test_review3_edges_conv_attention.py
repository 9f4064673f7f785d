"""Edge cases of 3x3 input gradients from 16 input channels on Winograd's flipped-weight tiles
(unforced: the smallest planes and channel counts taking them, 15 channels either way, odd
planes, too few tiles, padding 0 to 3, stride 2, dilation 2, groups), with Inf and NaN in dy
or the weights; and of self-attention's gradient with its delta and transposes merged: two
stacked packed-projection layers (the first's gradient through the second's stores), T at and past the 128-key block,
causal, key padding, odd heads, batches 1 to 9, a scale, dropout, a second function's own
transpose, and two engines run from two Python threads at once; and of gelu's kept slope: a
hand-built gelu_grad that only x orders after its gelu, plans of several batch sizes in turn,
two gradient passes through one gelu. At 1, 2 and 3 threads, against torch in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attention_graphs import packed_qkv_heads
from gometal import _core
from gometal.graph.composites import op
from recurrent_parity import thread_counts
from test_conv_winograd_grad import run_on_variables
from threaded import run_on_threads

threads = thread_counts(1, 2, 3)


# (N, C, H, W), O, padding, stride: unforced input gradients around the 16-channel rule.
CASES = [
    ((2, 16, 12, 12), 16, 1, 1),  # the smallest taking the tiles
    ((1, 20, 14, 10), 24, 0, 1),  # C not a multiple of 16, no padding
    ((3, 31, 12, 16), 17, 2, 1),  # padding 2
    ((2, 16, 9, 11), 32, 1, 1),  # odd planes: no tiles
    ((2, 15, 16, 16), 32, 1, 1),  # 15 input channels: below the rule
    ((2, 16, 16, 16), 15, 1, 1),  # 15 output channels
    ((2, 16, 16, 16), 32, 1, 2),  # stride 2: no tiles
    ((1, 16, 4, 4), 16, 1, 1),  # too few tiles
]


def _attrs(case):
    """conv2d's attributes of a case: its padding and stride, and any further ones."""
    _, _, padding, stride, *extra = case
    return {"padding": [padding] * 2, "stride": [stride] * 2, **(extra[0] if extra else {})}


# Further geometries no tile takes: dilation 2, groups of 16 channels, depthwise, an odd
# height, padding 3.
OTHER_CASES = [
    ((2, 16, 14, 14), 16, 2, 1, {"dilation": [2, 2]}),
    ((2, 32, 12, 12), 32, 1, 1, {"groups": 2}),
    ((2, 16, 12, 12), 16, 1, 1, {"groups": 16}),
    ((2, 16, 13, 12), 16, 1, 1),
    ((1, 16, 12, 12), 16, 3, 1),
]


@pytest.mark.parametrize("case", CASES + OTHER_CASES, ids=lambda c: f"{c[0]}o{c[1]}{_attrs(c)}")
def test_unforced_conv_gradients_match_torch(threads, case, monkeypatch):
    monkeypatch.delenv("GOMETAL_CONV_WINOGRAD", raising=False)
    monkeypatch.delenv("GOMETAL_CONV_KERNEL", raising=False)
    x_shape, o = case[:2]
    attrs = _attrs(case)
    groups = attrs.get("groups", 1)
    rng = np.random.default_rng(sum(x_shape) + o)
    xv = rng.standard_normal(x_shape).astype(np.float32)
    wv = (rng.standard_normal((o, x_shape[1] // groups, 3, 3)) / 4).astype(np.float32)
    xt = torch.tensor(xv, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(wv, dtype=torch.float64, requires_grad=True)
    yt = F.conv2d(xt, wt, **attrs)
    ct = rng.uniform(-1, 1, tuple(yt.shape)).astype(np.float32)
    (torch.tanh(yt) * torch.tensor(ct, dtype=torch.float64)).sum().backward()
    g = _core.Graph()
    x = g.input("x", (-1, *x_shape[1:]), "float32")
    w = g.input("w", wv.shape, "float32")
    c = g.input("c", (-1, *ct.shape[1:]), "float32")
    y = g.op("tanh", [g.op("conv2d", [x, w], attrs)])
    loss = g.op("sum", [g.op("mul", [y, c])], {"axes": []})
    dx, dw = g.gradients(loss, [x, w])
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=[x, w, c], outputs=[dx, dw])
    got = eng.run("f", [xv, wv, ct])
    atol = 1e-5 * np.sqrt(o * 9)
    np.testing.assert_allclose(got[0], xt.grad.numpy(), rtol=1e-4, atol=atol)
    np.testing.assert_allclose(
        got[1], wt.grad.numpy(), rtol=1e-4, atol=1e-4 * np.sqrt(x_shape[0] * 144)
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}o{c[1]}p{c[2]}s{c[3]}")
def test_unforced_routing_around_the_16_channel_rule(case, monkeypatch):
    """The first three cases take the tiles unforced (the bits of =always), the others keep
    the channel lanes (those of =never); both match torch above."""
    x_shape, o, padding, stride = case
    rng = np.random.default_rng(o)
    w = rng.standard_normal((o, x_shape[1], 3, 3)).astype(np.float32)
    out = F.conv2d(torch.zeros(x_shape), torch.from_numpy(w), padding=padding, stride=stride)
    dy = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    attrs = {**_attrs(case), "shape": list(x_shape)}
    results = {}
    for forced in ("", "always", "never"):
        monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", forced)
        results[forced] = run_on_variables("conv2d_input_grad", dy, w, attrs)
    expected = "always" if CASES.index(case) < 3 else "never"
    np.testing.assert_array_equal(results[""], results[expected])


@pytest.mark.parametrize("where", ["dy-inf", "dy-nan", "w-inf", "w-nan"])
def test_unforced_16_channel_input_grad_non_finite(threads, where, monkeypatch):
    """16 <- 24 channels at 12 x 12, unforced (the tiles' routing): Inf and NaN in dy or the
    weights give torch's non-finite cells and finite values elsewhere."""
    monkeypatch.delenv("GOMETAL_CONV_WINOGRAD", raising=False)
    rng = np.random.default_rng(12)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    dy = (np.abs(rng.standard_normal((2, 24, 12, 12))) + 0.5).astype(np.float32)
    w = np.abs(w) + 0.1
    bad = np.inf if where.endswith("inf") else np.nan
    if where.startswith("dy"):
        dy[1, 7, 5, 6] = bad
    else:
        w[3, 9, 1, 2] = bad
    got = run_on_variables(
        "conv2d_input_grad", dy, w, {"padding": [1, 1], "stride": [1, 1], "shape": [2, 16, 12, 12]}
    )
    xt = torch.zeros((2, 16, 12, 12), dtype=torch.float64, requires_grad=True)
    y = F.conv2d(xt, torch.from_numpy(w).double(), padding=1)
    y.backward(torch.from_numpy(dy).double())
    want = xt.grad.numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def _two_layer_graph(n, t, e, heads, causal, mask):
    """Two packed-projection self-attention layers, x -> att1 -> att2 -> sum(out * w):
    the gradient of the first flows through the second's merged dq/dk/dv stores.
    Returns (g, inputs, the output, the gradients of x, the weights and the biases)."""
    g = _core.Graph()
    x = g.input("x", (n, t, e))
    ws = [g.input(f"w{i}", (3 * e, e)) for i in range(2)]
    bs = [g.input(f"b{i}", (3 * e,)) for i in range(2)]
    h = x
    for layer in range(2):
        qkv = packed_qkv_heads(g, h, ws[layer], bs[layer], n, t, e, heads)
        if mask is not None:
            qkv.append(g.constant(mask))
        out = g.op("attention", qkv, {"causal": causal})
        h = op(g, "reshape", op(g, "transpose", out, perm=[0, 2, 1, 3]), shape=[n, t, e])
    w = g.input("w", (n, t, e))
    loss = g.op("sum", [g.op("mul", [h, w], {})], {"axes": []})
    return g, [x, *ws, *bs, w], h, g.gradients(loss, [x, *ws, *bs])


def _two_layers(n, t, e, heads, causal, mask):
    g, inputs, h, grads = _two_layer_graph(n, t, e, heads, causal, mask)
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("step", inputs=inputs, outputs=[h, *grads], effects=[], advance_rng=False)
    return engine, engine.describe("step", n)


def _values(n, t, e, seed):
    rng = np.random.default_rng(seed)
    vals = [rng.standard_normal((n, t, e))]
    vals += [rng.standard_normal((3 * e, e)) / np.sqrt(e) for _ in range(2)]
    vals += [rng.standard_normal(3 * e) / 4 for _ in range(2)]
    vals.append(rng.uniform(-1, 1, (n, t, e)))
    return [v.astype(np.float32) for v in vals]


def _torch_two_layers(values, heads, causal, mask):
    x, w0, w1, b0, b1, w = (
        torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in values
    )
    n, t, e = x.shape
    h = x
    m = None if mask is None else torch.tensor(mask, dtype=torch.float64)
    projections = []
    for wt, bt in ((w0, b0), (w1, b1)):
        projections.append(h @ wt.T + bt)
        projections[-1].retain_grad()
        qkv = projections[-1].reshape(n, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=m, is_causal=causal)
        h = out.permute(0, 2, 1, 3).reshape(n, t, e)
    (h * w).sum().backward()
    return [h.detach().numpy()] + [a.grad.numpy() for a in (x, w0, w1, b0, b1, *projections)]


# (N, T, E, heads): T at the block (merged), one past it (kept), a batch big enough for tiles,
# heads of 5 and 3 floats.
SIZES = [(6, 128, 32, 4), (2, 129, 16, 2), (9, 24, 15, 3), (1, 3, 10, 2), (4, 33, 40, 8)]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_stacked_self_attention_gradients(threads, size, causal, masked):
    n, t, e, heads = size
    mask = None
    if masked:  # key padding: sequence i loses its last i keys (at least one key kept)
        mask = np.zeros((n, 1, 1, t), np.float32)
        for i in range(n):
            if i % t:
                mask[i, ..., t - i % t :] = -np.inf
    values = _values(n, t, e, seed=t * e + n)
    engine, plan = _two_layers(n, t, e, heads, causal, mask)
    assert sum(line.startswith("attention_grad,mul,sum,transpose") for line in plan) == (
        2 if t <= 128 else 0
    ), plan
    got = engine.run("step", values)
    want = _torch_two_layers(values, heads, causal, mask)
    for what, a, b in zip(("out", "dx", "dw0", "dw1", "db0", "db1"), got, want[:6], strict=True):
        atol = 2e-5 * max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol, err_msg=what)


def test_another_functions_transpose_of_the_gradient_is_stored_into():
    """A second function returns only a new transpose of each layer's attention_grad to the
    products' (N, T, 3, H, D) layout: it merges with that transpose (the autodiff's lies in
    the first function) and gives torch's gradient of the layer's projection."""
    n, t, e, heads = 2, 10, 12, 2
    g, inputs, _, grads = _two_layer_graph(n, t, e, heads, True, None)
    grad_ops = [i for i in range(max(grads)) if g.op_name(i) == "attention_grad"]
    assert len(grad_ops) == 2  # the second layer's first
    stores = [g.op("transpose", [i], {"perm": [1, 3, 0, 2, 4]}) for i in grad_ops]
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("step", inputs=inputs, outputs=grads, effects=[], advance_rng=False)
    values = _values(n, t, e, seed=5)
    want = _torch_two_layers(values, heads, True, None)
    for layer, store in zip((1, 0), stores):
        name = f"store{layer}"
        engine.define(name, inputs=inputs, outputs=[store], effects=[], advance_rng=False)
        plan = engine.describe(name, n)
        assert any(line.startswith("attention_grad,mul,sum,transpose") for line in plan), plan
        (got,) = engine.run(name, values)
        reference = want[6 + layer].reshape(got.shape)
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=2e-5, err_msg=name)
    for a, b in zip(engine.run("step", values), want[1:6], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize(
    "attrs",
    [
        {"causal": True, "scale": 0.37},
        {"dropout": 0.3},
        {"causal": True, "dropout": 0.5, "scale": 0.2},
    ],
    ids=["scale", "dropout", "causal-dropout-scale"],
)
def test_merged_delta_with_scale_and_dropout(threads, attrs):
    """One function merges delta into the gradient step; a second also returns delta, which
    keeps its own sum: the same gradients (dropout draws the same mask in both), delta equal
    to NumPy's rowsum(out * g), and without dropout torch's values at that scale."""
    n, h, t, d = 2, 3, 17, 9
    rng = np.random.default_rng(4)
    values = [rng.standard_normal((n, h, t, d)).astype(np.float32) for _ in range(3)]
    cotangent = rng.uniform(-1, 1, (n, h, t, d)).astype(np.float32)
    g = _core.Graph()
    q, k, v = (g.input(name, (n, h, t, d)) for name in "qkv")
    c = g.input("c", (n, h, t, d))
    out = g.op("attention", [q, k, v], attrs)
    grads = g.gradients(g.op("sum", [g.op("mul", [out, c])], {"axes": []}), [q, k, v])
    (grad_op,) = [i for i in range(max(grads)) if g.op_name(i) == "attention_grad"]
    delta = g.inputs_of(grad_op)[5]
    engine = _core.Engine(g, seed=0, backend="cpu")
    for name, extra in (("merged", []), ("apart", [delta])):
        outputs = [out, *grads, *extra]
        engine.define(name, inputs=[q, k, v, c], outputs=outputs, effects=[], advance_rng=False)
    merged_lines = [line for line in engine.describe("merged", n) if "attention_grad" in line]
    assert any(line.startswith("attention_grad,mul,sum") for line in merged_lines)
    assert not any("attention_grad,mul" in line for line in engine.describe("apart", n))
    merged = engine.run("merged", [*values, cotangent])
    apart = engine.run("apart", [*values, cotangent])
    for what, a, b in zip(("out", "dq", "dk", "dv"), merged, apart[:4], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=what)
    want_delta = (apart[0].astype(np.float64) * cotangent).sum(axis=-1)
    np.testing.assert_allclose(apart[4], want_delta, rtol=1e-5, atol=1e-6)
    if "dropout" in attrs:
        return
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in values]
    ref = F.scaled_dot_product_attention(*tensors, is_causal=attrs["causal"], scale=attrs["scale"])
    (ref * torch.tensor(cotangent, dtype=torch.float64)).sum().backward()
    want = [ref.detach().numpy()] + [a.grad.numpy() for a in tensors]
    for what, a, b in zip(("out", "dq", "dk", "dv"), merged, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=what)


def test_two_engines_on_two_python_threads():
    """Two models' attention gradients run at once from two Python threads: each gives the bits
    it gives alone."""
    cases = [((3, 40, 24, 3), True), ((2, 64, 32, 4), False)]
    engines, values, alone = [], [], []
    for (n, t, e, heads), causal in cases:
        engine, _ = _two_layers(n, t, e, heads, causal, None)
        v = _values(n, t, e, seed=e)
        engines.append(engine)
        values.append(v)
        alone.append(engine.run("step", v))
    results = [[], []]

    def work(k):
        for _ in range(6):
            results[k].append(engines[k].run("step", values[k]))

    run_on_threads(work, 2)
    for k in range(2):
        assert len(results[k]) == 6
        for run in results[k]:
            for a, b in zip(run, alone[k], strict=True):
                np.testing.assert_array_equal(a, b)


def _gelu_slope(x: np.ndarray) -> np.ndarray:
    """Phi(x) + x phi(x) in float64 (torch's gelu derivative)."""
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.gelu(t).sum().backward()
    return t.grad.numpy()


@pytest.mark.parametrize("tiling", [True, False])
def test_a_gelu_grad_independent_of_its_gelu_reads_this_runs_slope(threads, tiling):
    """gelu(x) inside a conv chain and gelu_grad(x, c) built by hand (nothing orders it after
    the gelu but x): every run, at two batch sizes in turn, gives c times this run's slope,
    never a kept slope of an earlier run or plan."""
    g = _core.Graph()
    x = g.input("x", (-1, 16, 12, 12))
    c = g.input("c", (-1, 16, 12, 12))
    k = g.input("k", (16, 16, 3, 3))
    conv = g.op("conv2d", [g.op("gelu", [x]), k], {"padding": [1, 1]})
    outputs = [g.op("conv2d", [g.op("relu", [conv]), k], {"padding": [1, 1]})]
    outputs.append(g.op("gelu_grad", [x, c]))
    engine = _core.Engine(g, seed=0, options={"sample_tiling": tiling})
    engine.define("f", inputs=[x, c, k], outputs=outputs, effects=[])
    rng = np.random.default_rng(6)
    kv = (rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32)
    for n in (3, 1, 3, 2):
        xv = (rng.standard_normal((n, 16, 12, 12)) * 3).astype(np.float32)
        cv = rng.standard_normal((n, 16, 12, 12)).astype(np.float32)
        _, got = engine.run("f", [xv, cv, kv])
        np.testing.assert_allclose(got, cv * _gelu_slope(xv), rtol=1e-5, atol=1e-6)


def test_two_gradient_passes_of_one_gelu(threads):
    """Two g.gradients calls through one gelu of a biased product: both gelu_grads of x read
    the slope; x's and the weight's gradients against torch over three runs with new x."""
    g = _core.Graph()
    x = g.input("x", (-1, 9, 21))
    w = g.input("w", (21, 30))
    b = g.input("b", (30,))
    h = g.op("gelu", [g.op("add", [g.op("matmul", [x, w]), b])])
    first = g.op("sum", [g.op("mul", [h, h])], {"axes": []})
    second = g.op("sum", [g.op("tanh", [h])], {"axes": []})
    grads = g.gradients(first, [x, w]) + g.gradients(second, [x, b])
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("f", inputs=[x, w, b], outputs=grads, effects=[])
    rng = np.random.default_rng(8)
    for n in (4, 4, 1):
        values = [rng.standard_normal(s).astype(np.float32) for s in ((n, 9, 21), (21, 30), (30,))]
        got = engine.run("f", values)
        want = []
        for loss, wrt in (
            (lambda t: (t * t).sum(), (0, 1)),
            (lambda t: torch.tanh(t).sum(), (0, 2)),
        ):
            ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
            loss(torch.nn.functional.gelu(ts[0] @ ts[1] + ts[2])).backward()
            want += [ts[i].grad.numpy() for i in wrt]
        for a, ref in zip(got, want, strict=True):
            np.testing.assert_allclose(
                a, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max()))
            )


@pytest.mark.parametrize("n", [1, 5, 40])
def test_four_gelu_grads_of_one_x_with_broadcast_cotangents(threads, n):
    """One gelu and four gelu_grads of its x (two from autodiff, two by hand; cotangents a
    (21,) row, ones, a scalar), image by image where the steps tile: each is torch's slope
    times its cotangent."""
    g = _core.Graph()
    x, b, s = g.input("x", (-1, 9, 21)), g.input("b", (21,)), g.input("s", ())
    y = g.op("gelu", [x])
    outputs = g.gradients(g.op("sum", [g.op("mul", [y, b])], {"axes": []}), [x])
    outputs += g.gradients(g.op("sum", [y], {"axes": []}), [x])
    outputs += [g.op("gelu_grad", [x, b]), g.op("gelu_grad", [x, s])]
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("f", inputs=[x, b, s], outputs=[y, *outputs], effects=[])
    rng = np.random.default_rng(n)
    xv = (rng.standard_normal((n, 9, 21)) * 5).astype(np.float32)
    bv = rng.standard_normal(21).astype(np.float32)
    got = engine.run("f", [xv, bv, np.array(1.7, np.float32)])
    slope = _gelu_slope(xv)
    for a, want in zip(got[1:], (slope * bv, slope, slope * bv, slope * 1.7), strict=True):
        np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss_kind", ["sum", "row", "square", "tanh"])
def test_merged_delta_with_cotangents_made_in_the_graph(threads, loss_kind):
    """Cotangents of attention's output that the graph makes (ones broadcast, a broadcast row,
    2 out, 1 - tanh(out)^2) merge their delta into the gradient step; torch's gradients."""
    n, h, t, d = 2, 3, 11, 6
    rng = np.random.default_rng(len(loss_kind))
    values = [rng.standard_normal((n, h, t, d)).astype(np.float32) for _ in range(3)]
    row = rng.standard_normal(d).astype(np.float32)
    g = _core.Graph()
    q, k, v = (g.input(name, (n, h, t, d)) for name in "qkv")
    b = g.input("b", (d,))
    out = g.op("attention", [q, k, v], {"causal": True})
    per_element = {
        "sum": lambda: out,
        "row": lambda: g.op("mul", [out, b]),
        "square": lambda: g.op("mul", [out, out]),
        "tanh": lambda: g.op("tanh", [out]),
    }[loss_kind]()
    grads = g.gradients(g.op("sum", [per_element], {"axes": []}), [q, k, v])
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("f", inputs=[q, k, v, b], outputs=grads, effects=[], advance_rng=False)
    assert any(line.startswith("attention_grad,mul,sum") for line in engine.describe("f", n))
    got = engine.run("f", [*values, row])
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in values]
    o = F.scaled_dot_product_attention(*tensors, is_causal=True)
    per_element_ref = {
        "sum": lambda: o,
        "row": lambda: o * torch.tensor(row, dtype=torch.float64),
        "square": lambda: o * o,
        "tanh": lambda: torch.tanh(o),
    }[loss_kind]()
    per_element_ref.sum().backward()
    for what, a, ref in zip("qkv", got, tensors, strict=True):
        np.testing.assert_allclose(a, ref.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=what)


def test_a_returned_head_split_cotangent_keeps_its_own_step():
    """The (N, T, H, D) transpose of g that attention_grad reads in place, also returned by a
    second function, keeps its own step there; both functions give torch's gradients."""
    n, t, e, heads = 2, 10, 12, 2
    g, inputs, _, grads = _two_layer_graph(n, t, e, heads, True, None)
    grad_ops = [i for i in range(max(grads)) if g.op_name(i) == "attention_grad"]
    split = g.inputs_of(grad_ops[0])[3]  # the second layer's cotangent, split into heads
    assert g.op_name(split) == "transpose"
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("step", inputs=inputs, outputs=grads, effects=[], advance_rng=False)
    engine.define("both", inputs=inputs, outputs=[*grads, split], effects=[], advance_rng=False)
    merged = [line for line in engine.describe("step", n) if line.startswith("attention_grad")]
    kept = [line for line in engine.describe("both", n) if line.startswith("attention_grad")]
    assert any(line.startswith("attention_grad,mul,sum,transpose,transpose") for line in merged)
    assert any(not line.startswith("attention_grad,mul,sum,transpose,transpose") for line in kept)
    values = _values(n, t, e, seed=9)
    want = _torch_two_layers(values, heads, True, None)
    both = engine.run("both", values)
    heads_of_w = values[-1].reshape(n, t, heads, e // heads).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(both[-1], heads_of_w)
    for run in (engine.run("step", values), both[:-1]):
        for a, b in zip(run, want[1:6], strict=True):
            np.testing.assert_allclose(
                a, b, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(b).max()))
            )
