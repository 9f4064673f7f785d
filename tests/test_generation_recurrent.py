"""Generation from recurrent language models (Embedding, SimpleRNN/LSTM/GRU, Dense) with the
layers' states kept in the engine: greedy decoding gives the tokens of a torch model holding
the same weights, every decode step's logits are torch's, sampling with a seed draws the
tokens of the full-prefix recomputation (whose logits are torch's too), a token costs one
engine call of one plan, and bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal.models import generate
from gometal.models.decoding import decoder_for
from gometal.models.recurrent_decoding import RecurrentDecoder, is_recurrent_language_model

VOCAB, EMBED, HIDDEN = 11, 5, 7
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


class TorchCharLM(nn.Module):
    """The torch twin: embedding, a recurrent stack, a linear head over the vocabulary."""

    def __init__(self, cell: str, num_layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        common = {"num_layers": num_layers, "batch_first": True}
        if cell == "lstm":
            self.rnn = nn.LSTM(EMBED, HIDDEN, **common)
        elif cell == "gru":
            self.rnn = nn.GRU(EMBED, HIDDEN, **common)
        else:
            self.rnn = nn.RNN(EMBED, HIDDEN, nonlinearity=cell[4:], **common)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens: torch.Tensor, state=None):
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state


def paired_models(cell: str, num_layers: int, block: int | None = None, seed: int = 0):
    """A float64 torch LM with weights drawn wide enough that the logits differ clearly, and
    the gometal model holding the same weights (input length ``block``, None: any)."""
    torch.manual_seed(seed)
    module = TorchCharLM(cell, num_layers).double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.6)
    tokens = gm.Input((block,), dtype="int32")
    embed = gm.layers.Embedding(VOCAB, EMBED)
    if cell == "lstm":
        rnn = gm.layers.LSTM(EMBED, HIDDEN, num_layers=num_layers)
    elif cell == "gru":
        rnn = gm.layers.GRU(EMBED, HIDDEN, num_layers=num_layers)
    else:
        rnn = gm.layers.SimpleRNN(EMBED, HIDDEN, num_layers=num_layers, nonlinearity=cell[4:])
    head = gm.layers.Dense(VOCAB)
    model = gm.Model(tokens, head(rnn(embed(tokens))), seed=0)
    for layer, part in ((embed, module.embed), (rnn, module.rnn), (head, module.head)):
        layer.set_weights({k: v.numpy().astype(np.float32) for k, v in part.state_dict().items()})
    return module, model


def _assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def _torch_greedy(module: TorchCharLM, prompt: np.ndarray, new_tokens: int):
    """torch's own stateful loop: the prompt once, then each argmax fed back with the state.

    Returns:
        ``(tokens, logits)``: the prompts with their continuations, and the logits each new
        token was chosen from, ``(new_tokens, N, vocab)``.
    """
    ids = torch.tensor(prompt, dtype=torch.long)
    steps = []
    with torch.no_grad():
        logits, state = module(ids)
        for _ in range(new_tokens):
            steps.append(logits[:, -1].numpy())
            chosen = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, chosen], dim=1)
            logits, state = module(chosen, state)
    return ids.numpy(), np.stack(steps)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_greedy_decoding_gives_the_torch_models_tokens_and_logits(cell, num_layers):
    module, model = paired_models(cell, num_layers)
    prompt = np.array([[3, 9, 0, 4], [1, 1, 7, 2], [10, 5, 6, 8]], np.int32)
    want_tokens, want_logits = _torch_greedy(module, prompt, 12)
    np.testing.assert_array_equal(generate(model, prompt, 12, greedy=True), want_tokens)
    decoder = RecurrentDecoder(model, batch_size=3)
    _assert_close(decoder.prefill(prompt), want_logits[0], "prefill")
    for step in range(1, 12):
        got = decoder.decode(want_tokens[:, 4 + step - 1])
        _assert_close(got, want_logits[step], f"decode step {step}")
    # A single 1-D prompt continues as the first row of the batch did.
    np.testing.assert_array_equal(model.generate(prompt[0], 12, greedy=True), want_tokens[0])


@pytest.mark.parametrize(
    "options",
    [{"temperature": 1.3}, {"top_k": 4, "temperature": 0.8}, {"top_p": 0.7}],
    ids=["temperature", "top-k", "top-p"],
)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sampling_draws_the_tokens_of_the_recomputation_whose_logits_are_torchs(cell, options):
    module, model = paired_models(cell, 2, seed=1)
    prompt = np.array([[2, 4, 6], [5, 0, 9]], np.int32)
    stateful = generate(model, prompt, 15, seed=11, **options)
    recomputed = generate(model, prompt, 15, seed=11, kv_cache=False, **options)
    np.testing.assert_array_equal(stateful, recomputed)
    assert not np.array_equal(stateful, generate(model, prompt, 15, seed=12, **options))
    # The recomputation's logits over every prefix of the sampled text are torch's.
    with torch.no_grad():
        want = module(torch.tensor(stateful[:, :-1], dtype=torch.long))[0].numpy()
    for length in range(3, stateful.shape[1]):
        got = np.asarray(model.predict(stateful[:, :length]))[:, -1]
        _assert_close(got, want[:, length - 1], f"prefix of {length} tokens")


def test_each_token_is_one_engine_call_of_one_plan_without_allocations():
    _, model = paired_models("lstm", 2)
    decoder = RecurrentDecoder(model, batch_size=2)
    decoder.prefill(np.array([[1, 2, 3], [4, 5, 6]], np.int32))
    decoder.decode(np.array([7, 8], np.int32))
    before = decoder.stats()
    for token in range(6):
        decoder.decode(np.array([token, token + 1], np.int32))
    after = decoder.stats()
    assert after["steps"] - before["steps"] == 6
    assert after["plans"] == before["plans"] == 2
    assert after["allocations"] == before["allocations"]
    assert decoder.length == 3 + 7


def test_a_model_of_fixed_length_crops_its_context_as_the_recomputation_does():
    """Past ``block_size`` tokens, the window is the last block_size tokens, recomputed."""
    module, model = paired_models("gru", 1, block=6)
    prompt = np.array([4, 1, 8], np.int32)
    tokens = generate(model, prompt, 10, greedy=True)
    np.testing.assert_array_equal(tokens, generate(model, prompt, 10, greedy=True, kv_cache=False))
    with torch.no_grad():
        for t in range(3, len(tokens)):
            window = torch.tensor(tokens[max(0, t - 6) : t], dtype=torch.long)[None]
            assert tokens[t] == int(module(window)[0][0, -1].argmax())
    with pytest.raises(ValueError, match="prompt has 7 tokens, more than .* block_size 6"):
        generate(model, np.arange(7), 1)


def test_generation_follows_the_weights_set_after_the_decoder_was_built():
    module, model = paired_models("lstm", 1)
    prompt = np.array([[2, 3]], np.int32)
    model.generate(prompt, 3, greedy=True)  # builds and keeps the decoder
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(-1.5)
    for layer, part in zip(model.layers, (module.embed, module.rnn, module.head)):
        layer.set_weights({k: v.numpy().astype(np.float32) for k, v in part.state_dict().items()})
    want, _ = _torch_greedy(module, prompt, 8)
    np.testing.assert_array_equal(model.generate(prompt, 8, greedy=True), want)


def test_bad_generation_input_is_named():
    _, model = paired_models("lstm", 2)
    with pytest.raises(ValueError, match=r"\[gather\] index 11"):
        generate(model, np.array([[1, 11]]), 2)
    with pytest.raises(ValueError, match=r"\[gather\] index -1"):
        generate(model, np.array([3, -1]), 2, kv_cache=False)
    with pytest.raises(ValueError, match=r"prompt must be \(T,\) or \(N, T\) .* got \(1, 0\)"):
        generate(model, np.array([], np.int32), 2)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0, got -1"):
        model.generate(np.array([1, 2]), -1)
    with pytest.raises(TypeError, match="prompt must hold integer token ids"):
        generate(model, np.array([1.0, 2.0]), 2)


def test_bad_decoder_input_is_named_and_leaves_the_states_as_they_were():
    _, model = paired_models("gru", 2)
    decoder = RecurrentDecoder(model, 2)
    with pytest.raises(ValueError, match="decode needs a prefill first"):
        decoder.decode(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"prefill ids must be \(batch_size, T\) = \(2, T\)"):
        decoder.prefill(np.zeros((1, 3), np.int32))
    with pytest.raises(TypeError, match="decode tokens must hold integer token ids"):
        decoder.decode(np.array([1.0, 2.0]))
    prompt = np.array([[1, 2], [3, 4]], np.int32)
    decoder.prefill(prompt)
    with pytest.raises(ValueError, match=r"decode tokens must be \(2,\), got shape \(3,\)"):
        decoder.decode(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[gather\] index 12"):
        decoder.decode(np.array([5, 12]))
    # The failed step wrote nothing: the next one continues from the prompt's states.
    got = decoder.decode(np.array([5, 6]))
    want = np.asarray(model.predict(np.array([[1, 2, 5], [3, 4, 6]], np.int32)))[:, -1]
    _assert_close(got, want, "after a refused token")


def _lm(rnn: gm.layers.Layer) -> gm.Model:
    tokens = gm.Input((None,), dtype="int32")
    hidden = rnn(gm.layers.Embedding(VOCAB, EMBED)(tokens))
    return gm.Model(tokens, gm.layers.Dense(VOCAB)(hidden))


def test_only_causal_recurrent_language_models_get_a_recurrent_decoder():
    assert is_recurrent_language_model(_lm(gm.layers.LSTM(EMBED, HIDDEN)))
    assert is_recurrent_language_model(_lm(gm.layers.SimpleRNN(EMBED, HIDDEN, num_layers=2)))
    not_causal = [
        _lm(gm.layers.LSTM(EMBED, HIDDEN, bidirectional=True)),
        _lm(gm.layers.GRU(EMBED, HIDDEN, output="last")),
        _lm(gm.layers.TransformerEncoder(1, EMBED, 1, 8, causal=True)),
        _lm(gm.layers.Dense(HIDDEN)),
    ]
    for model in not_causal:
        assert not is_recurrent_language_model(model)
        assert decoder_for(model, 1) is None
    with pytest.raises(ValueError, match="RecurrentDecoder needs a recurrent language model"):
        RecurrentDecoder(not_causal[0])
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        RecurrentDecoder(_lm(gm.layers.GRU(EMBED, HIDDEN)), 0)


def test_a_stateful_model_generates_from_zero_states_whatever_its_training_carried():
    """Generation starts every prompt from zero states: the states a stateful layer carries
    between training batches (here set to ones) are not read."""
    module, twin = paired_models("lstm", 2)
    tokens = gm.Input((None,), dtype="int32")
    layers = [
        gm.layers.Embedding(VOCAB, EMBED),
        gm.layers.LSTM(EMBED, HIDDEN, num_layers=2, stateful=True, batch_size=4),
        gm.layers.Dense(VOCAB),
    ]
    h = tokens
    for layer in layers:
        h = layer(h)
    model = gm.Model(tokens, h)
    model.set_weights(
        {
            name: np.ones(shape, np.float32) if ".state_" in name else twin.get_weights()[name]
            for name, shape in model.weight_shapes.items()
        }
    )
    prompt = np.array([[6, 2, 9], [0, 3, 3]], np.int32)
    want, _ = _torch_greedy(module, prompt, 10)
    np.testing.assert_array_equal(model.generate(prompt, 10, greedy=True), want)


def test_a_saved_and_loaded_recurrent_model_generates_the_same_tokens(tmp_path):
    _, model = paired_models("gru", 2)
    model.save(tmp_path / "char_gru.safetensors")
    loaded = gm.load_model(tmp_path / "char_gru.safetensors")
    prompt = np.array([[5, 1, 7]], np.int32)
    seen = []
    tokens = loaded.generate(prompt, 9, top_k=3, seed=5, on_token=lambda s, t: seen.append(t))
    np.testing.assert_array_equal(tokens, model.generate(prompt, 9, top_k=3, seed=5))
    np.testing.assert_array_equal(np.concatenate(seen), tokens[0, 3:])


def test_dropout_is_off_and_other_models_recompute_the_whole_context():
    """Dropout between the layers is an identity in generation; a bidirectional layer reads
    later steps, so its model gets no decoder and each token recomputes the context."""
    tokens = gm.Input((None,), dtype="int32")
    h = gm.layers.Dropout(0.5)(gm.layers.Embedding(VOCAB, EMBED)(tokens))
    h = gm.layers.Dropout(0.5)(gm.layers.GRU(EMBED, HIDDEN, num_layers=2, dropout=0.5)(h))
    with_dropout = gm.Model(tokens, gm.layers.Dense(VOCAB)(h), seed=3)
    assert is_recurrent_language_model(with_dropout)
    prompt = np.array([[2, 7, 1]], np.int32)
    np.testing.assert_array_equal(
        generate(with_dropout, prompt, 8, top_p=0.9, seed=2),
        generate(with_dropout, prompt, 8, top_p=0.9, seed=2, kv_cache=False),
    )
    both_ways = _lm(gm.layers.LSTM(EMBED, HIDDEN, bidirectional=True))
    greedy = generate(both_ways, prompt, 5, greedy=True)
    for t in range(3, greedy.shape[1]):
        assert greedy[0, t] == np.argmax(both_ways.predict(greedy[:, :t])[0, -1])
