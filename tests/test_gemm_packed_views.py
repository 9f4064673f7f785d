"""Products by packed weights that read rows of a larger variable, and deep products of
several row blocks with a Dense epilogue.

An attention layer's query, key and value projections multiply by row slices of its combined
``in_proj_weight`` (3E, E) and add row slices of ``in_proj_bias``: in an inference plan those
slices are read in place (their rows lie contiguously in the variable), so the products run on
packed weights with the bias in their epilogue, and no copy of the slice is made. A write to
the variable packs its parts again. Slices that something else reads, or that cut columns,
keep their copy. Every product is checked against NumPy in float64, the GPT against torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from _torch_gpt import TorchGPT  # benchmarks/: the peer of workloads D and D-long
from cpu_paths import vector_path_available
from gometal import _core
from matmul_checks import dense_engine

PATHS = [path for path in ("portable", "avx2", "avx512") if vector_path_available(path)]
EMBED = 40


def _projections_engine(embed: int) -> _core.Engine:
    """q, k, v = x W_i^T + b_i for the three row blocks of ``w`` (3E, E) and ``bias`` (3E,),
    as ``nn.MultiheadAttention`` computes them; "f" returns the three."""
    g = _core.Graph()
    x = g.input("x", (-1, embed), "float32")
    w, bias = g.variable("w", (3 * embed, embed)), g.variable("bias", (3 * embed,))
    outputs = []
    for part in range(3):
        start, end = part * embed, (part + 1) * embed
        rows = g.op("slice", [w], {"axis": 0, "start": start, "end": end})
        y = g.op("matmul", [x, rows], {"transpose_b": True})
        outputs.append(
            g.op("add", [y, g.op("slice", [bias], {"axis": 0, "start": start, "end": end})], {})
        )
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=outputs, effects=[])
    return engine


def _projections(x, w, bias, embed):
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    return [
        x64 @ w64[p * embed : (p + 1) * embed].T + bias[p * embed : (p + 1) * embed]
        for p in range(3)
    ]


def _assert_all_close(got, expected, depth):
    for g_value, e_value in zip(got, expected, strict=True):
        np.testing.assert_allclose(g_value, e_value, rtol=1e-5, atol=1e-5 * np.sqrt(depth))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows", [2, 7, 64, 1024])
def test_query_key_value_products_read_their_rows_of_the_weight_in_place(rows, path, monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    engine = _projections_engine(EMBED)
    plan = engine.describe("f", rows)
    assert not any(line.startswith("slice") for line in plan), plan
    assert sum(line.startswith(f"matmul,add ({rows}, {EMBED})") for line in plan) == 3, plan
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, EMBED)).astype(np.float32)
    w = rng.standard_normal((3 * EMBED, EMBED)).astype(np.float32)
    bias = rng.standard_normal(3 * EMBED).astype(np.float32)
    for scale in (1.0, -0.5):  # a write to the whole variable packs each part again
        engine.set_variable("w", np.float32(scale) * w)
        engine.set_variable("bias", np.float32(scale) * bias)
        for _ in range(3):
            expected = _projections(x, scale * w, scale * bias, EMBED)
            _assert_all_close(engine.run("f", [x]), expected, EMBED)


def test_without_packing_the_slices_keep_their_copies(monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", "off")
    engine = _projections_engine(EMBED)
    plan = engine.describe("f", 8)
    assert sum(line.startswith("slice") for line in plan) == 6, plan
    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, EMBED)).astype(np.float32)
    w = rng.standard_normal((3 * EMBED, EMBED)).astype(np.float32)
    bias = rng.standard_normal(3 * EMBED).astype(np.float32)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    _assert_all_close(engine.run("f", [x]), _projections(x, w, bias, EMBED), EMBED)


def _slice_engine(build):
    """An engine whose "f" returns what ``build(graph, x, w)`` gives, x (-1, 24), w (48, 24)."""
    g = _core.Graph()
    x = g.input("x", (-1, 24), "float32")
    outputs = build(g, x, g.variable("w", (48, 24)))
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=outputs, effects=[])
    return engine


def _slice(g, value, axis, start, end):
    return g.op("slice", [value], {"axis": axis, "start": start, "end": end})


@pytest.mark.parametrize("path", PATHS)
def test_a_slice_read_elsewhere_or_cut_across_columns_keeps_its_copy(path, monkeypatch):
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 24)).astype(np.float32)
    w = rng.standard_normal((48, 24)).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)

    def returned_too(g, x, w):  # the slice is an output as well as the product's B
        rows = _slice(g, w, 0, 16, 40)
        return [g.op("matmul", [x, rows], {"transpose_b": True}), rows]

    def columns(g, x, w):  # columns 0..24 of (48, 24)^T: not contiguous rows
        return [
            g.op("matmul", [x, _slice(g, g.op("transpose", [w], {"perm": [1, 0]}), 1, 8, 32)], {})
        ]

    def both_operands(g, x, w):  # the slice as A and as B
        rows = _slice(g, w, 0, 0, 24)
        return [g.op("matmul", [rows, rows], {"transpose_b": True})]

    cases = [
        (returned_too, [x64 @ w64[16:40].T, w64[16:40]]),
        (columns, [x64 @ w64.T[:, 8:32]]),
        (both_operands, [w64[:24] @ w64[:24].T]),
    ]
    for build, expected in cases:
        engine = _slice_engine(build)
        engine.set_variable("w", w)
        assert any(line.startswith("slice") for line in engine.describe("f", 9)), build.__name__
        for _ in range(2):
            _assert_all_close(engine.run("f", [x]), expected, 24)


# Several blocks of rows (each path's tile is 4 or 6 rows high), deep panels, and a last panel
# of few columns.
DEEP_SHAPES = [(7, 70, 127), (13, 65, 129), (12, 30, 342), (40, 100, 513), (33, 17, 1100)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias_relu"])
@pytest.mark.parametrize("shape", DEEP_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in DEEP_SHAPES])
def test_deep_products_of_several_row_blocks_add_the_bias_once(shape, relu, path, monkeypatch):
    m, n, k = shape
    monkeypatch.setenv("GOMETAL_GEMM_PACKED_KERNEL", path)
    engine = dense_engine(k, n, relu)
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    # A bias large against the sums: added more than once, or to a partial sum, would show.
    bias = 10.0 * rng.standard_normal(n).astype(np.float32)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    expected = a.astype(np.float64) @ w.astype(np.float64).T + bias
    if relu:
        expected = np.maximum(expected, 0.0)
    for threads in (1, 2):
        previous = gm.get_num_threads()
        gm.set_num_threads(threads)
        try:
            for _ in range(2):
                got = engine.run("f", [a])[0]
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))
        finally:
            gm.set_num_threads(previous)


VOCAB, BLOCK, LAYERS, HEADS, EMBD = 29, 16, 2, 2, 32


def _gpt_pair(seed):
    torch.manual_seed(seed)
    net = TorchGPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD)
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD, seed=seed)
    model.set_weights(gm.models.gpt_weights_from_nanogpt(net.state_dict(), LAYERS))
    return net, model


def _tokens(batch, seed):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, BLOCK)).astype(np.int32)


def _predict_as_torch(model, net, tokens):
    with torch.no_grad():
        expected = net(torch.from_numpy(tokens.astype(np.int64))).numpy()
    for _ in range(2):
        np.testing.assert_allclose(model.predict(tokens), expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_gpt_predict_follows_set_weights_training_and_loading(batch, tmp_path):
    net, model = _gpt_pair(seed=0)
    tokens = _tokens(batch, seed=batch)
    _predict_as_torch(model, net, tokens)

    other_net, other = _gpt_pair(seed=1)
    model.set_weights(other.get_weights())
    _predict_as_torch(model, other_net, tokens)

    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.5))
    reference = torch.optim.SGD(other_net.parameters(), lr=0.5)
    for step in range(2):
        x, y = _tokens(4, seed=10 + step), _tokens(4, seed=20 + step)
        trainer.train_batch(x, y)
        reference.zero_grad()
        other_net(
            torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
        ).backward()
        reference.step()
        _predict_as_torch(model, other_net, tokens)

    _, saved = _gpt_pair(seed=0)
    saved.save(tmp_path / "gpt.safetensors")
    model.load_weights(tmp_path / "gpt.safetensors")
    _predict_as_torch(model, net, tokens)
