"""Byte-pair encoding through Hugging Face's ``tokenizers`` package.

A trained tokenizer works on bytes (a byte-level pre-tokenizer and decoder, as GPT-2's),
so any text encodes and decodes exactly, whatever characters the corpus held. The file it
saves is Hugging Face's ``tokenizer.json``, which ``tokenizers`` and ``transformers`` read
too; :meth:`BPETokenizer.from_file` loads any such file (BPE, WordPiece, Unigram, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..base.arrays import check_seed
from .tokenizer_base import Tokenizer, check_text, check_token_ids

# The 256 byte symbols of the byte-level alphabet every trained vocabulary starts with.
BYTE_ALPHABET_SIZE = 256


def _tokenizers_package() -> Any:
    try:
        import tokenizers
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError(
            "BPETokenizer needs Hugging Face's tokenizers package: pip install 'tokenizers>=0.23'"
        ) from err
    return tokenizers


class BPETokenizer(Tokenizer):
    """A Hugging Face ``tokenizers.Tokenizer`` behind gometal's tokenizer interface.

    ``encode`` adds no special tokens of a post-processor (a language model's corpus is
    plain text) and ``decode`` keeps special tokens, so ``decode(encode(text)) == text``
    for a byte-level tokenizer, special tokens included.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``.

    Example:
        >>> tokenizer = BPETokenizer.train(corpus, vocab_size=512)  # doctest: +SKIP
        >>> tokenizer.decode(tokenizer.encode("def f(): pass"))  # doctest: +SKIP
        'def f(): pass'
    """

    def __init__(self, tokenizer: Any):
        package = _tokenizers_package()
        if not isinstance(tokenizer, package.Tokenizer):
            raise TypeError(
                f"[BPETokenizer] takes a tokenizers.Tokenizer, got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        min_frequency: int = 2,
    ) -> BPETokenizer:
        """Learns byte-level BPE merges from a corpus.

        Args:
            texts: the corpus, one str or an iterable of str (documents, files).
            vocab_size: the final number of ids: the 256 bytes, the special tokens and the
                merges; at least ``256 + len(special_tokens)``.
            special_tokens: tokens matched whole in the text and never split (e.g.
                ``"<|endoftext|>"``); they take the first ids.
            min_frequency: a pair merges only if it occurs at least this often.

        Returns:
            The trained tokenizer.

        Example:
            >>> BPETokenizer.train("aaab" * 100, vocab_size=260).vocab_size  # doctest: +SKIP
            260
        """
        package = _tokenizers_package()
        texts = [texts] if isinstance(texts, str) else list(texts)
        for index, text in enumerate(texts):
            check_text(text, f"BPETokenizer.train: texts[{index}]")
        special_tokens = list(special_tokens)
        for token in special_tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(
                    f"[BPETokenizer] special_tokens must be non-empty strs, got {token!r}"
                )
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"[BPETokenizer] special_tokens repeat: {special_tokens}")
        smallest = BYTE_ALPHABET_SIZE + len(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
            raise TypeError(f"[BPETokenizer] vocab_size must be an int, got {vocab_size!r}")
        if vocab_size < smallest:
            raise ValueError(
                f"[BPETokenizer] vocab_size must be at least {smallest} (256 bytes + "
                f"{len(special_tokens)} special tokens), got {vocab_size}"
            )
        min_frequency = check_seed(min_frequency, "min_frequency")
        pre_tokenizers, decoders = package.pre_tokenizers, package.decoders
        tokenizer = package.Tokenizer(package.models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = package.trainers.BpeTrainer(
            vocab_size=int(vocab_size),
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Loads a Hugging Face ``tokenizer.json``.

        Args:
            path: the file.

        Returns:
            The tokenizer.

        Example:
            >>> tokenizer = BPETokenizer.from_file("tokenizer.json")  # doctest: +SKIP
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"[BPETokenizer] {os.fspath(path)!r} is not JSON: {err}") from None
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BPETokenizer:
        """The tokenizer of a parsed ``tokenizer.json``.

        Args:
            config: the file's JSON object.

        Returns:
            The tokenizer.

        Example:
            >>> BPETokenizer.from_config(json.load(open("tokenizer.json")))  # doctest: +SKIP
        """
        package = _tokenizers_package()
        try:
            tokenizer = package.Tokenizer.from_str(json.dumps(config))
        except Exception as err:  # noqa: BLE001  (tokenizers raises a bare Exception)
            raise ValueError(f"[BPETokenizer] not a valid tokenizer.json: {err}") from None
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        """The number of ids, added (special) tokens included."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def token_id(self, token: str) -> int:
        """The id of a token of the vocabulary (e.g. a special token).

        Args:
            token: the token's text.

        Returns:
            Its id.

        Example:
            >>> tokenizer.token_id("<|endoftext|>")  # doctest: +SKIP
            0
        """
        found = self.tokenizer.token_to_id(token)
        if found is None:
            raise KeyError(f"[BPETokenizer] token {token!r} is not in the vocabulary")
        return int(found)

    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text``.

        Args:
            text: the text.

        Returns:
            A 1-D int32 array.

        Example:
            >>> tokenizer.encode("hello").dtype  # doctest: +SKIP
            dtype('int32')
        """
        encoding = self.tokenizer.encode(check_text(text, "BPETokenizer"), add_special_tokens=False)
        return np.asarray(encoding.ids, dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids``, special tokens kept.

        Args:
            ids: ids in ``[0, vocab_size)``.

        Returns:
            The text.

        Example:
            >>> tokenizer.decode(tokenizer.encode("hello"))  # doctest: +SKIP
            'hello'
        """
        ids = check_token_ids(ids, self.vocab_size, "BPETokenizer")
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=False)

    def to_config(self) -> dict[str, Any]:
        """The ``tokenizer.json`` content, as a dict."""
        return json.loads(self.tokenizer.to_str())

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
