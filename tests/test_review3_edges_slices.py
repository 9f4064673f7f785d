"""Edge cases of last-axis slices read in place by their readers (a scatter_add's updates, a
batched product's A against a 2-D B, a product summed over its batch, a column sum, a
recurrence's x): a Gram product of one slice with itself, slices of inputs and variables, a
slice that is also an output, a slice of a slice, 4-D A with either B layout, sums with
negative axes and keepdims, NaN and infinities made inside the graph, two slices of one source
read later, conv outputs under sample tiling on and off, the gradients of a concat (whose
columns come back as slices) with and without variable updates, and stacked recurrences; at
1, 2 and 3 threads and batches of 1, against NumPy or torch in float64."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core
from recurrent_parity import Config, check_parity, thread_counts

threads = thread_counts(1, 2, 3)


def _slice(g, x, start, end, axis=None):
    axis = len(g.shape(x)) - 1 if axis is None else axis
    return g.op("slice", [x], {"axis": axis, "start": start, "end": end})


def _run(g, inputs, outputs, values, batch=None):
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.define("f", inputs=inputs, outputs=outputs)
    got = eng.run("f", values)
    return got, eng.describe("f", values[0].shape[0] if batch is None else batch)


def _source(shape, seed):
    """A graph with a float input x of ``shape`` drawn from ``seed``: (g, x, x's value)."""
    v = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    g = _core.Graph()
    return g, g.input("x", v.shape, "float32"), v


def _source_and_ids(shape, rows, seed):
    """_source and int32 row ids over its leading axes: (g, x, ids, x's value, the ids')."""
    g, x, v = _source(shape, seed)
    ids = np.random.default_rng(seed + 1).integers(0, rows, shape[:-1]).astype(np.int32)
    return g, x, g.input("i", ids.shape, "int32"), v, ids


def _in_place(plan, *ops):
    """Asserts each op in ``ops`` has a plan step that reads a slice in place."""
    for name in ops:
        assert any(line.startswith(f"{name},slice") for line in plan), (name, plan)


def test_gram_of_one_slice(threads):
    g, x, v = _source((3, 6, 40), seed=0)
    part = _slice(g, g.op("tanh", [x]), 5, 22)
    gram = g.op("sum", [g.op("matmul", [part, part], {"transpose_a": True})], {"axes": [0]})
    (got,), plan = _run(g, [x], [gram], [v])
    _in_place(plan, "matmul")
    s = np.tanh(v.astype(np.float64))[..., 5:22]
    np.testing.assert_allclose(got, np.einsum("ntm,ntk->mk", s, s), rtol=1e-5, atol=1e-5)


def test_slice_of_input_and_variable(threads):
    rng = np.random.default_rng(1)
    v = rng.standard_normal((4, 5, 30)).astype(np.float32)
    ids = rng.integers(0, 6, (4, 5)).astype(np.int32)
    wv = rng.standard_normal((12, 3)).astype(np.float32)
    g = _core.Graph()
    x = g.input("x", v.shape, "float32")
    i = g.input("i", ids.shape, "int32")
    w = g.variable("w", (12, 3))
    part = _slice(g, x, 7, 19)
    outs = [
        g.op("scatter_add", [part, i], {"rows": 6}),
        g.op("sum", [part], {"axes": [0, 1]}),
        g.op("matmul", [part, w]),
    ]
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.set_variable("w", wv)
    eng.define("f", inputs=[x, i], outputs=outs)
    got = eng.run("f", [v, ids])
    s = v.astype(np.float64)[..., 7:19]
    table = np.zeros((6, 12))
    np.add.at(table, ids.ravel(), s.reshape(-1, 12))
    for a, b in zip(got, [table, s.sum(axis=(0, 1)), s @ wv]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_slice_also_returned(threads):
    g, x, v = _source((2, 3, 33), seed=2)
    part = _slice(g, g.op("exp", [x]), 17, 33)
    (s_got, sum_got), plan = _run(g, [x], [part, g.op("sum", [part], {"axes": [0, 1]})], [v])
    assert any(line.startswith("slice") for line in plan), plan  # an output keeps its buffer
    s = np.exp(v.astype(np.float64))[..., 17:33]
    np.testing.assert_allclose(s_got, s, rtol=1e-6)
    np.testing.assert_allclose(sum_got, s.sum(axis=(0, 1)), rtol=1e-5)


def test_slice_of_a_slice(threads):
    g, x, i, v, ids = _source_and_ids((3, 4, 50), 3, seed=3)
    inner = _slice(g, g.op("sigmoid", [x]), 10, 41)
    outer = _slice(g, inner, 3, 20)
    outs = [
        g.op("sum", [outer], {"axes": [0, 1]}),
        g.op("scatter_add", [outer, i], {"rows": 3}),
        g.op("sum", [inner], {"axes": [1, 0]}),
    ]
    got, plan = _run(g, [x, i], outs, [v, ids])
    _in_place(plan, "sum", "scatter_add")
    s = 1 / (1 + np.exp(-v.astype(np.float64)))
    o = s[..., 13:30]
    table = np.zeros((3, 17))
    np.add.at(table, ids.ravel(), o.reshape(-1, 17))
    for a, b in zip(got, [o.sum(axis=(0, 1)), table, s[..., 10:41].sum(axis=(0, 1))]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transpose_b", [False, True])
def test_batched_product_4d_a(threads, transpose_b):
    rng = np.random.default_rng(4)
    v = rng.standard_normal((2, 3, 5, 29)).astype(np.float32)
    wv = rng.standard_normal((9, 13) if transpose_b else (13, 9)).astype(np.float32)
    g = _core.Graph()
    x = g.input("x", v.shape, "float32")
    w = g.input("w", wv.shape, "float32")
    part = _slice(g, g.op("relu", [x]), 16, 29)
    (got,), plan = _run(
        g, [x, w], [g.op("matmul", [part, w], {"transpose_b": transpose_b})], [v, wv]
    )
    _in_place(plan, "matmul")
    s = np.maximum(v.astype(np.float64), 0)[..., 16:29]
    np.testing.assert_allclose(got, s @ (wv.T if transpose_b else wv), rtol=1e-5, atol=1e-5)


def test_sum_keepdims_negative_axes(threads):
    rng = np.random.default_rng(5)
    v = rng.standard_normal((3, 4, 21)).astype(np.float32)
    g = _core.Graph()
    x = g.input("x", v.shape, "float32")
    part = _slice(g, g.op("tanh", [x]), 1, 20)
    outs = [
        g.op("sum", [part], {"axes": [-3, -2]}),
        g.op("sum", [part], {"axes": [0, 1], "keepdims": True}),
    ]
    got, plan = _run(g, [x], outs, [v])
    assert sum(line.startswith("sum,slice") for line in plan) == 2, plan
    s = np.tanh(v.astype(np.float64))[..., 1:20]
    np.testing.assert_allclose(got[0], s.sum(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], s.sum(axis=(0, 1), keepdims=True), rtol=1e-5, atol=1e-6)


def test_nan_inf_through_in_place_readers(threads):
    rng = np.random.default_rng(6)
    # Inputs refuse NaN: log makes it (of -1) and -inf (of 0) inside the graph.
    v = rng.uniform(0.5, 2.0, (2, 4, 40)).astype(np.float32)
    v[0, 1, 12] = -1.0
    v[1, 2, 20] = 0.0
    v[1, 3, 3] = 0.0  # outside the slice
    ids = np.array([[0, 1, 2, 0], [1, 1, 2, 2]], np.int32)
    wv = rng.standard_normal((20, 5)).astype(np.float32)
    g = _core.Graph()
    x = g.input("x", v.shape, "float32")
    i = g.input("i", ids.shape, "int32")
    w = g.input("w", wv.shape, "float32")
    part = _slice(g, g.op("log", [x]), 8, 28)
    outs = [
        g.op("sum", [part], {"axes": [0, 1]}),
        g.op("scatter_add", [part, i], {"rows": 3}),
        g.op("matmul", [part, w]),
    ]
    got, plan = _run(g, [x, i, w], outs, [v, ids, wv])
    _in_place(plan, "sum", "scatter_add", "matmul")
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.log(v.astype(np.float64))[..., 8:28]
        table = np.zeros((3, 20))
        np.add.at(table, ids.ravel(), s.reshape(-1, 20))
        want = [s.sum(axis=(0, 1)), table, s @ wv]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_two_slices_of_one_source_and_the_source_read_later(threads):
    g, x, i, v, ids = _source_and_ids((1, 7, 48), 5, seed=7)
    src = g.op("tanh", [x])
    a = _slice(g, src, 0, 16)
    b = _slice(g, src, 16, 48)
    sa = g.op("scatter_add", [a, i], {"rows": 5})
    sb = g.op("sum", [b], {"axes": [0, 1]})
    later = g.op("sum", [g.op("mul", [src, src])], {"axes": [2]})
    got, plan = _run(g, [x, i], [sa, sb, later], [v, ids])
    _in_place(plan, "sum", "scatter_add")
    s = np.tanh(v.astype(np.float64))
    table = np.zeros((5, 16))
    np.add.at(table, ids.ravel(), s[..., :16].reshape(-1, 16))
    for o, w in zip(got, [table, s[..., 16:].sum(axis=(0, 1)), (s * s).sum(axis=2)]):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tiling", [True, False])
def test_conv_output_slices_under_sample_tiling(threads, tiling):
    """Conv -> relu -> a slice of W's last columns, read by a batched product, a column sum
    and a scatter_add; then a conv of the product: tiling on and off against float64."""
    import torch

    rng = np.random.default_rng(8)
    n, c, h, w = 5, 16, 12, 12
    xv = rng.standard_normal((n, c, h, w)).astype(np.float32)
    kv = (rng.standard_normal((16, c, 3, 3)) / 12).astype(np.float32)
    bv = rng.standard_normal((7, 12)).astype(np.float32)
    k2 = (rng.standard_normal((4, 16, 3, 3)) / 12).astype(np.float32)
    ids = rng.integers(0, 9, (n, 16, h)).astype(np.int32)
    _core.set_sample_tiling(tiling)
    try:
        g = _core.Graph()
        x = g.input("x", (-1, c, h, w), "float32")
        kk = g.input("k", kv.shape, "float32")
        b = g.input("b", bv.shape, "float32")
        kk2 = g.input("k2", k2.shape, "float32")
        i = g.input("i", (-1, 16, h), "int32")
        y = g.op("relu", [g.op("conv2d", [x, kk], {"padding": [1, 1]})])
        part = _slice(g, y, 3, 10)
        prod = g.op("matmul", [part, b])
        z = g.op("conv2d", [prod, kk2], {"padding": [1, 1]})
        outs = [
            z,
            g.op("sum", [part], {"axes": [0, 1, 2]}),
            g.op("scatter_add", [part, i], {"rows": 9}),
        ]
        got, plan = _run(g, [x, kk, b, kk2, i], outs, [xv, kv, bv, k2, ids])
    finally:
        _core.set_sample_tiling(True)
    _in_place(plan, "matmul", "sum", "scatter_add")
    t = torch.nn.functional
    yt = t.relu(
        t.conv2d(
            torch.tensor(xv, dtype=torch.float64), torch.tensor(kv, dtype=torch.float64), padding=1
        )
    )
    s = yt[..., 3:10]
    zt = t.conv2d(
        s @ torch.tensor(bv, dtype=torch.float64), torch.tensor(k2, dtype=torch.float64), padding=1
    )
    table = np.zeros((9, 7))
    np.add.at(table, ids.ravel(), s.numpy().reshape(-1, 7))
    for a, ref in zip(got, [zt.numpy(), s.sum(dim=(0, 1, 2)).numpy(), table]):
        np.testing.assert_allclose(a, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize(("hidden", "emb"), [(16, 16), (13, 19), (5, 40)])
def test_concat_gradients_read_slices_in_place(threads, n, hidden, emb):
    """concat([x W + b, table[ids]]) -> tanh -> W2: the gradient's columns split into
    slices that a batched product, a column sum and a scatter_add read; against torch."""
    import torch

    rng = np.random.default_rng(hidden * emb + n)
    t, i_dim, vocab, k = 6, 11, 7, 9
    vals = {
        "x": rng.standard_normal((n, t, i_dim)),
        "w": rng.standard_normal((i_dim, hidden)) / 3,
        "b": rng.standard_normal((hidden,)),
        "table": rng.standard_normal((vocab, emb)),
        "w2": rng.standard_normal((hidden + emb, k)) / 4,
        "c": rng.uniform(-1, 1, (n, t, k)),
    }
    vals = {key: v.astype(np.float32) for key, v in vals.items()}
    ids = rng.integers(0, vocab, (n, t)).astype(np.int32)
    ids[0, :3] = 2  # repeated rows
    g = _core.Graph()
    nodes = {key: g.input(key, v.shape, "float32") for key, v in vals.items()}
    i = g.input("ids", ids.shape, "int32")
    a = g.op("add", [g.op("matmul", [nodes["x"], nodes["w"]]), nodes["b"]])
    e = g.op("gather", [nodes["table"], i])
    y = g.op("tanh", [g.op("concat", [a, e], {"axis": 2})])
    z = g.op("matmul", [y, nodes["w2"]])
    loss = g.op("sum", [g.op("mul", [z, nodes["c"]])], {"axes": []})
    wrt = ["x", "w", "b", "table", "w2"]
    grads = g.gradients(loss, [nodes[key] for key in wrt])
    got, plan = _run(g, [*nodes.values(), i], grads, [*vals.values(), ids])
    _in_place(plan, "matmul", "sum", "scatter_add")
    tv = {key: torch.tensor(v, dtype=torch.float64, requires_grad=True) for key, v in vals.items()}
    at = tv["x"] @ tv["w"] + tv["b"]
    et = tv["table"][torch.tensor(ids, dtype=torch.long)]
    zt = torch.tanh(torch.cat([at, et], dim=2)) @ tv["w2"]
    (zt * tv["c"]).sum().backward()
    for key, value in zip(wrt, got):
        np.testing.assert_allclose(value, tv[key].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=key)


def test_concat_gradients_with_variables_and_updates(threads):
    """The same gradient split as a training step: the weights are variables updated by
    assign (w - 0.1 grad) while the gradients are also returned; two steps against torch."""
    import torch

    rng = np.random.default_rng(9)
    n, t, i_dim, hidden, vocab, emb, k = 3, 5, 11, 13, 7, 19, 9
    init = {
        "w": rng.standard_normal((i_dim, hidden)) / 3,
        "b": rng.standard_normal((hidden,)),
        "table": rng.standard_normal((vocab, emb)),
        "w2": rng.standard_normal((hidden + emb, k)) / 4,
    }
    init = {key: v.astype(np.float32) for key, v in init.items()}
    xv = rng.standard_normal((n, t, i_dim)).astype(np.float32)
    cv = rng.uniform(-1, 1, (n, t, k)).astype(np.float32)
    ids = rng.integers(0, vocab, (n, t)).astype(np.int32)
    g = _core.Graph()
    x = g.input("x", xv.shape, "float32")
    c = g.input("c", cv.shape, "float32")
    i = g.input("ids", ids.shape, "int32")
    var = {key: g.variable(key, v.shape) for key, v in init.items()}
    a = g.op("add", [g.op("matmul", [x, var["w"]]), var["b"]])
    y = g.op("tanh", [g.op("concat", [a, g.op("gather", [var["table"], i])], {"axis": 2})])
    loss = g.op("sum", [g.op("mul", [g.op("matmul", [y, var["w2"]]), c])], {"axes": []})
    grads = g.gradients(loss, list(var.values()))
    lr = g.constant(0.1)
    effects = [
        g.op("assign", [v, g.op("sub", [v, g.op("mul", [d, lr])])])
        for v, d in zip(var.values(), grads)
    ]
    eng = _core.Engine(g, seed=0, backend="cpu")
    for key, v in init.items():
        eng.set_variable(key, v)
    eng.define("step", inputs=[x, c, i], outputs=[loss, *grads], effects=effects)
    tv = {key: torch.tensor(v, dtype=torch.float64, requires_grad=True) for key, v in init.items()}
    for _ in range(2):
        got = eng.run("step", [xv, cv, ids])
        at = torch.tensor(xv, dtype=torch.float64) @ tv["w"] + tv["b"]
        yt = torch.tanh(torch.cat([at, tv["table"][torch.tensor(ids, dtype=torch.long)]], dim=2))
        lt = ((yt @ tv["w2"]) * torch.tensor(cv, dtype=torch.float64)).sum()
        lt.backward()
        np.testing.assert_allclose(got[0], lt.item(), rtol=1e-4, atol=1e-4)
        for key, value in zip(init, got[1:]):
            np.testing.assert_allclose(
                value, tv[key].grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=key
            )
        with torch.no_grad():
            for v in tv.values():
                v -= 0.1 * v.grad
                v.grad = None
    for key, v in tv.items():
        np.testing.assert_allclose(eng.get_variable(key), v.detach().numpy(), rtol=1e-4, atol=1e-4)


CONFIGS = [
    Config("lstm", num_layers=3, input_size=5, hidden_size=17),
    Config("lstm", num_layers=2, bidirectional=True, lengths=True, input_size=4, hidden_size=9),
    Config("rnn_tanh", num_layers=2, initial_state=True, input_size=3, hidden_size=33),
    Config("lstm", num_layers=2, initial_state=True, input_size=6, hidden_size=16, proj_size=7),
]


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id())
def test_stacked_recurrences_read_the_layer_below_in_place(threads, config, batch):
    """Each layer's recurrence projects the h columns of the layer below (a slice of its
    packed output) in place: outputs, states and every gradient against torch."""
    check_parity(config, batch=batch, steps=5)


@pytest.mark.parametrize("bad", [-1, 4, 2**31 - 1])
def test_out_of_range_ids_of_an_in_place_scatter_add_are_refused_before_its_effect(threads, bad):
    """The scatter_add reading a slice in place feeds an assign: a bad index raises naming it
    and its position with the variable untouched; the engine then runs as NumPy sums."""
    g, x, i, v, _ = _source_and_ids((2, 3, 20), 4, seed=10)
    acc = g.variable("acc", (4, 7))
    table = g.op("scatter_add", [_slice(g, g.op("tanh", [x]), 3, 10), i], {"rows": 4})
    effect = g.op("assign", [acc, g.op("add", [acc, table])])
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.set_variable("acc", np.zeros((4, 7), np.float32))
    eng.define("f", inputs=[x, i], outputs=[table], effects=[effect])
    _in_place(eng.describe("f", 2), "scatter_add")
    ids = np.array([[0, 1, 2], [3, bad, 0]], np.int32)
    with pytest.raises(ValueError, match=rf"\[scatter_add\] index {bad} at position \(1, 1\)"):
        eng.run("f", [v, ids])
    np.testing.assert_array_equal(eng.get_variable("acc"), np.zeros((4, 7), np.float32))
    ids[1, 1] = 3
    (got,) = eng.run("f", [v, ids])
    want = np.zeros((4, 7))
    np.add.at(want, ids.ravel(), np.tanh(v.astype(np.float64))[..., 3:10].reshape(-1, 7))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eng.get_variable("acc"), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "columns", "transpose_b"),
    [((3, 5, 40), (3, 20), False), ((2, 64, 300), (0, 257), True), ((1, 1, 33), (16, 33), False)],
)
def test_product_by_a_variable_weight(threads, shape, columns, transpose_b):
    """A computed slice times a variable 2-D weight (either layout; one row at batch 1) and
    its column sum, whichever kernel the weight's product takes."""
    g, x, v = _source(shape, seed=columns[1])
    width = columns[1] - columns[0]
    wv = np.random.default_rng(11).standard_normal((7, width) if transpose_b else (width, 7))
    w = g.variable("w", wv.shape)
    part = _slice(g, g.op("tanh", [x]), *columns)
    outs = [g.op("matmul", [part, w], {"transpose_b": transpose_b})]
    outs.append(g.op("sum", [part], {"axes": [0, 1]}))
    eng = _core.Engine(g, seed=0, backend="cpu")
    eng.set_variable("w", wv.astype(np.float32))
    eng.define("f", inputs=[x], outputs=outs)
    product, column_sum = eng.run("f", [v])
    _in_place(eng.describe("f", shape[0]), "sum")
    s = np.tanh(v.astype(np.float64))[..., columns[0] : columns[1]]
    want = s @ (wv.astype(np.float32).T if transpose_b else wv.astype(np.float32))
    np.testing.assert_allclose(product, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(column_sum, s.sum(axis=(0, 1)), rtol=1e-5, atol=2e-5)
