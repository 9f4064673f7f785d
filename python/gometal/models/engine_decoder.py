"""What the incremental decoders (``KVCacheDecoder``, ``RecurrentDecoder``) share: an engine
holding a copy of the model's weights and the state of ``batch_size`` sequences, checks of
the token ids they are given, and the lock a caller holds for a whole generation."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .. import _core
from ..nn.model import Model


class EngineDecoder:
    """The base of a decoder whose engine defines ``prefill`` and ``decode`` for a model.

    A subclass builds its graph, then calls ``start(engine)``; messages name the subclass.

    Args:
        model: the language model whose weights the engine copies.
        batch_size: sequences decoded together.

    Raises:
        ValueError: the batch size is not a positive int.

    Example:
        >>> class MyDecoder(EngineDecoder): ...  # doctest: +SKIP
    """

    def __init__(self, model: Model, batch_size: int):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"{type(self).__name__} batch_size must be a positive int, got {batch_size!r}"
            )
        self.model, self.batch_size = model, batch_size
        # Held by a caller for a whole generation: the state belongs to one sequence batch.
        self.lock = threading.Lock()
        self._length = 0
        self._engine: _core.Engine | None = None

    def start(self, engine: _core.Engine) -> None:
        """Takes the compiled engine and copies the model's weights into it.

        Args:
            engine: the engine defining ``prefill`` and ``decode``.

        Example:
            >>> self.start(_core.Engine(graph, seed=model.seed))  # doctest: +SKIP
        """
        self._engine = engine
        self.sync_weights()

    @property
    def engine(self) -> _core.Engine:
        """The decoder's engine (``start`` gave it).

        Example:
            >>> decoder.engine.stats()["plans"]  # doctest: +SKIP
            2
        """
        if self._engine is None:
            raise RuntimeError(f"{type(self).__name__} has no engine yet: call start first")
        return self._engine

    @property
    def length(self) -> int:
        """Tokens read since the last prefill (the next token's position)."""
        return self._length

    def sync_weights(self) -> None:
        """Copies the model's current weights into the decoder (after training, say).

        Example:
            >>> decoder.sync_weights()  # doctest: +SKIP
        """
        for name, value in self.model.get_weights().items():
            self.engine.set_variable(name, value)

    def _tokens(self, ids: Any, what: str) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(
                f"{type(self).__name__} {what} must hold integer token ids, got dtype {ids.dtype}"
            )
        return np.ascontiguousarray(ids, dtype=np.int32)

    def prefill_ids(self, ids: Any) -> np.ndarray:
        """``ids`` as ``(batch_size, T)`` int32 with ``T >= 1``, or a ``TypeError`` or
        ``ValueError`` naming the decoder and the shape it got.

        Example:
            >>> decoder.prefill_ids([[1, 2, 3]]).shape  # doctest: +SKIP
            (1, 3)
        """
        ids = self._tokens(ids, "prefill ids")
        if ids.ndim != 2 or ids.shape[0] != self.batch_size or ids.shape[1] < 1:
            raise ValueError(
                f"{type(self).__name__} prefill ids must be (batch_size, T) = "
                f"({self.batch_size}, T) with T >= 1, got shape {ids.shape}"
            )
        return ids

    def decode_tokens(self, tokens: Any) -> np.ndarray:
        """``tokens`` as ``(batch_size, 1)`` int32 (one per sequence), or a ``TypeError`` or
        ``ValueError`` naming the decoder and the shape it got.

        Example:
            >>> decoder.decode_tokens([7]).shape  # doctest: +SKIP
            (1, 1)
        """
        tokens = self._tokens(tokens, "decode tokens")
        if tokens.shape != (self.batch_size,):
            raise ValueError(
                f"{type(self).__name__} decode tokens must be ({self.batch_size},), got shape "
                f"{tokens.shape}"
            )
        return tokens.reshape(-1, 1)

    def stats(self) -> dict[str, Any]:
        """The engine's counters (``plans``, ``allocations``, ``steps``, ...), to check that
        decoding compiles no plan per token.

        Example:
            >>> decoder.stats()["plans"]  # doctest: +SKIP
            2
        """
        return dict(self.engine.stats())
