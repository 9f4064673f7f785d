"""Text for language models: tokenizers, token files and their training windows, and a
corpus that ships with Python.

- Tokenizers share one interface (``encode(text) -> int32 ids``, ``decode(ids)``,
  ``vocab_size``, ``save(path)``): :class:`CharTokenizer` (one id per character of a
  corpus), :class:`ByteTokenizer` (one id per UTF-8 byte) and :class:`BPETokenizer`
  (Hugging Face's ``tokenizers``: train one or load a ``tokenizer.json``);
  :func:`load_tokenizer` reads any of them back.
- :func:`write_token_file` tokenizes a corpus once into a file that :class:`TokenFile`
  memory-maps (:func:`cached_token_file` reuses a current one); :class:`TokenDataset`
  splits it by position and :class:`TokenLoader` yields ``(x, y)`` int32 batches of
  random windows, deterministic per seed and epoch; :class:`TokenStreamLoader` yields
  consecutive batches whose rows continue each other, for truncated backpropagation
  through time.
- :func:`stdlib_corpus`: the source of a fixed list of standard-library modules.

Example:
    >>> import gometal.text as text  # doctest: +SKIP
    >>> corpus = text.stdlib_corpus()  # doctest: +SKIP
    >>> text.write_token_file("corpus.tokens", corpus.text, text.ByteTokenizer())  # doctest: +SKIP
    >>> data = text.TokenDataset("corpus.tokens", block_size=64)  # doctest: +SKIP
    >>> loader = data.loader("train", batch_size=12, batches_per_epoch=200)  # doctest: +SKIP
"""

from .bpe import BPETokenizer
from .loading import load_tokenizer, tokenizer_from_config
from .simple_tokenizers import ByteTokenizer, CharTokenizer
from .stdlib_corpus import STDLIB_CORPUS_MODULES, StdlibCorpus, stdlib_corpus
from .stream_loader import TokenStreamLoader
from .token_dataset import (
    TokenDataset,
    TokenLoader,
    TokenWindows,
    split_by_position,
    window_starts,
)
from .token_file import (
    TokenFile,
    cached_token_file,
    text_sha256,
    token_dtype,
    write_token_file,
    write_token_ids,
)
from .tokenizer_base import Tokenizer, check_token_ids

__all__ = [
    "STDLIB_CORPUS_MODULES",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "StdlibCorpus",
    "TokenDataset",
    "TokenFile",
    "TokenLoader",
    "TokenStreamLoader",
    "TokenWindows",
    "Tokenizer",
    "cached_token_file",
    "check_token_ids",
    "load_tokenizer",
    "split_by_position",
    "stdlib_corpus",
    "text_sha256",
    "token_dtype",
    "tokenizer_from_config",
    "window_starts",
    "write_token_file",
    "write_token_ids",
]
