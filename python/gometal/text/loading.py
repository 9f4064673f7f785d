"""Reading any saved tokenizer back: gometal's own JSON files and Hugging Face's."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .bpe import BPETokenizer
from .simple_tokenizers import ByteTokenizer, CharTokenizer
from .tokenizer_base import TOKENIZER_FORMAT, Tokenizer

# The "kind" of each of gometal's own tokenizer files.
TOKENIZER_KINDS = {"char": CharTokenizer, "byte": ByteTokenizer}


def tokenizer_from_config(config: Any) -> Tokenizer:
    """The tokenizer a ``to_config()`` dict (or a ``tokenizer.json`` object) describes.

    Args:
        config: a dict with ``"format": "gometal.tokenizer"`` and a ``"kind"``, or the JSON
            object of a Hugging Face ``tokenizer.json`` (it has a ``"model"``).

    Returns:
        The tokenizer.

    Example:
        >>> tokenizer_from_config(ByteTokenizer().to_config())
        ByteTokenizer()
    """
    if not isinstance(config, dict):
        raise TypeError(f"a tokenizer description must be a JSON object, got {config!r:.80}")
    if config.get("format") == TOKENIZER_FORMAT:
        kind = config.get("kind")
        if kind not in TOKENIZER_KINDS:
            raise ValueError(
                f"unknown tokenizer kind {kind!r}; expected one of {sorted(TOKENIZER_KINDS)}"
            )
        return TOKENIZER_KINDS[kind].from_config(config)
    if "model" in config:
        return BPETokenizer.from_config(config)
    raise ValueError(
        f"not a tokenizer description: expected 'format': {TOKENIZER_FORMAT!r} or a Hugging "
        f"Face tokenizer.json (with 'model'), got the keys {sorted(config)}"
    )


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Loads a tokenizer saved by ``Tokenizer.save`` or a Hugging Face ``tokenizer.json``.

    Args:
        path: the JSON file.

    Returns:
        A :class:`CharTokenizer`, :class:`ByteTokenizer` or :class:`BPETokenizer`.

    Example:
        >>> tokenizer = load_tokenizer("tokenizer.json")  # doctest: +SKIP
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"tokenizer file {os.fspath(path)!r} is not JSON: {err}") from None
    try:
        return tokenizer_from_config(config)
    except (TypeError, ValueError) as err:
        raise type(err)(f"tokenizer file {os.fspath(path)!r}: {err}") from None
