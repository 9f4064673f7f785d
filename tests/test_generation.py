"""Sampling from a language model: top-k and top-p keep exactly the tokens they should,
sampling is deterministic for a seed, greedy decoding follows the model's argmax, and
``gometal generate`` refuses a prompt longer than the model's context."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal.models import filter_logits, generate

VOCAB, BLOCK = 11, 8


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_top_k_keeps_the_k_largest_and_renormalizes():
    logits = np.array([0.1, 2.0, -1.0, 1.5, 0.3])
    probs = filter_logits(logits, top_k=2)
    np.testing.assert_allclose(probs[[1, 3]], _softmax(logits[[1, 3]]))
    assert probs[[0, 2, 4]].sum() == 0
    ties = filter_logits(np.array([1.0, 1.0, 0.0]), top_k=1)
    np.testing.assert_allclose(ties, [0.5, 0.5, 0.0])  # a tie at the boundary stays


@pytest.mark.parametrize("top_p", [0.5, 0.7, 0.9, 1.0])
def test_top_p_keeps_the_smallest_nucleus(top_p):
    logits = np.log(np.array([0.4, 0.25, 0.2, 0.1, 0.05]))
    probs = filter_logits(logits, top_p=top_p)
    base = _softmax(logits)
    # Smallest prefix of the sorted probabilities whose sum reaches top_p.
    size = int(np.searchsorted(np.cumsum(base), top_p - 1e-12) + 1)
    kept = np.argsort(-base)[:size]
    assert set(np.flatnonzero(probs)) == set(kept)
    np.testing.assert_allclose(probs[kept], base[kept] / base[kept].sum())


def test_temperature_divides_the_logits():
    logits = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(filter_logits(logits, temperature=0.5), _softmax(logits / 0.5))


def _model():
    return gm.models.GPT(VOCAB, BLOCK, n_layer=1, n_head=2, n_embd=16, seed=4)


def test_sampling_is_deterministic_for_a_seed_and_greedy_follows_the_argmax():
    model = _model()
    prompt = np.array([1, 2, 3], np.int32)
    first = generate(model, prompt, 12, top_k=5, seed=7)
    assert np.array_equal(first, generate(model, prompt, 12, top_k=5, seed=7))
    assert not np.array_equal(first, generate(model, prompt, 12, top_k=5, seed=8))
    greedy = generate(model, prompt, 10, greedy=True)
    assert list(greedy[:3]) == [1, 2, 3] and len(greedy) == 13
    for t in range(3, len(greedy)):
        context = greedy[max(0, t - BLOCK) : t]
        window = np.zeros((1, BLOCK), np.int32)
        window[0, : len(context)] = context
        assert greedy[t] == np.argmax(model.predict(window)[0, len(context) - 1])


def test_bad_generation_arguments_are_named():
    model = _model()
    with pytest.raises(TypeError, match="prompt must hold integer token ids"):
        generate(model, np.array([1.5]), 3)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        generate(model, np.array([1]), -1)
    with pytest.raises(ValueError, match=r"\[gather\] index 11"):
        generate(model, np.array([11]), 1)
    with pytest.raises(ValueError, match="top_p must be in"):
        filter_logits(np.zeros(3), top_p=0.0)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        filter_logits(np.zeros(3), top_k=0)


def test_gometal_generate_refuses_a_prompt_longer_than_the_context(tmp_path, capsys):
    """The command line names both lengths in one line (exit status 2)."""
    from gometal.apps.cli import main

    tokenizer = gm.text.CharTokenizer.from_text("abcdefghij")
    tokenizer.save(tmp_path / "tokenizer.json")
    model = gm.models.GPT(tokenizer.vocab_size, BLOCK, n_layer=1, n_head=2, n_embd=16)
    model.save(tmp_path / "model.safetensors")
    assert main(["generate", str(tmp_path), "--prompt", "abcdefghij", "--greedy"]) == 2
    assert "the prompt has 10 tokens, more than the model's context of block_size 8" in (
        capsys.readouterr().err
    )
    assert main(["generate", str(tmp_path), "--prompt", "abc", "--max-new-tokens", "9"]) == 0
    assert capsys.readouterr().out.startswith("abc")


def test_model_generate_is_gm_models_generate_and_sees_the_current_weights():
    """``model.generate`` takes generate's arguments; after set_weights it follows the new
    weights (the greedy tokens are the argmax of the new model's recomputed logits)."""
    model = _model()
    prompt = np.array([[1, 2], [3, 4]], np.int32)
    np.testing.assert_array_equal(
        model.generate(prompt, 9, top_p=0.8, seed=3), generate(model, prompt, 9, top_p=0.8, seed=3)
    )
    weights = model.get_weights()
    rng = np.random.default_rng(0)
    model.set_weights(
        {k: v + rng.standard_normal(v.shape).astype(np.float32) * 0.5 for k, v in weights.items()}
    )
    tokens = model.generate(prompt[:1], 5, greedy=True)
    assert tokens.shape == (1, 7)
    for t in range(2, 7):
        window = np.zeros((1, BLOCK), np.int32)
        window[0, :t] = tokens[0, :t]
        assert tokens[0, t] == np.argmax(model.predict(window)[0, t - 1])
    with pytest.raises(ValueError, match="more than the model's context of block_size 8"):
        model.generate(np.arange(BLOCK + 1) % VOCAB, 1)


@pytest.mark.parametrize(
    "options",
    [{"greedy": True}, {"top_k": 5, "temperature": 0.9, "seed": 7}, {"top_p": 0.8, "seed": 3}],
    ids=["greedy", "top-k", "top-p"],
)
@pytest.mark.parametrize("kv_cache", [True, False], ids=["kv-cache", "recomputed"])
def test_on_token_sees_each_new_token_as_chosen_and_changes_nothing(options, kv_cache):
    """The callback gets every step's new tokens in order (past the context, too), the
    tokens equal a run without it, and ``Model.generate`` passes it through."""
    model = _model()
    prompt = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    new_tokens = BLOCK + 3  # past the context: the cropped window is recomputed
    reference = generate(model, prompt, new_tokens, kv_cache=kv_cache, **options)
    seen: list[tuple[int, np.ndarray]] = []
    tokens = generate(
        model, prompt, new_tokens, kv_cache=kv_cache, on_token=lambda s, t: seen.append((s, t)),
        **options,
    )  # fmt: skip
    np.testing.assert_array_equal(tokens, reference)
    assert [step for step, _ in seen] == list(range(new_tokens))
    for step, ids in seen:
        assert ids.dtype == np.int32 and ids.shape == (2,)
        np.testing.assert_array_equal(ids, reference[:, 3 + step])
    from_model: list[np.ndarray] = []
    single = model.generate(prompt[0], 4, on_token=lambda s, t: from_model.append(t), **options)
    np.testing.assert_array_equal(single, generate(model, prompt[0], 4, **options))
    assert [int(ids[0]) for ids in from_model] == list(single[3:])
    assert all(ids.shape == (1,) for ids in from_model)


def test_an_exception_from_on_token_stops_the_generation():
    """Raising in the callback ends the loop at once (no further step) and reaches the
    caller; the model generates normally afterwards (the KV cache's lock is released)."""
    model = _model()
    steps: list[int] = []

    class Stop(Exception):
        pass

    def stop_at_two(step: int, ids: np.ndarray) -> None:
        steps.append(step)
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        generate(model, np.array([1, 2]), 10, greedy=True, on_token=stop_at_two)
    assert steps == [0, 1, 2]
    assert generate(model, np.array([1, 2]), 3, greedy=True).shape == (5,)
    with pytest.raises(TypeError, match="on_token must be a callable"):
        generate(model, np.array([1, 2]), 3, on_token=5)
