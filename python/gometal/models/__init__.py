"""Ready-made models built from ``gm.layers``: ``GPT``, a decoder-only language model in
the style of nanoGPT."""

from .gpt import GPT, gpt_weights_from_nanogpt

__all__ = ["GPT", "gpt_weights_from_nanogpt"]
