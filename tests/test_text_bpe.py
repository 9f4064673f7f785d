"""BPE through Hugging Face's tokenizers: exact round trips, the same vocabulary and ids as
the package used directly, tokenizer.json files read and written, bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from gometal import text

CORPUS = [
    "def add(a, b):\n    return a + b\n\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for index in range(10):\n    print(index, 'héllo wörld')\n",
    "# comments, numbers 12345 and symbols {}[]()<>=+-*/\n",
] * 20
SPECIAL = ["<|endoftext|>", "<pad>"]
SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "unseen: 漢字 🎉 ∑ \t\t  spaces   and\r\nnewlines",
    "special <|endoftext|> tokens<pad>inside",
    "",
    " ",
]


@pytest.fixture(scope="module")
def trained() -> text.BPETokenizer:
    return text.BPETokenizer.train(CORPUS, vocab_size=320, special_tokens=SPECIAL)


def direct_tokenizer() -> tokenizers.Tokenizer:
    """The same byte-level BPE configured and trained with tokenizers alone."""
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


@pytest.mark.parametrize("sample", SAMPLES)
def test_trained_bpe_round_trips_exactly(trained, sample):
    ids = trained.encode(sample)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert trained.decode(ids) == sample
    assert ids.size == 0 or ids.max() < trained.vocab_size


def test_random_unicode_round_trips(trained):
    rng = np.random.default_rng(0)
    points = rng.integers(0x20, 0xD000, size=3000)
    sample = "".join(map(chr, points))
    assert trained.decode(trained.encode(sample)) == sample


def test_trained_bpe_matches_tokenizers_used_directly(trained):
    direct = direct_tokenizer()
    assert trained.vocab_size == direct.get_vocab_size(with_added_tokens=True) == 320
    assert trained.tokenizer.get_vocab() == direct.get_vocab()
    for sample in SAMPLES:
        assert trained.encode(sample).tolist() == direct.encode(sample).ids
    # Special tokens take the first ids and are matched whole.
    assert [trained.token_id(t) for t in SPECIAL] == [0, 1]
    assert trained.encode("<|endoftext|>").tolist() == [0]
    # Merges shorten the text: fewer tokens than bytes.
    assert len(trained.encode(CORPUS[1])) < len(CORPUS[1].encode()) // 2


def test_saved_bpe_is_a_tokenizer_json_that_tokenizers_reads(tmp_path, trained):
    path = tmp_path / "tokenizer.json"
    trained.save(path)
    direct = tokenizers.Tokenizer.from_file(str(path))
    loaded = text.load_tokenizer(path)
    assert isinstance(loaded, text.BPETokenizer)
    assert loaded == trained
    for sample in SAMPLES:
        expected = trained.encode(sample).tolist()
        assert direct.encode(sample).ids == expected
        assert loaded.encode(sample).tolist() == expected


def test_a_tokenizer_json_written_by_tokenizers_loads(tmp_path):
    direct = tokenizers.Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, "[UNK]"))
    direct.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    direct.save(str(path))
    for loaded in (text.load_tokenizer(path), text.BPETokenizer.from_file(path)):
        assert loaded.vocab_size == 3
        assert loaded.encode("hello there world").tolist() == [1, 0, 2]
        assert loaded.encode("hello world").tolist() == direct.encode("hello world").ids


def test_decode_refuses_ids_outside_the_vocabulary(trained):
    # tokenizers itself drops an unknown id silently; the wrapper names it.
    assert trained.tokenizer.decode([10, 5000]) == trained.tokenizer.decode([10])
    with pytest.raises(ValueError, match=r"\[BPETokenizer\] id 320 at position 1 .*\[0, 320\)"):
        trained.decode([10, 320])


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"vocab_size": 257}, ValueError, r"at least 258 \(256 bytes \+ 2 special tokens\)"),
        ({"vocab_size": "300"}, TypeError, r"vocab_size must be an int, got '300'"),
        ({"vocab_size": 300, "min_frequency": -1}, ValueError, r"min_frequency"),
    ],
)
def test_train_refuses_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        text.BPETokenizer.train(CORPUS[:4], special_tokens=SPECIAL, **arguments)


def test_train_refuses_bad_special_tokens_and_texts():
    with pytest.raises(ValueError, match=r"special_tokens repeat"):
        text.BPETokenizer.train("abc", 300, special_tokens=["<a>", "<a>"])
    with pytest.raises(ValueError, match=r"special_tokens must be non-empty strs, got ''"):
        text.BPETokenizer.train("abc", 300, special_tokens=[""])
    with pytest.raises(TypeError, match=r"texts\[1\]\] encode takes a str, got bytes"):
        text.BPETokenizer.train(["abc", b"def"], 300)


def test_an_invalid_tokenizer_json_is_refused(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "BPE", "vocab": 3}}))
    with pytest.raises(ValueError, match=r"tokenizer.json.*not a valid tokenizer.json"):
        text.load_tokenizer(path)
    with pytest.raises(TypeError, match=r"takes a tokenizers.Tokenizer, got dict"):
        text.BPETokenizer({"model": {}})
    with pytest.raises(KeyError, match=r"'<nope>' is not in the vocabulary"):
        text.BPETokenizer.train("abc abc", 260).token_id("<nope>")
