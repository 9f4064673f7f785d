"""The methods of ``Model`` that upper layers implement: model files and ONNX (io) and text
generation (models), each a call of a :mod:`gometal.nn.provided` function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import provided


class ModelServices:
    """``save``, ``load_weights``, ``export_onnx`` and ``generate``, mixed into ``Model``."""

    def save(self, path: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """Atomically writes the model's definition and weights (one safetensors file).

        Args:
            path: the file to create or replace, e.g. ``"model.safetensors"``.
            metadata: optional JSON-serializable dict stored with the model.

        Example:
            >>> model.save("mlp.safetensors")  # doctest: +SKIP
            >>> clone = gm.load_model("mlp.safetensors")  # doctest: +SKIP
        """
        provided.save_model(self, path, metadata)

    def load_weights(self, path: Any, *, allow_non_finite: bool = False) -> None:
        """Loads the weights of a model file or checkpoint with the same weight names.

        Args:
            path: a file written by ``model.save`` or ``trainer.save``.
            allow_non_finite: load weights holding NaN or infinities instead of refusing
                them.

        Raises:
            gm.serialization.CheckpointError: an invalid file, or weights that do not fit
                this model (every missing, unexpected or misshapen tensor is named).

        Example:
            >>> model.load_weights("mlp.safetensors")  # doctest: +SKIP
        """
        provided.load_weights(self, path, allow_non_finite=allow_non_finite)

    def export_onnx(self, path: Any, opset: int = 17) -> None:
        """Writes the model as an ONNX file with a dynamic batch dimension (atomically).

        Batch norm exports its running statistics and dropout is an identity, so a
        standard runtime (onnxruntime) gives the outputs of ``predict``.

        Args:
            path: the ``.onnx`` file to create or replace; its folder must exist.
            opset: the ONNX operator set version, 13 to 23.

        Raises:
            ValueError: ``opset`` is out of range.
            NotImplementedError: a layer type has no ONNX export rule (the layer is named).

        Example:
            >>> model.export_onnx("model.onnx")  # doctest: +SKIP
        """
        provided.export_onnx(self, path, opset)

    def generate(
        self,
        prompt: Any,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        seed: int = 0,
        kv_cache: bool = True,
        on_token: Callable[[int, np.ndarray], Any] | None = None,
    ) -> np.ndarray:
        """Continues ``prompt`` from this causal language model (``gm.models.GPT``, or an
        Embedding, LSTM/GRU/SimpleRNN, Dense stack): greedy or sampled, with the KV cache
        or the recurrent states in the engine; see ``gm.models.generate``.

        Args:
            prompt: 1-D token ids, or 2-D ``(N, T)`` to continue N prompts.
            max_new_tokens: tokens to add (>= 0).
            temperature: divides the logits before sampling (> 0).
            top_k: sample among the ``k`` most likely tokens only.
            top_p: sample among the most likely tokens holding this probability mass.
            greedy: take the most likely token instead of sampling.
            seed: the sampling generator's seed.
            kv_cache: keep keys and values, or recurrent states, in the engine (``False``
                recomputes the context for every token; the tokens are the same).
            on_token: called as ``on_token(step, token_ids)`` with the ``(N,)`` new
                tokens right after each is chosen; an exception it raises stops the
                generation and reaches the caller.

        Returns:
            The prompt followed by the new tokens, int32.

        Example:
            >>> ids = model.generate(tokenizer.encode("def "), 64, top_k=20)  # doctest: +SKIP
        """
        return provided.generate_tokens(
            self, prompt, max_new_tokens, temperature, top_k, top_p, greedy, seed, kv_cache,
            on_token,
        )  # fmt: skip
