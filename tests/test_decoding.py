"""Generation with the KV cache equals full recomputation: the logits of every decode step
match the model's forward pass over the whole context (within 1e-4), across the point where
the context fills and the window is cropped; the greedy continuation equals the nanoGPT-style
torch model's from the same weights; decoding compiles no plan per cache length; bad input
is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from _torch_gpt import TorchGPT  # benchmarks/: nanoGPT's model, the peer of workload F
from gometal.models import generate, gpt_weights_from_nanogpt
from gometal.models.decoding import (
    MAX_DECODERS_PER_MODEL,
    KVCacheDecoder,
    decoder_for,
    gpt_layout,
)

VOCAB, BLOCK, LAYERS, HEADS, EMBD = 13, 8, 2, 2, 16


def _model(bias: bool = True, seed: int = 0) -> gm.Model:
    """A 2-layer GPT whose weights are drawn large enough that the logits differ clearly
    (the GPT's own initialization leaves them near zero)."""
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD, bias=bias, seed=seed)
    rng = np.random.default_rng(seed + 100)
    weights = {}
    for name, shape in model.weight_shapes.items():
        scale = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else 0.0
        weights[name] = (scale + 0.3 * rng.standard_normal(shape)).astype(np.float32)
    model.set_weights(weights)
    return model


def _full_logits(model: gm.Model, ids: np.ndarray) -> np.ndarray:
    """The last position's logits of the (cropped) context, by the whole forward pass."""
    context = ids[:, -BLOCK:]
    window = np.zeros((ids.shape[0], BLOCK), np.int32)
    window[:, : context.shape[1]] = context
    return np.asarray(model.predict(window))[:, context.shape[1] - 1]


def _assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_decode_step_equals_the_full_recomputation(bias, batch):
    model = _model(bias)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, (batch, 3)).astype(np.int32)
    decoder = KVCacheDecoder(model, batch)
    logits = decoder.prefill(ids)
    # 3 prompt tokens, then decode steps up to a full context, then cropped prefills.
    for step in range(BLOCK + 4):
        _assert_close(logits, _full_logits(model, ids), f"step {step}, {ids.shape[1]} tokens")
        ids = np.concatenate([ids, logits.argmax(-1).astype(np.int32)[:, None]], axis=1)
        if decoder.length < BLOCK:
            logits = decoder.decode(ids[:, -1])
        else:
            logits = decoder.prefill(ids[:, -BLOCK:])
    cached = generate(model, ids[:, :3], BLOCK + 4, greedy=True)
    np.testing.assert_array_equal(
        cached, generate(model, ids[:, :3], BLOCK + 4, greedy=True, kv_cache=False)
    )
    np.testing.assert_array_equal(cached, ids[:, : cached.shape[1]])


def test_sampling_with_the_cache_draws_the_same_tokens_as_recomputation():
    model = _model()
    prompt = np.array([4, 1, 7], np.int32)
    cached = generate(model, prompt, 12, temperature=0.9, top_k=6, seed=3)
    np.testing.assert_array_equal(
        cached, generate(model, prompt, 12, temperature=0.9, top_k=6, seed=3, kv_cache=False)
    )


def test_decoding_compiles_no_plan_per_cache_length_and_allocates_nothing():
    decoder = KVCacheDecoder(_model())
    decoder.prefill(np.array([[1, 2]], np.int32))
    decoder.decode(np.array([3], np.int32))
    before = decoder.stats()
    assert before["plans"] == 2  # one prefill length, one decode plan
    for token in range(BLOCK - 3):
        decoder.decode(np.array([token], np.int32))
    assert decoder.length == BLOCK
    after = decoder.stats()
    assert after["plans"] == before["plans"]
    assert after["allocations"] == before["allocations"]  # the steps reuse the plan's memory


def test_generation_sees_the_weights_after_more_training():
    model = _model()
    prompt = np.array([[2, 5, 1]], np.int32)
    before = generate(model, prompt, 6, greedy=True)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=0.05), batch_size=4
    )
    windows = np.random.default_rng(2).integers(0, VOCAB, (4, BLOCK + 1)).astype(np.int32)
    for _ in range(5):
        trainer.train_batch(windows[:, :-1], windows[:, 1:])
    after = generate(model, prompt, 6, greedy=True)
    np.testing.assert_array_equal(after, generate(model, prompt, 6, greedy=True, kv_cache=False))
    decoder = decoder_for(model, 1)
    assert decoder is decoder_for(model, 1)  # built once per batch size
    _assert_close(decoder.prefill(prompt), _full_logits(model, prompt), "after training")
    assert not np.array_equal(before, after)


def _torch_greedy(net: TorchGPT, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
    """nanoGPT's generate, greedy: the last BLOCK tokens recomputed for every new token."""
    idx = torch.tensor(prompt, dtype=torch.long)[None]
    blocks = net.transformer
    with torch.no_grad():
        for _ in range(new_tokens):
            context = idx[:, -BLOCK:]
            x = blocks.wte(context) + blocks.wpe(torch.arange(context.size(1)))
            for block in blocks.h:
                x = block(x)
            logits = net.lm_head(blocks.ln_f(x))[:, -1]
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx[0].numpy()


def test_greedy_continuation_equals_the_nanogpt_torch_model():
    torch.manual_seed(0)
    net = TorchGPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.4)
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD)
    model.set_weights(gpt_weights_from_nanogpt(net.state_dict(), LAYERS))
    prompt = np.array([3, 9, 0, 11, 5], np.int32)
    want = _torch_greedy(net, prompt, 14)  # past the full context of 8
    np.testing.assert_array_equal(generate(model, prompt, 14, greedy=True), want)


