"""Transformer layers against torch: same weights (a torch state_dict maps one to one)
give the same outputs and gradients within 1e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal import layers as L

torch.manual_seed(0)
N, T, E, H = 3, 6, 16, 4


def _load(model: gm.Model, layer_name: str, module: nn.Module) -> None:
    state = {f"{layer_name}.{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}
    assert set(state) == set(model.weight_shapes), (sorted(state), sorted(model.weight_shapes))
    model.set_weights(state)


def _compare(model, module, gm_inputs, torch_forward, layer_name, rtol=1e-5, atol=1e-6):
    """Outputs, then gradients of an MSE against a fixed target, gometal vs torch."""
    _load(model, layer_name, module)
    expected = torch_forward(module)
    got = model.predict(gm_inputs if len(gm_inputs) > 1 else gm_inputs[0])
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=rtol, atol=atol)
    target = np.random.default_rng(7).standard_normal(got.shape).astype(np.float32)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1))
    grads = trainer.compute_gradients(gm_inputs if len(gm_inputs) > 1 else gm_inputs[0], target)
    module.zero_grad()
    nn.functional.mse_loss(torch_forward(module), torch.from_numpy(target)).backward()
    for key, param in module.named_parameters():
        np.testing.assert_allclose(
            grads[f"{layer_name}.{key}"], param.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=key
        )


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_embedding_with_padding_idx_matches_torch():
    module = nn.Embedding(20, E, padding_idx=3)
    ids_in = gm.Input((None,), dtype="int32")
    out = L.Embedding(20, E, padding_idx=3)(ids_in)
    hidden = L.Dense(E)(out)  # a weight downstream, so the step has a loss to differentiate
    model = gm.Model(ids_in, hidden)
    dense = nn.Linear(E, E)
    ids = np.random.default_rng(1).integers(0, 20, (N, T)).astype(np.int32)
    ids[0, :2] = 3
    state = {
        "embedding_0.weight": module.weight.detach().numpy().copy(),
        "dense_0.weight": dense.weight.detach().numpy().copy(),
        "dense_0.bias": dense.bias.detach().numpy().copy(),
    }
    model.set_weights(state)
    expected = dense(module(torch.from_numpy(ids.astype(np.int64))))
    np.testing.assert_allclose(model.predict(ids), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    target = _x((N, T, E), 2)
    grads = gm.Trainer(model, loss="mse").compute_gradients(ids, target)
    nn.functional.mse_loss(expected, torch.from_numpy(target)).backward()
    np.testing.assert_allclose(
        grads["embedding_0.weight"], module.weight.grad.numpy(), rtol=1e-4, atol=1e-7
    )
    assert not grads["embedding_0.weight"][3].any()
    with pytest.raises(ValueError, match="gather"):
        model.predict(np.full((1, 2), 20, np.int32))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_self_attention_matches_torch(causal, padding):
    module = nn.MultiheadAttention(E, H, batch_first=True)
    x_in = gm.Input((None, E))
    inputs = [x_in]
    mask_np = None
    if padding:
        mask_in = gm.Input((None,))
        inputs.append(mask_in)
        mask_np = np.zeros((N, T), np.float32)
        mask_np[1, -2:] = 1.0
    layer = L.MultiHeadAttention(E, H, causal=causal, key_padding_mask=padding)
    model = gm.Model(inputs, layer(inputs if padding else x_in))
    x = _x((N, T, E))
    causal_mask = torch.triu(torch.full((T, T), float("-inf")), 1) if causal else None

    def forward(m):
        kpm = None if mask_np is None else torch.from_numpy(mask_np.astype(bool))
        return m(
            *(torch.from_numpy(x),) * 3,
            attn_mask=causal_mask,
            key_padding_mask=kpm,
            need_weights=False,
        )[0]

    _compare(model, module, [x] + ([mask_np] if padding else []), forward, "multi_head_attention_0")


def test_cross_attention_with_other_key_and_value_widths_matches_torch():
    module = nn.MultiheadAttention(E, H, batch_first=True, kdim=8, vdim=12)
    # Keys have a length of their own: a second run-time size, named.
    q_in, k_in, v_in = gm.Input((None, E)), gm.Input(("keys", 8)), gm.Input(("keys", 12))
    model = gm.Model(
        [q_in, k_in, v_in], L.MultiHeadAttention(E, H, kdim=8, vdim=12)([q_in, k_in, v_in])
    )
    q, k, v = _x((N, T, E), 1), _x((N, 4, 8), 2), _x((N, 4, 12), 3)
    _compare(
        model,
        module,
        [q, k, v],
        lambda m: m(
            torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), need_weights=False
        )[0],
        "multi_head_attention_0",
    )


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    module = nn.TransformerEncoderLayer(
        E,
        H,
        dim_feedforward=24,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    )
    x_in = gm.Input((None, E))
    layer = L.TransformerEncoderLayer(
        E, H, dim_feedforward=24, dropout=0.0, activation=activation, norm_first=norm_first
    )
    model = gm.Model(x_in, layer(x_in))
    x = _x((N, T, E))
    _compare(model, module, [x], lambda m: m(torch.from_numpy(x)), "encoder_layer_0")


@pytest.mark.parametrize("norm_first", [False, True])
def test_causal_decoder_layer_matches_torch(norm_first):
    module = nn.TransformerDecoderLayer(
        E, H, dim_feedforward=24, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    t_in, m_in = gm.Input((None, E)), gm.Input(("memory", E))
    layer = L.TransformerDecoderLayer(
        E, H, dim_feedforward=24, dropout=0.0, norm_first=norm_first, causal=True
    )
    model = gm.Model([t_in, m_in], layer([t_in, m_in]))
    tgt, memory = _x((N, T, E), 1), _x((N, 5, E), 2)
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    _compare(
        model,
        module,
        [tgt, memory],
        lambda m: m(
            torch.from_numpy(tgt), torch.from_numpy(memory), tgt_mask=mask, tgt_is_causal=True
        ),
        "decoder_layer_0",
    )


def test_encoder_stack_with_a_final_norm_matches_torch():
    block = nn.TransformerEncoderLayer(E, H, dim_feedforward=24, dropout=0.0, batch_first=True)
    module = nn.TransformerEncoder(
        block, num_layers=2, norm=nn.LayerNorm(E), enable_nested_tensor=False
    )
    x_in = gm.Input((None, E))
    layer = L.TransformerEncoder(2, E, H, dim_feedforward=24, dropout=0.0, final_norm=True)
    model = gm.Model(x_in, layer(x_in))
    x = _x((N, T, E))
    _compare(model, module, [x], lambda m: m(torch.from_numpy(x)), "encoder_0")


def test_rms_norm_matches_torch():
    module = nn.RMSNorm(E)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
    x_in = gm.Input((None, E))
    model = gm.Model(x_in, L.RMSNorm(E)(x_in))
    x = _x((N, T, E))
    _compare(model, module, [x], lambda m: m(torch.from_numpy(x)), "rms_norm_0")


def test_transformer_layers_save_load_and_name_their_errors(tmp_path):
    x_in = gm.Input((None, E))
    model = gm.Model(x_in, L.TransformerEncoder(2, E, H, dim_feedforward=24, final_norm=True)(x_in))
    model.save(tmp_path / "m.safetensors")
    loaded = gm.load_model(tmp_path / "m.safetensors")
    x = _x((2, 5, E))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with pytest.raises(ValueError, match="embed_dim 16 must be divisible by num_heads 3"):
        L.MultiHeadAttention(E, 3)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, T, 16\)"):
        L.TransformerEncoderLayer(E, H)(gm.Input((None, 8)))
    with pytest.raises(ValueError, match="activation must be one of"):
        L.TransformerEncoderLayer(E, H, activation="tanh")


def test_a_padded_batch_with_a_padding_mask_gives_the_loss_of_its_sequences_one_by_one():
    """Variable lengths: padded keys are masked and padded targets ignored, so the batch's
    token-mean loss equals the token-weighted mean of each sequence's loss run alone."""
    vocab, lengths, width = 13, (3, 6, 4), 6
    ids_in, mask_in = gm.Input((None,), dtype="int32"), gm.Input((None,))
    h = L.Embedding(vocab, E)(ids_in)
    h = L.TransformerEncoder(2, E, H, dim_feedforward=24, dropout=0.0, key_padding_mask=True)(
        [h, mask_in]
    )
    model = gm.Model([ids_in, mask_in], L.Dense(vocab)(h), seed=2)
    trainer = gm.Trainer(model, loss=gm.losses.CrossEntropy(ignore_index=-100))
    rng = np.random.default_rng(3)
    ids = np.zeros((len(lengths), width), np.int32)
    labels = np.full((len(lengths), width), -100, np.int32)
    mask = np.ones((len(lengths), width), np.float32)
    alone = []
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, vocab, length)
        labels[row, :length] = rng.integers(0, vocab, length)
        mask[row, :length] = 0.0
        single = trainer.evaluate_batch(
            [ids[row : row + 1, :length], mask[row : row + 1, :length]],
            labels[row : row + 1, :length],
        )
        alone.append(single.loss * length)
    padded = trainer.evaluate_batch([ids, mask], labels)
    assert padded.loss == pytest.approx(sum(alone) / sum(lengths), rel=1e-5)
    with pytest.raises(ValueError, match=r"the key-padding mask must be \(N, Tk\)"):
        L.TransformerEncoderLayer(E, H, key_padding_mask=True)(
            [gm.Input((None, E)), gm.Input((3,))]
        )
