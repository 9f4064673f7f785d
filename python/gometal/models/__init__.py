"""Ready-made models built from ``gm.layers``: ``GPT``, a decoder-only language model in
the style of nanoGPT, and generation (``generate``) with the KV cache of ``KVCacheDecoder``
or a recurrent language model's states (``RecurrentDecoder``) in the engine."""

from .decoding import KVCacheDecoder
from .generation import filter_logits, generate
from .gpt import GPT, gpt_weights_from_nanogpt
from .recurrent_decoding import RecurrentDecoder

__all__ = [
    "GPT",
    "KVCacheDecoder",
    "RecurrentDecoder",
    "filter_logits",
    "generate",
    "gpt_weights_from_nanogpt",
]
