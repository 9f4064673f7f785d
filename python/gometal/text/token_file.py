"""A token file: a corpus tokenized once, read back as a memory map.

Layout: the 8-byte magic ``GMTOKENS``, a little-endian uint32 format version and a uint32
header length, a UTF-8 JSON header (dtype, count, vocab_size, the tokens' sha256, the
tokenizer's description and the source text's sha256), spaces up to a multiple of 64
bytes, then the tokens as little-endian uint16 (when the vocabulary fits) or int32. The
file is written to a temporary file, synced and renamed, so a reader never sees half of
one; opening checks the size, the header and (by default) the checksum, so a truncated or
corrupted file is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..base.atomic import atomic_open
from .loading import tokenizer_from_config
from .tokenizer_base import Tokenizer, check_text, check_token_ids

MAGIC = b"GMTOKENS"
FORMAT_VERSION = 1
# Where the tokens start is a multiple of this, so the memory map is aligned.
DATA_ALIGNMENT = 64
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_UINT16_IDS = 1 << 16
_DTYPES = {"uint16": np.dtype("<u2"), "int32": np.dtype("<i4")}


def token_dtype(vocab_size: int) -> str:
    """``"uint16"`` when every id of the vocabulary fits in 16 bits, else ``"int32"``.

    Example:
        >>> token_dtype(50257), token_dtype(100000)
        ('uint16', 'int32')
    """
    return "uint16" if vocab_size <= _UINT16_IDS else "int32"


def _data_offset(header_length: int) -> int:
    end = _PREFIX.size + header_length
    return -(-end // DATA_ALIGNMENT) * DATA_ALIGNMENT


def text_sha256(text: str) -> str:
    """The hex sha256 of ``text`` encoded as UTF-8: what a token file records of its source.

    Example:
        >>> text_sha256("")[:12]
        'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def write_token_ids(
    path: str | os.PathLike[str],
    ids: Sequence[int] | np.ndarray,
    tokenizer: Tokenizer,
    *,
    source_sha256: str | None = None,
) -> TokenFile:
    """Writes ids made by ``tokenizer`` as a token file, atomically.

    Args:
        path: the file to create or replace; its folder must exist.
        ids: a non-empty 1-D sequence of ids in ``[0, tokenizer.vocab_size)``.
        tokenizer: the tokenizer the ids come from; its description goes in the header.
        source_sha256: the sha256 of the text the ids were made from, kept in the header
            so :func:`cached_token_file` can tell whether the file is still current.

    Returns:
        The written file, opened.

    Example:
        >>> write_token_ids("corpus.tokens", [1, 2, 3], tokenizer)  # doctest: +SKIP
    """
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(
            f"[write_token_ids] tokenizer must be a gometal.text Tokenizer, got "
            f"{type(tokenizer).__name__}"
        )
    vocab_size = tokenizer.vocab_size
    checked = check_token_ids(ids, vocab_size, "write_token_ids")
    if checked.size == 0:
        raise ValueError("[write_token_ids] ids is empty; a token file needs at least one token")
    dtype = token_dtype(vocab_size)
    data = checked.astype(_DTYPES[dtype]).tobytes()
    header = {
        "dtype": dtype,
        "count": int(checked.size),
        "vocab_size": int(vocab_size),
        "sha256": hashlib.sha256(data).hexdigest(),
        "tokenizer": tokenizer.to_config(),
        "source_sha256": source_sha256,
    }
    header_bytes = json.dumps(header, ensure_ascii=False).encode("utf-8")
    padding = _data_offset(len(header_bytes)) - _PREFIX.size - len(header_bytes)
    header_bytes += b" " * padding
    with atomic_open(path) as handle:
        handle.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)))
        handle.write(header_bytes)
        handle.write(data)
    return TokenFile(path)


def write_token_file(path: str | os.PathLike[str], text: str, tokenizer: Tokenizer) -> TokenFile:
    """Tokenizes ``text`` and writes the ids as a token file, atomically.

    Args:
        path: the file to create or replace; its folder must exist.
        text: the corpus.
        tokenizer: encodes the text; its description is stored with the tokens.

    Returns:
        The written file, opened.

    Example:
        >>> tokens = write_token_file("corpus.tokens", text, ByteTokenizer())  # doctest: +SKIP
        >>> tokens.count == len(text.encode())  # doctest: +SKIP
        True
    """
    check_text(text, "write_token_file")
    return write_token_ids(path, tokenizer.encode(text), tokenizer, source_sha256=text_sha256(text))


