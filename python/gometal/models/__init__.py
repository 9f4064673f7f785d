"""Ready-made models built from ``gm.layers``: ``GPT``, a decoder-only language model in
the style of nanoGPT."""

from .generation import filter_logits, generate
from .gpt import GPT, gpt_weights_from_nanogpt

__all__ = ["GPT", "filter_logits", "generate", "gpt_weights_from_nanogpt"]
