"""The built-in tokenizers: one id per character of a corpus, or one id per UTF-8 byte."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .tokenizer_base import TOKENIZER_FORMAT, Tokenizer, check_text, check_token_ids

# UTF-32 holds one code point per 4 bytes: a str becomes an array of code points without a
# Python loop. "surrogatepass" keeps lone surrogates, which a Python str may hold.
_CODE_POINTS = "utf-32-le"
_SURROGATES = "surrogatepass"


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(_CODE_POINTS, _SURROGATES), dtype="<u4")


def _describe_char(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X})"


class CharTokenizer(Tokenizer):
    """One id per character: ids ``0 .. len(chars) - 1`` in the order of ``chars``.

    Build it from a corpus with :meth:`from_text`, which orders the characters by code
    point so the same corpus always gives the same ids. A character outside the vocabulary
    is an error, unless ``unk_token`` is given: it then gets the last id, every unknown
    character encodes to it and it decodes to ``unk_token``.

    Args:
        chars: the vocabulary, distinct single characters (a str or a sequence of them).
        unk_token: the text the unknown id decodes to, or ``None`` to refuse unknown
            characters.

    Example:
        >>> tokenizer = CharTokenizer.from_text("hello world")
        >>> tokenizer.encode("hello").tolist()
        [3, 2, 4, 4, 5]
        >>> tokenizer.decode([3, 2, 4, 4, 5])
        'hello'
    """

    def __init__(self, chars: str | Sequence[str], unk_token: str | None = None):
        chars = list(chars)
        if not chars:
            raise ValueError("[CharTokenizer] chars is empty; the vocabulary needs a character")
        for index, char in enumerate(chars):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(
                    f"[CharTokenizer] chars must be single characters, got {char!r} at "
                    f"position {index}"
                )
        if len(set(chars)) != len(chars):
            repeated = next(c for c in chars if chars.count(c) > 1)
            raise ValueError(
                f"[CharTokenizer] chars must be distinct, {_describe_char(repeated)} repeats"
            )
        if unk_token is not None:
            if not isinstance(unk_token, str) or not unk_token:
                raise ValueError(
                    f"[CharTokenizer] unk_token must be a non-empty str or None, got {unk_token!r}"
                )
            if unk_token in chars:
                raise ValueError(
                    f"[CharTokenizer] unk_token {unk_token!r} is also a character of the "
                    "vocabulary; its id would be ambiguous"
                )
        self.chars = tuple(chars)
        self.unk_token = unk_token
        self.unk_id = len(chars) if unk_token is not None else None
        codes = _code_points("".join(chars))
        order = np.argsort(codes, kind="stable")
        self._codes = codes
        self._sorted_codes = codes[order]
        self._sorted_ids = order.astype(np.int32)

    @classmethod
    def from_text(cls, text: str, unk_token: str | None = None) -> CharTokenizer:
        """The tokenizer of every distinct character of ``text``, ordered by code point.

        Args:
            text: the corpus.
            unk_token: as in the constructor.

        Returns:
            A new :class:`CharTokenizer`.

        Example:
            >>> CharTokenizer.from_text("banana").chars
            ('a', 'b', 'n')
        """
        check_text(text, "CharTokenizer")
        if not text:
            raise ValueError("[CharTokenizer] from_text got an empty corpus")
        codes = np.unique(_code_points(text))
        return cls(codes.astype("<u4").tobytes().decode(_CODE_POINTS, _SURROGATES), unk_token)

    @property
    def vocab_size(self) -> int:
        """The characters, plus one for ``unk_token`` when given."""
        return len(self.chars) + (self.unk_id is not None)

    def encode(self, text: str) -> np.ndarray:
        """The id of each character of ``text``.

        Args:
            text: the text; its characters must be in the vocabulary unless the tokenizer
                has an ``unk_token``.

        Returns:
            A 1-D int32 array, one id per character.

        Example:
            >>> CharTokenizer("ab").encode("ba").tolist()
            [1, 0]
        """
        codes = _code_points(check_text(text, "CharTokenizer"))
        slots = np.searchsorted(self._sorted_codes, codes)
        slots = np.minimum(slots, len(self._sorted_codes) - 1)
        known = self._sorted_codes[slots] == codes
        ids = self._sorted_ids[slots]
        if not known.all():
            if self.unk_id is None:
                position = int(np.flatnonzero(~known)[0])
                raise ValueError(
                    f"[CharTokenizer] character {_describe_char(text[position])} at position "
                    f"{position} is not in the vocabulary of {len(self.chars)} characters; "
                    "build the tokenizer from a corpus that holds it, or pass unk_token"
                )
            ids = np.where(known, ids, np.int32(self.unk_id))
        return ids.astype(np.int32, copy=False)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The characters of ``ids`` (the unknown id becomes ``unk_token``).

        Args:
            ids: ids in ``[0, vocab_size)``.

        Returns:
            The text.

        Example:
            >>> CharTokenizer("ab").decode([1, 0])
            'ba'
        """
        ids = check_token_ids(ids, self.vocab_size, "CharTokenizer")
        if self.unk_id is None or not (ids == self.unk_id).any():
            return self._codes[ids].tobytes().decode(_CODE_POINTS, _SURROGATES)
        table = [*self.chars, self.unk_token]
        return "".join(table[i] for i in ids.tolist())

    def to_config(self) -> dict[str, Any]:
        """``{"format", "kind": "char", "chars", "unk_token"}``."""
        return {
            "format": TOKENIZER_FORMAT,
            "kind": "char",
            "chars": "".join(self.chars),
            "unk_token": self.unk_token,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CharTokenizer:
        """Rebuilds the tokenizer :meth:`to_config` described.

        Args:
            config: the dict :meth:`to_config` returned.

        Returns:
            The tokenizer.

        Example:
            >>> CharTokenizer.from_config(CharTokenizer("ab").to_config()).chars
            ('a', 'b')
        """
        chars = config.get("chars")
        if not isinstance(chars, str):
            raise TypeError(f"[CharTokenizer] 'chars' must be a str, got {chars!r}")
        return cls(chars, config.get("unk_token"))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk_token={self.unk_token!r})"


