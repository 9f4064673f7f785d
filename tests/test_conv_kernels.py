"""The direct convolution's instruction-set paths and its fused epilogues.

Every path the CPU has (GOMETAL_CONV_KERNEL=portable|avx2|avx512) runs the same forward
cases against torch in float64: odd sizes, padding, vertical strides, dilation, groups,
channel counts that are no multiple of a register block; a path the CPU lacks, or an
unknown name, is refused naming the variable. A conv followed by a per-channel bias,
batch-norm scale and shift and a ReLU runs them in its epilogue (one plan step), and a
2x2 max pooling after them too, with the results torch computes, in predictions and in
training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gometal as gm
from conv_checks import torch_conv2d
from cpu_paths import vector_path_available
from gometal import _core

PATHS = ("portable", "avx2", "avx512")


# (N, C, H, W), (O, KH, KW), stride, padding, dilation, groups
CASES = [
    ((2, 3, 64, 64), (16, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # workload C's first layer
    ((1, 16, 16, 16), (64, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # rows of exactly one vector
    ((2, 5, 13, 29), (7, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # 7 outputs: a partial row block
    ((1, 9, 17, 33), (25, 3, 3), (1, 1), (2, 0), (1, 1), 1),  # 25 = 3 blocks of 8 + 1
    ((2, 4, 11, 40), (13, 5, 5), (2, 1), (2, 2), (1, 1), 1),  # vertical stride, 5x5
    ((1, 6, 15, 21), (10, 3, 3), (1, 1), (2, 2), (2, 2), 2),  # dilation and groups
    ((3, 1, 7, 5), (1, 1, 3), (1, 1), (0, 1), (1, 1), 1),  # one channel, a 1x3 window
    ((1, 17, 9, 8), (9, 3, 3), (3, 1), (0, 0), (1, 1), 1),  # no padding, a stride of 3
]


def _conv_graph(x_shape, w_shape, attrs, epilogue=None):
    """An engine computing conv2d (and an optional per-channel epilogue) of input "x"."""
    g = _core.Graph()
    x = g.input("x", (-1, *x_shape[1:]), "float32")
    y = g.op("conv2d", [x, g.variable("w", w_shape)], attrs)
    channels = (w_shape[0], 1, 1)
    for i, op in enumerate(epilogue or ()):
        y = (
            g.op("relu", [y])
            if op == "relu"
            else g.op(op, [y, g.variable(f"epilogue_{i}", channels)])
        )
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


def _inputs(x_shape, w_shape, groups, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((w_shape[0], x_shape[1] // groups, *w_shape[1:])).astype(np.float32)
    return x, w


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}" for c in CASES])
def test_each_path_computes_conv2d_as_torch(path, case, monkeypatch):
    x_shape, w_shape, stride, padding, dilation, groups = case
    attrs = {
        "stride": list(stride),
        "padding": list(padding),
        "dilation": list(dilation),
        "groups": groups,
    }
    x, w = _inputs(x_shape, w_shape, groups, seed=len(x_shape) + w_shape[0])
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    engine = _conv_graph(x.shape, w.shape, attrs)
    engine.set_variable("w", w)
    if not vector_path_available(path):
        with pytest.raises(ValueError, match=f"GOMETAL_CONV_KERNEL={path}: this CPU lacks"):
            engine.run("f", [x])
        return
    got = engine.run("f", [x])[0]
    np.testing.assert_allclose(got, torch_conv2d(x, w, attrs), rtol=1e-5, atol=1e-4)


def test_an_unknown_path_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", "sse9")
    engine = _conv_graph((1, 2, 8, 8), (3, 2, 3, 3), {"padding": [1, 1]})
    with pytest.raises(
        ValueError, match="GOMETAL_CONV_KERNEL must be portable, avx2 or avx512, got 'sse9'"
    ):
        engine.run("f", [np.zeros((1, 2, 8, 8), np.float32)])


# -- epilogues -------------------------------------------------------------------------------


EPILOGUES = [
    (("add", "relu"), "conv2d,add,relu"),
    (("add", "mul", "add", "relu"), "conv2d,add,mul,add,relu"),
    (("mul", "add"), "conv2d,mul,add"),
    (("add",), "conv2d,add"),
    (("relu",), "conv2d,relu"),
]


def _numpy_epilogue(y, ops, operands):
    for op, value in zip(ops, operands):
        y = np.maximum(y, 0.0) if op == "relu" else (y + value if op == "add" else y * value)
    return y


@pytest.mark.parametrize("path", [p for p in PATHS if vector_path_available(p)])
@pytest.mark.parametrize("ops, step", EPILOGUES, ids=[e[1] for e in EPILOGUES])
def test_per_channel_epilogues_run_inside_the_conv(ops, step, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    attrs = {"padding": [1, 1]}
    x, w = _inputs((3, 5, 12, 19), (11, 3, 3), 1, seed=7)
    engine = _conv_graph(x.shape, w.shape, attrs, epilogue=ops)
    engine.set_variable("w", w)
    rng = np.random.default_rng(8)
    operands = []
    for i, op in enumerate(ops):
        value = None if op == "relu" else rng.standard_normal((11, 1, 1)).astype(np.float32)
        if value is not None:
            engine.set_variable(f"epilogue_{i}", value)
        operands.append(value)
    reference = torch_conv2d(x, w, {"stride": 1, "padding": 1, "dilation": 1, "groups": 1})
    expected = _numpy_epilogue(reference, ops, operands)
    assert any(line.startswith(f"{step} (3, 11, 12, 19)") for line in engine.describe("f", 3)), (
        engine.describe("f", 3)
    )
    np.testing.assert_allclose(engine.run("f", [x])[0], expected, rtol=1e-5, atol=1e-4)


def test_a_conv_value_read_elsewhere_keeps_its_own_step():
    # The conv's output is returned too: it must be written, so no epilogue is merged.
    g = _core.Graph()
    x = g.input("x", (-1, 2, 6, 6), "float32")
    conv = g.op("conv2d", [x, g.variable("w", (4, 2, 3, 3))], {"padding": [1, 1]})
    out = g.op("relu", [g.op("add", [conv, g.variable("b", (4, 1, 1))])])
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[out, conv], effects=[])
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal((4, 1, 1)).astype(np.float32)
    engine.set_variable("w", w)
    engine.set_variable("b", b)
    xs = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    plan = engine.describe("f", 2)
    assert not any(line.startswith("conv2d,") for line in plan), plan
    got_out, got_conv = engine.run("f", [xs])
    reference = torch_conv2d(xs, w, {"stride": 1, "padding": 1, "dilation": 1, "groups": 1})
    np.testing.assert_allclose(got_conv, reference, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got_out, np.maximum(reference + b, 0), rtol=1e-5, atol=1e-4)


def _cnn_pair():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12 * 5 * 6, 3),
    )
    model = (
        gm.ModelBuilder((3, 21, 24))
        .conv2d(8, 3, padding=1)
        .relu()
        .max_pool2d(2)
        .conv2d(12, 3, padding=1)
        .batch_norm()
        .relu()
        .max_pool2d(2)
        .flatten()
        .dense(3)
        .build(seed=0)
    )
    state = [
        (k, v.detach().numpy().copy())
        for k, v in net.state_dict().items()
        if "num_batches" not in k
    ]
    names = list(model.weight_shapes)
    assert [v.shape for _, v in state] == [model.weight_shapes[n] for n in names]
    model.set_weights({name: value for name, (_, value) in zip(names, state)})
    return model, net


def test_a_cnn_with_fused_epilogues_predicts_and_trains_as_torch():
    model, net = _cnn_pair()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 21, 24)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1), batch_size=6)
    loss = trainer.train_batch(x, y).loss
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    torch_loss = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    opt.zero_grad()
    torch_loss.backward()
    opt.step()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-4, atol=1e-5)
    plan = " ".join(trainer._engine.describe("predict", 6))
    assert "conv2d,add,relu,max_pool2d (6, 8, 10, 12)" in plan, plan
    assert "conv2d,add,mul,add,relu,max_pool2d (6, 12, 5, 6)" in plan, plan


# -- pooling epilogues -----------------------------------------------------------------------


def _pooled_graph(x_shape, w_shape, attrs, pool_attrs):
    """conv2d -> add a (O, 1, 1) bias -> relu -> max_pool2d, returning the pooled value."""
    g = _core.Graph()
    x = g.input("x", (-1, *x_shape[1:]), "float32")
    y = g.op("conv2d", [x, g.variable("w", w_shape)], attrs)
    y = g.op("relu", [g.op("add", [y, g.variable("b", (w_shape[0], 1, 1))])])
    y = g.op("max_pool2d", [y], pool_attrs)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    return engine


POOLED_CASES = [
    # (N, C, H, W), (O, KH, KW), stride, padding, dilation, groups: odd output sizes drop
    # their last row and column, as the pooling does
    ((3, 3, 17, 21), (9, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 4, 30, 40), (16, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((1, 5, 23, 16), (7, 5, 3), (2, 1), (2, 1), (1, 1), 1),
    ((2, 6, 14, 33), (10, 3, 3), (1, 1), (2, 2), (2, 2), 1),
]


@pytest.mark.parametrize("path", [p for p in PATHS if vector_path_available(p)])
@pytest.mark.parametrize("case", POOLED_CASES, ids=[f"{c[0]}x{c[1]}" for c in POOLED_CASES])
def test_a_2x2_max_pool_runs_inside_the_conv(case, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_CONV_KERNEL", path)
    monkeypatch.setenv("GOMETAL_CONV_WINOGRAD", "never")
    x_shape, w_shape, stride, padding, dilation, groups = case
    attrs = {
        "stride": list(stride),
        "padding": list(padding),
        "dilation": list(dilation),
        "groups": groups,
    }
    x, w = _inputs(x_shape, w_shape, groups, seed=w_shape[0])
    b = np.random.default_rng(1).standard_normal((w_shape[0], 1, 1)).astype(np.float32)
    engine = _pooled_graph(x.shape, w.shape, attrs, {"kernel_size": [2, 2]})
    engine.set_variable("w", w)
    engine.set_variable("b", b)
    plan = engine.describe("f", len(x))
    assert any(line.startswith("conv2d,add,relu,max_pool2d ") for line in plan), plan
    conv = torch.from_numpy(torch_conv2d(x, w, attrs) + b)
    expected = F.max_pool2d(torch.relu(conv), 2).numpy()
    np.testing.assert_allclose(engine.run("f", [x])[0], expected, rtol=1e-5, atol=1e-4)


def test_other_poolings_keep_their_own_step():
    # A 3x3 window with stride 2 is no 2x2 pooling: the conv keeps only its bias and ReLU.
    attrs = {"padding": [1, 1]}
    x, w = _inputs((2, 3, 11, 12), (5, 3, 3), 1, seed=2)
    b = np.random.default_rng(2).standard_normal((5, 1, 1)).astype(np.float32)
    engine = _pooled_graph(x.shape, w.shape, attrs, {"kernel_size": [3, 3], "stride": [2, 2]})
    engine.set_variable("w", w)
    engine.set_variable("b", b)
    plan = " ".join(engine.describe("f", 2))
    assert "conv2d,add,relu (2, 5, 11, 12) ; max_pool2d (2, 5, 5, 5)" in plan, plan
    conv = torch.from_numpy(
        torch_conv2d(x, w, {**attrs, "stride": 1, "dilation": 1, "groups": 1}) + b
    )
    expected = F.max_pool2d(torch.relu(conv), 3, stride=2).numpy()
    np.testing.assert_allclose(engine.run("f", [x])[0], expected, rtol=1e-5, atol=1e-4)
