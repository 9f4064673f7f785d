"""The built-in tokenizers: byte-level against Python's UTF-8 codec, character-level against
a plain dict of characters, save/load as JSON, and bad input named with its values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gometal import text

SURROGATES = range(0xD800, 0xE000)


def random_unicode(rng: np.random.Generator, length: int) -> str:
    """Code points from every plane (ASCII, Latin, CJK, emoji, astral), no surrogates."""
    ranges = [(0x0, 0x80), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000), (0x10000, 0x110000)]
    chosen = rng.integers(0, len(ranges), size=length)
    points = [int(rng.integers(*ranges[i])) for i in chosen]
    return "".join(map(chr, points))


# ---- byte level ----


@pytest.mark.parametrize("seed", range(5))
def test_byte_tokenizer_round_trips_random_unicode_as_its_utf8_bytes(seed):
    sample = random_unicode(np.random.default_rng(seed), 2000)
    tokenizer = text.ByteTokenizer()
    ids = tokenizer.encode(sample)
    assert ids.dtype == np.int32
    assert ids.tolist() == list(sample.encode("utf-8"))
    assert tokenizer.decode(ids) == sample
    assert tokenizer.vocab_size == 256


def test_byte_tokenizer_decodes_broken_utf8_as_the_codec_replaces_it():
    tokenizer = text.ByteTokenizer()
    cut = list("€uro".encode())[1:]  # starts inside the euro sign's three bytes
    assert tokenizer.decode(cut) == bytes(cut).decode("utf-8", errors="replace")
    assert tokenizer.decode([]) == ""
    assert tokenizer.encode("").shape == (0,)


def test_byte_tokenizer_refuses_a_lone_surrogate_naming_its_position():
    with pytest.raises(ValueError, match=r"'\\ud800' \(U\+D800\) at position 2 cannot be encoded"):
        text.ByteTokenizer().encode("ab\ud800c")


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        ([65, 256], ValueError, r"\[ByteTokenizer\] id 256 at position 1 is outside .*\[0, 256\)"),
        ([-1], ValueError, r"id -1 at position 0 is outside the vocabulary \[0, 256\)"),
        ([[65]], ValueError, r"ids must be 1-D, got shape \(1, 1\)"),
        ([65.0], TypeError, r"ids must be integers, got dtype float64"),
    ],
)
def test_byte_tokenizer_refuses_bad_ids(ids, error, message):
    with pytest.raises(error, match=message):
        text.ByteTokenizer().decode(ids)


def test_encode_refuses_what_is_not_text():
    with pytest.raises(TypeError, match=r"\[ByteTokenizer\] encode takes a str, got bytes"):
        text.ByteTokenizer().encode(b"abc")
    with pytest.raises(TypeError, match=r"\[CharTokenizer\] encode takes a str, got int"):
        text.CharTokenizer("ab").encode(3)


# ---- character level ----


def test_char_tokenizer_numbers_the_corpus_characters_in_code_point_order():
    corpus = "hello wörld, 漢字 🎉\n"
    tokenizer = text.CharTokenizer.from_text(corpus)
    reference = sorted(set(corpus))
    assert list(tokenizer.chars) == reference
    table = {char: index for index, char in enumerate(reference)}
    sample = "wörld 🎉 hello"
    ids = tokenizer.encode(sample)
    assert ids.dtype == np.int32
    assert ids.tolist() == [table[c] for c in sample]
    assert tokenizer.decode(ids) == sample
    # The order depends on the set of characters only, not on where they first appear.
    assert text.CharTokenizer.from_text(corpus[::-1]).chars == tokenizer.chars


@pytest.mark.parametrize("seed", range(3))
def test_char_tokenizer_round_trips_random_text_of_its_alphabet(seed):
    rng = np.random.default_rng(seed)
    corpus = random_unicode(rng, 300) + "\ud83d"  # a Python str may hold a lone surrogate
    tokenizer = text.CharTokenizer.from_text(corpus)
    sample = "".join(rng.choice(list(corpus), size=1000))
    ids = tokenizer.encode(sample)
    assert ids.max() < tokenizer.vocab_size == len(set(corpus))
    assert tokenizer.decode(ids) == sample


def test_char_tokenizer_keeps_a_given_alphabet_order():
    tokenizer = text.CharTokenizer("zyx")
    assert tokenizer.encode("xyz").tolist() == [2, 1, 0]
    assert tokenizer.decode([0, 0, 2]) == "zzx"


def test_unknown_characters_are_an_error_naming_the_character_and_position():
    tokenizer = text.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"character 'é' \(U\+00E9\) at position 3 is not in the"):
        tokenizer.encode("abcé")


def test_unknown_characters_map_to_an_explicit_unk_id():
    tokenizer = text.CharTokenizer.from_text("abc", unk_token="<unk>")
    assert tokenizer.vocab_size == 4
    assert tokenizer.unk_id == 3
    assert tokenizer.encode("aéb🎉").tolist() == [0, 3, 1, 3]
    assert tokenizer.decode([0, 3, 1]) == "a<unk>b"


@pytest.mark.parametrize(
    ("chars", "unk_token", "message"),
    [
        ("", None, r"chars is empty"),
        (["a", "bc"], None, r"single characters, got 'bc' at position 1"),
        ("aba", None, r"distinct, 'a' \(U\+0061\) repeats"),
        ("ab", "a", r"unk_token 'a' is also a character of the vocabulary"),
        ("ab", "", r"unk_token must be a non-empty str or None, got ''"),
    ],
)
def test_char_tokenizer_refuses_a_bad_vocabulary(chars, unk_token, message):
    with pytest.raises(ValueError, match=message):
        text.CharTokenizer(chars, unk_token)


def test_char_tokenizer_refuses_ids_outside_its_vocabulary():
    with pytest.raises(ValueError, match=r"\[CharTokenizer\] id 3 at position 1 .* \[0, 3\)"):
        text.CharTokenizer("abc").decode([0, 3])
    with pytest.raises(ValueError, match=r"from_text got an empty corpus"):
        text.CharTokenizer.from_text("")


# ---- save and load ----


@pytest.mark.parametrize(
    "tokenizer",
    [
        text.CharTokenizer.from_text("héllo 🎉\n"),
        text.CharTokenizer.from_text("abc", unk_token="?!"),
        text.ByteTokenizer(),
    ],
    ids=["char", "char-unk", "byte"],
)
def test_tokenizers_save_as_json_and_load_back(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["format"] == "gometal.tokenizer"
    loaded = text.load_tokenizer(path)
    assert type(loaded) is type(tokenizer)
    assert loaded == tokenizer
    assert loaded.vocab_size == tokenizer.vocab_size
    sample = "hello 🎉" if isinstance(tokenizer, text.ByteTokenizer) else "hé🎉"
    if getattr(tokenizer, "unk_id", None) is not None:
        sample = "abcz"
    assert loaded.encode(sample).tolist() == tokenizer.encode(sample).tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("{not json", ValueError, r"is not JSON"),
        ("[1, 2]", TypeError, r"must be a JSON object"),
        ('{"format": "gometal.tokenizer", "kind": "word"}', ValueError, r"kind 'word'"),
        ('{"format": "gometal.tokenizer", "kind": "char", "chars": 5}', TypeError, r"'chars'"),
        ('{"vocab": {}}', ValueError, r"not a tokenizer description.*got the keys \['vocab'\]"),
    ],
)
def test_load_tokenizer_refuses_a_bad_file_naming_it(tmp_path, content, error, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(error, match=message) as caught:
        text.load_tokenizer(path)
    assert "bad.json" in str(caught.value)
