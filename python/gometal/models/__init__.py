"""Ready-made models built from ``gm.layers``: ``GPT``, a decoder-only language model in
the style of nanoGPT, and its generation (``generate``, with the KV cache of
``KVCacheDecoder`` in the engine)."""

from .decoding import KVCacheDecoder
from .generation import filter_logits, generate
from .gpt import GPT, gpt_weights_from_nanogpt

__all__ = ["GPT", "KVCacheDecoder", "filter_logits", "generate", "gpt_weights_from_nanogpt"]
