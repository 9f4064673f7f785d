"""ONNX export of the transformer layers: an encoder model and a small GPT-like decoder
stack run in onnxruntime at two sequence lengths, key-padding masks, cross attention,
decoder stacks, RMSNorm below and from opset 23, and the opsets the layers refuse.

Reference: onnxruntime running the exported file against ``model.predict`` (itself checked
against torch in test_transformer_layers.py) within 1e-4.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

import gometal as gm
from gometal import layers as L

TOLERANCE = 1e-4
VOCAB, WIDTH, HEADS = 23, 16, 4


def randomize(model: gm.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights({n: 0.4 * rng.standard_normal(s) for n, s in model.weight_shapes.items()})


def export(model: gm.Model, tmp_path, opset: int) -> tuple[onnx.ModelProto, ort.InferenceSession]:
    path = tmp_path / f"model_{opset}.onnx"
    model.export_onnx(path, opset=opset)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return proto, session


def compare(model: gm.Model, session: ort.InferenceSession, feeds: dict[str, np.ndarray]):
    names = [meta.name for meta in session.get_inputs()]
    (got,) = session.run(None, {name: feeds[name] for name in names})
    args = [feeds[name] for name in names]
    expected = model.predict(args if len(args) > 1 else args[0])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    shape = value_info.type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in shape]


def token_ids(batch: int, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype(np.int32)


def encoder_model(length: int, kind: str, norm_first: bool, activation: str) -> gm.Model:
    ids = gm.Input((length,), dtype="int32", name="ids")
    h = L.Embedding(VOCAB, WIDTH, name="tokens")(ids)
    h = L.PositionalEmbedding(12, WIDTH, kind=kind, name="positions")(h)
    encoder = L.TransformerEncoder(
        2,
        WIDTH,
        HEADS,
        dim_feedforward=24,
        dropout=0.1,
        activation=activation,
        norm_first=norm_first,
        final_norm=True,
        name="encoder",
    )
    return gm.Model(ids, L.Dense(3, name="head")(encoder(h)), seed=2)


@pytest.mark.parametrize("opset", [17, 23])
@pytest.mark.parametrize(
    "kind, norm_first, activation",
    [("learned", False, "relu"), ("sinusoidal", True, "gelu")],
)
def test_encoder_model_at_two_sequence_lengths(opset, kind, norm_first, activation, tmp_path):
    # The position table fixes the length a model is built for: one weight set, two lengths.
    short = encoder_model(5, kind, norm_first, activation)
    randomize(short)
    long = encoder_model(11, kind, norm_first, activation)
    long.set_weights(short.get_weights())
    for model, length in ((short, 5), (long, 11)):
        proto, session = export(model, tmp_path, opset)
        assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.INT32
        assert dims(proto.graph.input[0]) == ["batch", length]
        assert "LayerNormalization" in {node.op_type for node in proto.graph.node}
        compare(model, session, {"ids": token_ids(3, length, seed=length)})


def gpt_model(activation: str = "gelu", eps: float | None = None) -> gm.Model:
    ids = gm.Input((None,), dtype="int32", name="ids")
    h = L.Embedding(VOCAB, WIDTH, padding_idx=0, name="wte")(ids)
    block = L.TransformerEncoderLayer(
        WIDTH, HEADS, 32, dropout=0.0, activation=activation, norm_first=True, causal=True
    )
    h = block(h)
    h = L.MultiHeadAttention(WIDTH, 2, causal=True, name="attn")(L.RMSNorm(WIDTH, eps=eps)(h))
    h = L.RMSNorm(WIDTH, eps=eps, elementwise_affine=eps is None, name="ln_f")(h)
    return gm.Model(ids, L.Dense(VOCAB, use_bias=False, name="lm_head")(h), seed=3)


@pytest.mark.parametrize("opset", [17, 20, 23])
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_gpt_like_decoder_at_two_sequence_lengths(opset, eps, tmp_path):
    model = gpt_model(eps=eps)
    randomize(model, seed=opset)
    proto, session = export(model, tmp_path, opset)
    (ids,) = proto.graph.input
    assert ids.type.tensor_type.elem_type == TensorProto.INT32
    assert dims(ids) == ["batch", "seq"]
    assert dims(proto.graph.output[0]) == ["batch", "seq", VOCAB]
    ops = {node.op_type for node in proto.graph.node}
    assert {"Gather", "Trilu", "Softmax"} <= ops
    # RMSNormalization only exists from opset 23; below it the norm is decomposed.
    assert ("RMSNormalization" in ops) == (opset >= 23)
    for length in (4, 9):
        ids = token_ids(2, length, seed=length)
        ids[:, 0] = 0  # the padding row reads as zeros in both
        compare(model, session, {"ids": ids})


def test_causal_attention_hides_later_tokens_in_onnxruntime(tmp_path):
    model = gpt_model(activation="relu")
    randomize(model, seed=5)
    _, session = export(model, tmp_path, 17)
    ids = token_ids(1, 7, seed=1)
    changed = ids.copy()
    changed[0, 4:] = (changed[0, 4:] + 1) % VOCAB
    (before,) = session.run(None, {"ids": ids})
    (after,) = session.run(None, {"ids": changed})
    np.testing.assert_allclose(after[:, :4], before[:, :4], rtol=0, atol=1e-6)
    assert not np.allclose(after[:, 4:], before[:, 4:], atol=1e-3)


@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_mask(causal, tmp_path):
    x_in, mask_in = gm.Input((None, WIDTH), name="x"), gm.Input((None,), name="padding")
    attention = L.MultiHeadAttention(WIDTH, HEADS, causal=causal, key_padding_mask=True)
    model = gm.Model([x_in, mask_in], attention([x_in, mask_in]), seed=4)
    randomize(model, seed=4)
    proto, session = export(model, tmp_path, 17)
    assert [dims(i) for i in proto.graph.input] == [["batch", "seq", WIDTH], ["batch", "seq"]]
    rng = np.random.default_rng(0)
    for length in (3, 8):
        x = rng.standard_normal((3, length, WIDTH)).astype(np.float32)
        padding = np.zeros((3, length), np.float32)
        padding[1, -1:] = 1.0
        padding[2, length // 2 :] = 1.0
        compare(model, session, {"x": x, "padding": padding})


def test_cross_attention_with_other_key_and_value_widths(tmp_path):
    q_in = gm.Input((None, WIDTH), name="query")
    k_in, v_in = gm.Input(("keys", 6), name="key"), gm.Input(("keys", 10), name="value")
    attention = L.MultiHeadAttention(WIDTH, 2, kdim=6, vdim=10, name="cross")
    model = gm.Model([q_in, k_in, v_in], attention([q_in, k_in, v_in]), seed=5)
    randomize(model, seed=6)
    proto, session = export(model, tmp_path, 17)
    assert [dims(i)[1] for i in proto.graph.input] == ["seq", "keys", "keys"]
    rng = np.random.default_rng(1)
    for queries, keys in ((2, 5), (7, 3)):
        feeds = {
            "query": rng.standard_normal((2, queries, WIDTH)).astype(np.float32),
            "key": rng.standard_normal((2, keys, 6)).astype(np.float32),
            "value": rng.standard_normal((2, keys, 10)).astype(np.float32),
        }
        compare(model, session, feeds)


@pytest.mark.parametrize("stack", [False, True])
def test_decoder_layer_and_stack_over_a_memory(stack, tmp_path):
    t_in, m_in = gm.Input((None, WIDTH), name="target"), gm.Input(("memory", WIDTH), name="mem")
    options = {"dim_feedforward": 20, "causal": True, "norm_first": stack, "bias": not stack}
    if stack:
        decoder = L.TransformerDecoder(2, WIDTH, HEADS, final_norm=True, **options)
    else:
        decoder = L.TransformerDecoderLayer(WIDTH, HEADS, activation="gelu", **options)
    model = gm.Model([t_in, m_in], decoder([t_in, m_in]), seed=6)
    randomize(model, seed=7)
    proto, session = export(model, tmp_path, 17)
    assert dims(proto.graph.input[1]) == ["batch", "memory", WIDTH]
    rng = np.random.default_rng(2)
    for targets, memories in ((3, 6), (8, 2)):
        feeds = {
            "target": rng.standard_normal((2, targets, WIDTH)).astype(np.float32),
            "mem": rng.standard_normal((2, memories, WIDTH)).astype(np.float32),
        }
        compare(model, session, feeds)


@pytest.mark.parametrize("opset", [13, 16])
def test_attention_below_opset_17_is_a_clear_error(opset, tmp_path):
    model = gm.Model(x := gm.Input((None, WIDTH)), L.TransformerEncoderLayer(WIDTH, 2)(x))
    pattern = r"layer 'encoder_layer_\d+' of type TransformerEncoderLayer exports from opset 17"
    with pytest.raises(ValueError, match=pattern + rf".*got opset {opset}"):
        model.export_onnx(tmp_path / "m.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_embedding_and_rms_norm_export_at_opset_13(tmp_path):
    ids = gm.Input((None,), dtype="int32", name="ids")
    model = gm.Model(ids, L.RMSNorm(WIDTH)(L.Embedding(VOCAB, WIDTH)(ids)), seed=7)
    randomize(model, seed=8)
    _, session = export(model, tmp_path, 13)
    for length in (1, 6):
        compare(model, session, {"ids": token_ids(4, length, seed=length)})


def every_transformer_layer() -> gm.Model:
    ids = gm.Input((6,), dtype="int32", name="ids")
    h = L.Embedding(VOCAB, 8, padding_idx=3)(ids)
    h = L.PositionalEmbedding(10, 8, kind="sinusoidal")(L.PositionalEmbedding(10, 8)(h))
    h = L.TransformerEncoderLayer(8, 2, dim_feedforward=12, causal=True, activation="gelu")(h)
    memory = L.TransformerEncoder(2, 8, 2, dim_feedforward=12, norm_first=True)(h)
    h = L.TransformerDecoderLayer(8, 4, dim_feedforward=12, bias=False)([h, memory])
    h = L.TransformerDecoder(1, 8, 2, dim_feedforward=10, causal=True, final_norm=True)([h, memory])
    h = L.MultiHeadAttention(8, 2, kdim=4, bias=False)([h, L.Dense(4)(memory), h])
    h = L.RMSNorm(8, eps=1e-4, elementwise_affine=False)(h)
    return gm.Model(ids, L.Dense(3)(h), seed=8)


@pytest.mark.parametrize("opset", [17, 23])
def test_every_transformer_layer_in_one_model(opset, tmp_path):
    model = every_transformer_layer()
    randomize(model, seed=9)
    _, session = export(model, tmp_path, opset)
    compare(model, session, {"ids": token_ids(5, 6, seed=opset)})


@pytest.mark.parametrize("opset", [17, 23])
def test_gpt_with_a_tied_head_shares_one_initializer(opset, tmp_path):
    model = gm.models.GPT(VOCAB, 8, n_layer=2, n_head=2, n_embd=WIDTH, dropout=0.0, seed=1)
    randomize(model, seed=opset)
    proto, session = export(model, tmp_path, opset)
    initializers = [init.name for init in proto.graph.initializer]
    assert initializers.count("wte.weight") == 1
    assert not any(name.startswith("lm_head") for name in initializers)
    compare(model, session, {"tokens": token_ids(3, 8, seed=opset)})


@pytest.mark.parametrize("decoder", [False, True])
def test_encoder_and_decoder_stacks_with_a_key_padding_mask(decoder, tmp_path):
    x_in, padding_in = gm.Input((None, WIDTH), name="x"), gm.Input(("keys",), name="padding")
    if decoder:
        memory_in = gm.Input(("keys", WIDTH), name="memory")
        stack = L.TransformerDecoder(2, WIDTH, HEADS, dim_feedforward=12, key_padding_mask=True)
        inputs = [x_in, memory_in, padding_in]
    else:
        x_in = gm.Input(("keys", WIDTH), name="x")
        stack = L.TransformerEncoder(2, WIDTH, HEADS, dim_feedforward=12, key_padding_mask=True)
        inputs = [x_in, padding_in]
    model = gm.Model(inputs, stack(inputs), seed=7)
    randomize(model, seed=7)
    _, session = export(model, tmp_path, 17)
    rng = np.random.default_rng(1)
    for length in (4, 7):
        keys = length + 1
        feeds = {
            "x": rng.standard_normal((2, keys if not decoder else length, WIDTH)).astype(np.float32)
        }
        if decoder:
            feeds["memory"] = rng.standard_normal((2, keys, WIDTH)).astype(np.float32)
        padding = np.zeros((2, keys), np.float32)
        padding[1, keys // 2 :] = 1.0
        feeds["padding"] = padding
        compare(model, session, feeds)
