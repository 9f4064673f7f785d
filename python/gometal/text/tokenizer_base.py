"""The interface every tokenizer of ``gometal.text`` shares, and the checks they all use.

A tokenizer turns text into an int32 array of ids in ``[0, vocab_size)`` and back, and saves
itself as one JSON file that :func:`gometal.text.load_tokenizer` reads. gometal's own
tokenizers write ``{"format": "gometal.tokenizer", "kind": ..., ...}``; a BPE tokenizer
writes Hugging Face's ``tokenizer.json`` unchanged, so other tools can read it too.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..base.atomic import write_atomically

# The "format" value of the JSON files gometal's own tokenizers write.
TOKENIZER_FORMAT = "gometal.tokenizer"


class Tokenizer(abc.ABC):
    """Text to int32 token ids and back; subclasses define the vocabulary.

    Example:
        >>> tokenizer = ByteTokenizer()  # doctest: +SKIP
        >>> tokenizer.decode(tokenizer.encode("héllo"))  # doctest: +SKIP
        'héllo'
    """

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """The number of ids: every id the tokenizer produces is in ``[0, vocab_size)``."""

    @abc.abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text``.

        Args:
            text: the text to encode.

        Returns:
            A 1-D int32 array.
        """

    @abc.abstractmethod
    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids``.

        Args:
            ids: a 1-D sequence of ids in ``[0, vocab_size)``.

        Returns:
            The decoded text.
        """

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """The JSON-ready description :func:`gometal.text.tokenizer_from_config` rebuilds."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the tokenizer as one JSON file, atomically.

        Args:
            path: the file to write; its folder must exist.

        Example:
            >>> tokenizer.save("tokenizer.json")  # doctest: +SKIP
        """
        text = json.dumps(self.to_config(), ensure_ascii=False, indent=1)
        write_atomically(path, text.encode("utf-8"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return type(self) is type(other) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.vocab_size))


def check_text(text: Any, owner: str) -> str:
    """Returns ``text`` when it is a ``str``, else raises ``TypeError`` naming ``owner``.

    Args:
        text: what a caller passed as text.
        owner: the tokenizer or function, for the message.

    Returns:
        ``text``.

    Example:
        >>> check_text("abc", "ByteTokenizer")
        'abc'
    """
    if not isinstance(text, str):
        raise TypeError(f"[{owner}] encode takes a str, got {type(text).__name__}")
    return text


def check_token_ids(ids: Any, vocab_size: int, owner: str) -> np.ndarray:
    """``ids`` as a 1-D int64 array, after checking every id is in ``[0, vocab_size)``.

    Args:
        ids: a 1-D sequence or array of integer ids.
        vocab_size: the tokenizer's number of ids.
        owner: the tokenizer's name, for the messages.

    Returns:
        The ids as a 1-D int64 array.

    Example:
        >>> check_token_ids([1, 2], 4, "CharTokenizer").tolist()
        [1, 2]
    """
    array = np.asarray(ids)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"[{owner}] ids must be 1-D, got shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"[{owner}] ids must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    outside = np.flatnonzero((array < 0) | (array >= vocab_size))
    if outside.size:
        index = int(outside[0])
        raise ValueError(
            f"[{owner}] id {int(array[index])} at position {index} is outside the "
            f"vocabulary [0, {vocab_size})"
        )
    return array
