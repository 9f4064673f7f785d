"""``gometal train-lm`` and ``gometal generate`` as a user runs them: on a small text file,
resuming exactly from a checkpoint, and refusing bad input with one line."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal.apps.cli import main

SMALL = [
    "--max-iters", "60", "--eval-interval", "20", "--eval-iters", "4", "--n-layer", "1",
    "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--warmup-iters", "5",
    "--batch-size", "8", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(gm.text.stdlib_corpus().text[:120_000], encoding="utf-8")
    return path


def test_train_lm_trains_saves_and_samples(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-lm", str(corpus), *SMALL, "--out", str(out), "--sample-tokens", "30"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 3/3" in printed and "val_loss" in printed
    for name in ("tokenizer.json", "corpus.tokens", "run.json", "model.safetensors"):
        assert (out / name).is_file(), name
    history = gm.Trainer.load(out / "checkpoints" / "epoch-003.gmckpt").history
    assert history.val_loss[-1] < history.val_loss[0]


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(corpus, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert (
        main(["train-lm", str(corpus), *SMALL, "--out", str(straight), "--sample-tokens", "0"]) == 0
    )
    assert (
        main(["train-lm", str(corpus), *SMALL, "--out", str(resumed), "--sample-tokens", "0"]) == 0
    )
    # As if the run stopped after its second evaluation: resume from that checkpoint.
    (resumed / "checkpoints" / "epoch-003.gmckpt").unlink()
    (resumed / "model.safetensors").unlink()
    assert (
        main(["train-lm", "--resume", str(resumed), "--no-progress", "--sample-tokens", "0"]) == 0
    )
    a = gm.load_model(straight / "model.safetensors").get_weights()
    b = gm.load_model(resumed / "model.safetensors").get_weights()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_generate_is_deterministic_for_a_seed_and_names_bad_input(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-lm", str(corpus), *SMALL, "--out", str(out), "--sample-tokens", "0"]) == 0
    capsys.readouterr()
    args = ["generate", str(out), "--prompt", "def ", "--max-new-tokens", "20", "--top-k", "5"]
    assert main([*args, "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "3"]) == 0
    assert capsys.readouterr().out == first and first.startswith("def ")
    assert main(["generate", str(out), "--prompt", "\u4e2d"]) == 2
    assert "gometal generate:" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "missing")]) == 2
    assert "not a gometal train-lm folder" in capsys.readouterr().err


def test_train_lm_names_bad_input(tmp_path, capsys):
    assert main(["train-lm", str(tmp_path / "nope.txt"), *SMALL, "--out", str(tmp_path / "a")]) == 2
    assert "nope.txt: no such file" in capsys.readouterr().err
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc", encoding="utf-8")
    assert main(["train-lm", str(tiny), *SMALL, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gometal train-lm:") and err.count("\n") == 1
    assert main(["train-lm", "--resume", str(tmp_path / "b2"), "--no-progress"]) == 2


def test_generate_runs_a_saved_recurrent_language_model(tmp_path, capsys):
    # A folder that train-lm did not write, holding a char LSTM: the states carried in the
    # engine give what model.generate gives, and torch's greedy argmax of the same weights.
    import torch

    tokenizer = gm.text.CharTokenizer("abcdefgh ")
    ids = gm.Input((None,), dtype="int32")
    h = gm.layers.Embedding(tokenizer.vocab_size, 8)(ids)
    h = gm.layers.LSTM(8, 16, num_layers=2)(h)
    model = gm.Model(ids, gm.layers.Dense(tokenizer.vocab_size)(h), seed=4)
    tokenizer.save(tmp_path / "tokenizer.json")
    model.save(tmp_path / "model.safetensors")

    assert (
        main(["generate", str(tmp_path), "--prompt", "abc", "--max-new-tokens", "12", "--greedy"])
        == 0
    )
    printed = capsys.readouterr().out.rstrip("\n")
    expected = model.generate(tokenizer.encode("abc"), 12, greedy=True)
    assert printed == tokenizer.decode(np.asarray(expected))

    w = {k: torch.from_numpy(np.asarray(v)) for k, v in model.get_weights().items()}
    embed = torch.nn.Embedding(tokenizer.vocab_size, 8)
    lstm = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    head = torch.nn.Linear(16, tokenizer.vocab_size)
    for module, prefix in ((embed, "embedding_0."), (lstm, "lstm_0."), (head, "dense_0.")):
        # gometal's names and layouts are torch's, so the state dicts load one to one.
        module.load_state_dict({k[len(prefix) :]: v for k, v in w.items() if k.startswith(prefix)})
    tokens = list(tokenizer.encode("abc"))
    with torch.no_grad():
        for _ in range(12):
            out, _ = lstm(embed(torch.tensor([tokens])))
            tokens.append(int(head(out[0, -1]).argmax()))
    assert printed == tokenizer.decode(np.asarray(tokens))