class ByteTokenizer(Tokenizer):
    """One id per byte of the text's UTF-8 encoding: 256 ids, any text round trips exactly.

    Decoding ids that are not valid UTF-8 (a sample cut inside a character) puts U+FFFD
    in place of the broken bytes instead of failing.

    Example:
        >>> tokenizer = ByteTokenizer()
        >>> tokenizer.encode("é").tolist()
        [195, 169]
        >>> tokenizer.decode([195, 169])
        'é'
    """

    @property
    def vocab_size(self) -> int:
        """256."""
        return 256

    def encode(self, text: str) -> np.ndarray:
        """The UTF-8 bytes of ``text``.

        Args:
            text: the text; a lone surrogate (not encodable in UTF-8) is refused.

        Returns:
            A 1-D int32 array of values in ``[0, 256)``.

        Example:
            >>> ByteTokenizer().encode("A").tolist()
            [65]
        """
        check_text(text, "ByteTokenizer")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"[ByteTokenizer] character {_describe_char(text[err.start])} at position "
                f"{err.start} cannot be encoded in UTF-8 (a lone surrogate)"
            ) from None
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text whose UTF-8 bytes are ``ids``.

        Args:
            ids: ids in ``[0, 256)``.

        Returns:
            The text; invalid UTF-8 becomes U+FFFD.

        Example:
            >>> ByteTokenizer().decode([104, 105])
            'hi'
        """
        ids = check_token_ids(ids, 256, "ByteTokenizer")
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_config(self) -> dict[str, Any]:
        """``{"format", "kind": "byte"}``."""
        return {"format": TOKENIZER_FORMAT, "kind": "byte"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ByteTokenizer:
        """A :class:`ByteTokenizer` (it has no settings).

        Args:
            config: the dict :meth:`to_config` returned.

        Returns:
            The tokenizer.

        Example:
            >>> ByteTokenizer.from_config({"format": "gometal.tokenizer", "kind": "byte"})
            ByteTokenizer()
        """
        return cls()

    def __repr__(self) -> str:
        return "ByteTokenizer()"
