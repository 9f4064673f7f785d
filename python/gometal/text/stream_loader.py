"""Consecutive batches for truncated backpropagation through time: the tokens are cut into
``batch_size`` streams, and row ``i`` of batch ``b + 1`` continues row ``i`` of batch ``b``,
so a recurrent model that carries its final states into the next batch reads each stream
in order (as Keras's stateful RNNs and char-rnn's batching do).

An epoch starts its streams at an offset in ``[0, seq_len)`` drawn from ``(seed, epoch)``
only, so the cuts between windows move from one epoch to the next and a resumed run sees
the batches an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..base.arrays import check_batch_size, check_seed
from ..base.epochs import EpochCounter
from ..train.sharding import check_shard, rank_block


class TokenStreamLoader(EpochCounter):
    """``(x, y)`` batches whose rows continue the previous batch's rows.

    Attributes:
        stateful: always ``True``: ``fit`` carries a stateful model's states from one batch
            to the next and resets them at each epoch's start.

    Args:
        tokens: a 1-D array of token ids (a memory map is read only where batches are taken).
        batch_size: streams, one per batch row.
        seq_len: the tokens of ``x`` (and of ``y``) per row and batch.
        seed: seeds each epoch's starting offset (a non-negative int).
        stream: separates loaders that share a seed (e.g. per split).
        shard: in a distributed job (``gm.distributed.init()``), ``batch_size`` is per
            rank: the tokens are cut into the job's ``size * batch_size`` streams and rank
            ``r`` reads the ``r``-th block of ``batch_size`` of them, so the ranks read
            disjoint tokens and N ranks at batch b read what one process reads at batch
            N * b. ``None``: shard whenever the process is in a job; ``False``: every rank
            reads all ``batch_size`` streams alike.

    Example:
        >>> loader = TokenStreamLoader(np.arange(10_000), batch_size=32, seq_len=64)
        >>> trainer.fit(loader, epochs=3)  # doctest: +SKIP
    """

    stateful = True

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        seq_len: int,
        *,
        seed: int = 0,
        stream: int = 0,
        shard: bool | None = None,
    ):
        tokens_array = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
        if tokens_array.ndim != 1 or not np.issubdtype(tokens_array.dtype, np.integer):
            raise ValueError(
                f"[TokenStreamLoader] tokens must be a 1-D integer array, got shape "
                f"{tokens_array.shape} and dtype {tokens_array.dtype}"
            )
        self.tokens = tokens_array
        self.batch_size = check_batch_size(batch_size)
        self.seq_len = check_batch_size(seq_len, "seq_len")
        self.seed = check_seed(seed)
        self.stream = check_seed(stream, "stream")
        self.shard_rank, self.shard_count = check_shard(shard)
        # The last epoch offset is seq_len - 1; every stream still needs one full batch.
        streams = self.batch_size * self.shard_count
        needed = streams * (self.seq_len + 1) + self.seq_len - 1
        if len(self.tokens) < needed:
            ranks = f" x {self.shard_count} ranks" if self.shard_count > 1 else ""
            raise ValueError(
                f"[TokenStreamLoader] batch_size {self.batch_size}{ranks} x seq_len "
                f"{self.seq_len} needs at least {needed} tokens, got {len(self.tokens)}"
            )
        self._next_epoch = 0

    def offset(self, epoch: int) -> int:
        """Where epoch ``epoch``'s first stream starts, in ``[0, seq_len)``."""
        sequence = np.random.SeedSequence(self.seed, spawn_key=(epoch, self.stream))
        return int(np.random.default_rng(sequence).integers(0, self.seq_len))

    def stream_length(self, epoch: int) -> int:
        """The tokens each stream of epoch ``epoch`` holds (the same for every stream)."""
        return (len(self.tokens) - self.offset(epoch)) // (self.batch_size * self.shard_count)

    def batches_in(self, epoch: int) -> int:
        """How many batches epoch ``epoch`` has: every ``x`` needs its next token in ``y``."""
        return (self.stream_length(epoch) - 1) // self.seq_len

    def epoch_batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of epoch ``epoch``, in order.

        Args:
            epoch: the epoch number.

        Returns:
            An iterator of ``(x, y)``: C-contiguous int32 arrays ``(batch_size, seq_len)``;
            ``y`` is ``x`` shifted by one token within its stream.

        Example:
            >>> x, y = next(loader.epoch_batches(0))  # doctest: +SKIP
        """
        start = self.offset(epoch)
        length = self.stream_length(epoch)
        streams = np.arange(self.batch_size * self.shard_count, dtype=np.int64)
        stream_starts = (start + streams * length)[rank_block(self.shard_rank, self.batch_size)]
        columns = np.arange(self.seq_len + 1, dtype=np.int64)
        for b in range(self.batches_in(epoch)):
            index = stream_starts[:, None] + b * self.seq_len + columns
            rows = np.asarray(self.tokens[index]).astype(np.int32)
            yield np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])

    def __len__(self) -> int:
        return self.batches_in(self._next_epoch)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.epoch_batches(self.next_epoch())

    def __repr__(self) -> str:
        return (
            f"TokenStreamLoader(tokens={len(self.tokens)}, batch_size={self.batch_size}, "
            f"seq_len={self.seq_len}, seed={self.seed})"
        )
