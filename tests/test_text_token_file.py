"""Token files: the memory map holds exactly the tokenizer's ids in the narrowest dtype, the
header rebuilds the tokenizer, and truncated, corrupted or inconsistent files are refused."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from gometal import text

CORPUS = "def f(x):\n    return x * 2  # héllo 🎉\n" * 50


@pytest.fixture
def written(tmp_path):
    tokenizer = text.CharTokenizer.from_text(CORPUS)
    path = tmp_path / "corpus.tokens"
    text.write_token_file(path, CORPUS, tokenizer)
    return path, tokenizer


@pytest.mark.parametrize(
    "tokenizer",
    [
        text.ByteTokenizer(),
        text.CharTokenizer.from_text(CORPUS),
        text.BPETokenizer.train(CORPUS, vocab_size=300),
    ],
    ids=["byte", "char", "bpe"],
)
def test_the_memory_map_holds_the_tokenizers_ids(tmp_path, tokenizer):
    path = tmp_path / "corpus.tokens"
    written = text.write_token_file(path, CORPUS, tokenizer)
    opened = text.TokenFile(path)
    expected = tokenizer.encode(CORPUS)
    for tokens in (written, opened):
        assert isinstance(tokens.tokens, np.memmap)
        assert tokens.tokens.dtype == np.dtype("<u2")
        assert tokens.count == len(tokens) == expected.size
        np.testing.assert_array_equal(tokens.tokens, expected)
    assert opened.tokenizer == tokenizer
    assert opened.tokenizer.decode(opened.tokens) == CORPUS
    # The tokens are the file's last bytes, little-endian, after an aligned header.
    raw = path.read_bytes()
    assert raw[: len(text.token_file.MAGIC)] == b"GMTOKENS"
    assert raw[-2 * expected.size :] == expected.astype("<u2").tobytes()
    assert (len(raw) - 2 * expected.size) % 64 == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.tokens"]


def test_a_vocabulary_past_65536_ids_is_stored_as_int32(tmp_path):
    points = [p for p in range(0x100, 0x100 + 70_000 + 2048) if not 0xD800 <= p < 0xE000]
    tokenizer = text.CharTokenizer("".join(map(chr, points)))
    assert tokenizer.vocab_size == 70_000
    sample = "".join(chr(points[i]) for i in (0, 65_535, 65_536, 69_999))
    tokens = text.write_token_file(tmp_path / "wide.tokens", sample, tokenizer)
    assert tokens.dtype == "int32" and tokens.tokens.dtype == np.dtype("<i4")
    assert tokens.tokens.tolist() == [0, 65_535, 65_536, 69_999]
    assert (text.token_dtype(65_536), text.token_dtype(65_537)) == ("uint16", "int32")


def test_write_token_ids_refuses_ids_outside_the_tokenizer_and_keeps_the_old_file(written):
    path, tokenizer = written
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"\[write_token_ids\] id 999 at position 2 is outside"):
        text.write_token_ids(path, [0, 1, 999], tokenizer)
    with pytest.raises(ValueError, match=r"ids is empty"):
        text.write_token_ids(path, [], tokenizer)
    with pytest.raises(TypeError, match=r"tokenizer must be a gometal.text Tokenizer, got str"):
        text.write_token_ids(path, [0], "char")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_file_is_replaced_whole(written):
    path, _ = written
    text.write_token_ids(path, [7, 8, 9], text.ByteTokenizer())
    assert text.TokenFile(path).tokens.tolist() == [7, 8, 9]
    assert isinstance(text.TokenFile(path).tokenizer, text.ByteTokenizer)


def test_a_truncated_file_is_refused(written):
    path, _ = written
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"not a valid token file: truncated: .* need \d+ bytes"):
        text.TokenFile(path)
    path.write_bytes(data[:10])
    with pytest.raises(ValueError, match=r"holds 10 bytes, less than the 16-byte prefix"):
        text.TokenFile(path)
    path.write_bytes(data[:40])
    with pytest.raises(ValueError, match=r"header of \d+ bytes runs past the file's end"):
        text.TokenFile(path)


def test_a_longer_file_is_refused(written):
    path, _ = written
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(ValueError, match=r"longer than its header says"):
        text.TokenFile(path)


def test_a_corrupted_token_is_refused_by_the_checksum(written):
    path, tokenizer = written
    data = path.read_bytes()
    last = int(np.frombuffer(data[-2:], "<u2")[0])
    changed = (last + 1) % 5  # another id of the vocabulary: only the checksum can tell
    path.write_bytes(data[:-2] + struct.pack("<H", changed))
    with pytest.raises(
        ValueError, match=r"do not match the header's sha256 \(the file is corrupted"
    ):
        text.TokenFile(path)
    assert text.TokenFile(path, verify=False).tokens[-1] == changed  # the caller may skip it
    path.write_bytes(data[:-2] + struct.pack("<H", 40_000))
    with pytest.raises(
        ValueError, match=rf"token id 40000 is outside the vocabulary \[0, {tokenizer.vocab_size}\)"
    ):
        text.TokenFile(path, verify=False)


def header_of(path):
    raw = path.read_bytes()
    _, _, length = struct.unpack("<8sII", raw[:16])
    return raw, length, json.loads(raw[16 : 16 + length])


def with_header(path, raw, length, header):
    encoded = json.dumps(header).encode()
    assert len(encoded) <= length
    path.write_bytes(raw[:16] + encoded.ljust(length) + raw[16 + length :])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "float32"}, r"dtype 'float32' is not one of \['int32', 'uint16'\]"),
        ({"count": "12"}, r"header field 'count' should be a int, got '12'"),
        ({"count": True}, r"header field 'count' should be a int, got True"),
        ({"tokenizer": None}, r"header field 'tokenizer' should be a dict"),
        ({"vocab_size": 0}, r"vocab_size 0 must be positive"),
        ({"vocab_size": 3}, r"token id \d+ is outside the vocabulary \[0, 3\)"),
    ],
)
def test_an_inconsistent_header_is_refused(written, change, message):
    path, _ = written
    raw, length, header = header_of(path)
    with_header(path, raw, length, {**header, **change})
    with pytest.raises(ValueError, match=message):
        text.TokenFile(path)


def test_a_header_whose_tokenizer_disagrees_is_refused(written):
    path, _ = written
    raw, length, header = header_of(path)
    with_header(path, raw, length, {**header, "tokenizer": {"format": "gometal.tokenizer"}})
    with pytest.raises(ValueError, match=r"tokenizer cannot be rebuilt \(unknown tokenizer kind"):
        text.TokenFile(path).tokenizer  # noqa: B018
    header["tokenizer"]["chars"] = header["tokenizer"]["chars"][:-1]  # one id fewer
    with_header(path, raw, length, header)
    with pytest.raises(ValueError, match=r"its tokenizer has \d+ ids, the header says"):
        text.TokenFile(path).tokenizer  # noqa: B018


@pytest.mark.parametrize(
    ("offset", "replacement", "message"),
    [
        (0, b"NOTTOKEN", r"starts with b'NOTTOKEN', not b'GMTOKENS'"),
        (8, struct.pack("<I", 2), r"format version 2; this gometal reads 1"),
        (16, b"\xff\xfe{", r"header is not JSON"),
        (16, b"[]  ", r"header is not a JSON object"),
    ],
)
def test_a_damaged_prefix_or_header_is_refused(written, offset, replacement, message):
    path, _ = written
    data = bytearray(path.read_bytes())
    if replacement == b"[]  ":
        _, length, _ = header_of(path)
        replacement = b"[]".ljust(length)
    data[offset : offset + len(replacement)] = replacement
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=message) as caught:
        text.TokenFile(path)
    assert "corpus.tokens" in str(caught.value)


def test_the_header_records_the_source_texts_sha256(written):
    path, _ = written
    assert text.TokenFile(path).source_sha256 == hashlib.sha256(CORPUS.encode()).hexdigest()
    text.write_token_ids(path, [1, 2], text.ByteTokenizer())
    assert text.TokenFile(path).source_sha256 is None  # ids alone: the text is unknown


def test_cached_token_file_reuses_a_current_file_and_rebuilds_any_other(written):
    path, tokenizer = written

    def rewritten(corpus, tokenizer):
        before = path.stat().st_ino
        tokens = text.cached_token_file(path, corpus, tokenizer)
        np.testing.assert_array_equal(tokens.tokens, tokenizer.encode(corpus))
        return path.stat().st_ino != before  # an atomic rewrite is a new file

    assert not rewritten(CORPUS, tokenizer)
    assert rewritten(CORPUS[:-1], tokenizer)  # another text
    assert rewritten(CORPUS[:-1], text.ByteTokenizer())  # another tokenizer
    assert not rewritten(CORPUS[:-1], text.ByteTokenizer())
    path.write_bytes(path.read_bytes()[:-1])  # damaged
    assert rewritten(CORPUS[:-1], text.ByteTokenizer())
    fresh = path.with_name("fresh.tokens")
    made = text.cached_token_file(fresh, "def", tokenizer)
    assert made.tokens.tolist() == tokenizer.encode("def").tolist()