def test_bad_generation_input_is_named():
    model = _model()
    with pytest.raises(ValueError, match=r"prompt has 9 tokens, more than .* block_size 8"):
        generate(model, np.arange(9) % VOCAB, 1)
    with pytest.raises(ValueError, match=r"\[gather\] index 13"):
        generate(model, np.array([[1, 13]]), 2)
    with pytest.raises(TypeError, match="prompt must hold integer token ids"):
        generate(model, np.array([1.0, 2.0]), 2)
    with pytest.raises(ValueError, match=r"prompt must be \(T,\) or \(N, T\)"):
        generate(model, np.zeros((1, 2, 2), np.int32), 2)


def test_bad_decoder_input_is_named_and_leaves_the_cache_usable():
    model = _model()
    decoder = KVCacheDecoder(model, 2)
    with pytest.raises(ValueError, match=r"prefill ids must be \(batch_size, T\) = \(2, T\)"):
        decoder.prefill(np.zeros((1, 3), np.int32))
    with pytest.raises(
        ValueError, match="prefill of 9 tokens does not fit the context of block_size 8"
    ):
        decoder.prefill(np.zeros((2, 9), np.int32))
    with pytest.raises(TypeError, match="must hold integer token ids, got dtype float32"):
        decoder.prefill(np.zeros((2, 3), np.float32))
    ids = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    decoder.prefill(ids)
    with pytest.raises(ValueError, match=r"decode tokens must be \(2,\), got shape \(3,\)"):
        decoder.decode(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[gather\] index 20"):
        decoder.decode(np.array([1, 20]))
    assert decoder.length == 3  # the failed step wrote nothing
    ids = np.concatenate([ids, [[7], [8]]], axis=1).astype(np.int32)
    _assert_close(decoder.decode(ids[:, -1]), _full_logits(model, ids), "after a refused step")
    for token in range(BLOCK - 4):
        decoder.decode(np.array([token, token]))
    with pytest.raises(ValueError, match="cache is full: 8 positions of block_size 8"):
        decoder.decode(np.array([1, 2]))


def test_a_gpt_built_from_layers_of_other_names_decodes_too():
    ids = gm.Input((BLOCK,), dtype="int32")
    h = gm.layers.Embedding(VOCAB, EMBD, name="tokens")(ids)
    h = gm.layers.PositionalEmbedding(BLOCK, EMBD, name="where")(h)
    h = gm.layers.Dropout(0.1)(h)
    stack = gm.layers.TransformerEncoder(
        1, EMBD, HEADS, 32, activation="relu", norm_first=True, causal=True, final_norm=True
    )
    model = gm.Model(ids, gm.layers.TiedLinear("tokens", VOCAB, EMBD)(stack(h)))
    rng = np.random.default_rng(5)
    model.set_weights(
        {
            k: (0.5 * rng.standard_normal(v)).astype(np.float32)
            for k, v in model.weight_shapes.items()
        }
    )
    assert gpt_layout(model).blocks == stack.name
    prompt = np.array([[3, 1, 4]], np.int32)
    decoder = KVCacheDecoder(model)
    _assert_close(decoder.prefill(prompt), _full_logits(model, prompt), "prefill")
    ids = np.concatenate([prompt, [[1]]], axis=1).astype(np.int32)
    _assert_close(decoder.decode(ids[:, -1]), _full_logits(model, ids), "decode")


def test_only_gpt_shaped_models_get_a_decoder():
    x = gm.Input((8,), dtype="int32")
    h = gm.layers.Embedding(VOCAB, 16)(x)
    other = gm.Model(x, gm.layers.Dense(VOCAB)(h))
    assert gpt_layout(other) is None and decoder_for(other, 1) is None
    with pytest.raises(ValueError, match="KVCacheDecoder needs a GPT-shaped model"):
        KVCacheDecoder(other)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        KVCacheDecoder(_model(), 0)
    layout = gpt_layout(_model())
    assert (layout.n_layer, layout.n_head, layout.n_embd, layout.block_size) == (2, 2, 16, 8)


def test_a_model_keeps_decoders_for_its_most_recent_batch_sizes_only():
    model = _model()
    first = decoder_for(model, 1)
    for batch in range(2, 2 + MAX_DECODERS_PER_MODEL - 1):
        decoder_for(model, batch)
    assert decoder_for(model, 1) is first  # still among the most recent
    for batch in range(10, 10 + MAX_DECODERS_PER_MODEL):
        decoder_for(model, batch)
    assert decoder_for(model, 1) is not first


@pytest.mark.parametrize("prompt_length", [1, BLOCK])
def test_prompts_of_one_token_and_of_a_full_context(prompt_length):
    model = _model()
    prompt = np.arange(prompt_length, dtype=np.int32) % VOCAB
    cached = generate(model, prompt, 5, greedy=True)
    np.testing.assert_array_equal(cached, generate(model, prompt, 5, greedy=True, kv_cache=False))