def cached_token_file(path: str | os.PathLike[str], text: str, tokenizer: Tokenizer) -> TokenFile:
    """The token file of ``text`` at ``path``, written only when it is not there already.

    An existing file is reused when it is valid and was made from the same text (its
    sha256) with the same tokenizer; otherwise (another corpus or tokenizer, a damaged or
    foreign file) it is written again, so a run that restarts skips the tokenization.

    Args:
        path: the token file; its folder must exist.
        text: the corpus.
        tokenizer: encodes the text.

    Returns:
        The open token file.

    Example:
        >>> tokens = cached_token_file("corpus.tokens", text, tokenizer)  # doctest: +SKIP
    """
    check_text(text, "cached_token_file")
    if Path(path).is_file():
        try:
            existing = TokenFile(path)
        except ValueError:
            existing = None  # damaged or foreign: rebuilt below
        if (
            existing is not None
            and existing.source_sha256 == text_sha256(text)
            and existing.header["tokenizer"] == tokenizer.to_config()
        ):
            return existing
        del existing  # its memory map closes before the file is replaced
    return write_token_file(path, text, tokenizer)


class TokenFile:
    """A token file opened read-only: its header and its tokens as a memory map.

    Args:
        path: the file :func:`write_token_file` wrote.
        verify: recompute the tokens' sha256 and compare it with the header's (one read of
            the file); a mismatch means the file was corrupted after it was written.

    Attributes:
        tokens: the ids, a read-only ``np.memmap`` of ``dtype`` and length ``count``.
        dtype, count, vocab_size: from the header.
        source_sha256: the sha256 of the text the tokens were made from, when known.

    Example:
        >>> tokens = TokenFile("corpus.tokens")  # doctest: +SKIP
        >>> tokens.tokenizer.decode(tokens.tokens[:20])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            prefix = handle.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                self._refuse(f"it holds {size} bytes, less than the {_PREFIX.size}-byte prefix")
            magic, version, header_length = _PREFIX.unpack(prefix)
            if magic != MAGIC:
                self._refuse(f"it starts with {magic!r}, not {MAGIC!r}")
            if version != FORMAT_VERSION:
                self._refuse(f"format version {version}; this gometal reads {FORMAT_VERSION}")
            if _PREFIX.size + header_length > size:
                self._refuse(f"its header of {header_length} bytes runs past the file's end")
            header = self._parse_header(handle.read(header_length))
        self.header = header
        self.dtype: str = header["dtype"]
        self.count: int = header["count"]
        self.vocab_size: int = header["vocab_size"]
        self.source_sha256: str | None = header.get("source_sha256")
        offset = _data_offset(header_length)
        expected = offset + self.count * _DTYPES[self.dtype].itemsize
        if size != expected:
            problem = "truncated" if size < expected else "longer than its header says"
            self._refuse(
                f"{problem}: {self.count} {self.dtype} tokens need {expected} bytes, the file "
                f"has {size}"
            )
        self.tokens = np.memmap(
            self.path, dtype=_DTYPES[self.dtype], mode="r", offset=offset, shape=(self.count,)
        )
        if verify and hashlib.sha256(self.tokens).hexdigest() != header["sha256"]:
            self._refuse("its tokens do not match the header's sha256 (the file is corrupted)")
        largest = int(self.tokens.max())
        if largest >= self.vocab_size:
            self._refuse(f"token id {largest} is outside the vocabulary [0, {self.vocab_size})")
        self._tokenizer: Tokenizer | None = None

    def _refuse(self, reason: str) -> NoReturn:
        raise ValueError(f"[TokenFile] {str(self.path)!r} is not a valid token file: {reason}")

    def _parse_header(self, raw: bytes) -> dict[str, Any]:
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            self._refuse(f"its header is not JSON ({err})")
        if not isinstance(header, dict):
            self._refuse("its header is not a JSON object")
        fields = {"dtype": str, "count": int, "vocab_size": int, "sha256": str, "tokenizer": dict}
        for field, kind in fields.items():
            value = header.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                self._refuse(f"header field {field!r} should be a {kind.__name__}, got {value!r}")
        source = header.get("source_sha256")
        if source is not None and not isinstance(source, str):
            self._refuse(f"header field 'source_sha256' should be a str or null, got {source!r}")
        if header["dtype"] not in _DTYPES:
            self._refuse(f"dtype {header['dtype']!r} is not one of {sorted(_DTYPES)}")
        if header["count"] < 1 or header["vocab_size"] < 1:
            self._refuse(
                f"count {header['count']} and vocab_size {header['vocab_size']} must be positive"
            )
        return header

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the tokens were made with (rebuilt from the header once)."""
        if self._tokenizer is None:
            try:
                self._tokenizer = tokenizer_from_config(self.header["tokenizer"])
            except (TypeError, ValueError) as err:
                self._refuse(f"its header's tokenizer cannot be rebuilt ({err})")
            if self._tokenizer.vocab_size != self.vocab_size:
                self._refuse(
                    f"its tokenizer has {self._tokenizer.vocab_size} ids, the header says "
                    f"{self.vocab_size}"
                )
        return self._tokenizer

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"TokenFile({str(self.path)!r}, count={self.count}, dtype={self.dtype}, "
            f"vocab_size={self.vocab_size})"
        )
