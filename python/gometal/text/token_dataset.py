"""Training windows over a token array: a split by position, random windows per epoch and a
loader of ``(x, y)`` batches for ``Trainer.fit``.

A window is ``block_size + 1`` consecutive tokens; ``x`` is its first ``block_size`` and
``y`` its last ``block_size``, so ``y[t]`` is the token that follows ``x[t]``. Where the
windows of an epoch start is a function of ``(seed, epoch)`` only, drawn as
``gm.training``'s array loader draws its epoch order (a NumPy ``SeedSequence`` keyed by the
epoch), so a resumed run sees the batches an uninterrupted one would have.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..base.arrays import check_batch_size, check_seed
from ..base.epochs import EpochCounter
from ..train.sharding import check_shard, rank_block
from .stream_loader import TokenStreamLoader
from .token_file import TokenFile
from .tokenizer_base import Tokenizer

# The random stream of each split, so a train and a validation loader with one seed draw
# unrelated windows.
SPLIT_STREAMS = {"train": 0, "validation": 1}


def window_starts(
    seed: int, epoch: int, count: int, num_windows: int, stream: int = 0
) -> np.ndarray:
    """Where the ``count`` windows of epoch ``epoch`` start, uniform in ``[0, num_windows)``.

    Args:
        seed: the loader's seed.
        epoch: the epoch number.
        count: how many windows to draw.
        num_windows: how many windows the tokens hold (``len(tokens) - block_size``).
        stream: separates the draws of loaders that share a seed (e.g. per split).

    Returns:
        An int64 array of ``count`` start positions.

    Example:
        >>> window_starts(0, 0, 4, 100).shape
        (4,)
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(epoch, stream))
    return np.random.default_rng(sequence).integers(0, num_windows, size=count, dtype=np.int64)


def split_by_position(
    tokens: np.ndarray, validation_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``1 - validation_fraction`` of the tokens and the rest, as views.

    Splitting by position (not by window) keeps every validation token out of training.

    Args:
        tokens: a 1-D token array (a memory map stays one).
        validation_fraction: the share of tokens, at the end, for validation, in ``[0, 1)``.

    Returns:
        ``(train, validation)``.

    Example:
        >>> train, validation = split_by_position(np.arange(10), 0.2)
        >>> train.tolist(), validation.tolist()
        ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    if isinstance(validation_fraction, bool) or not isinstance(
        validation_fraction, (int, float, np.floating)
    ):
        raise TypeError(f"validation_fraction must be a number, got {validation_fraction!r}")
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    cut = len(tokens) - round(len(tokens) * float(validation_fraction))
    return tokens[:cut], tokens[cut:]


class TokenWindows:
    """Every window of ``block_size + 1`` consecutive tokens of a 1-D token array.

    Args:
        tokens: the ids (a memory map is read only where windows are taken).
        block_size: the tokens of ``x`` (and of ``y``) per window.
        name: what the tokens are, for messages (``"the train split"``).

    Example:
        >>> windows = TokenWindows(np.arange(10), block_size=4)
        >>> x, y = windows.batch(np.array([0, 5]))
        >>> x.tolist(), y.tolist()
        ([[0, 1, 2, 3], [5, 6, 7, 8]], [[1, 2, 3, 4], [6, 7, 8, 9]])
    """

    def __init__(self, tokens: np.ndarray, block_size: int, name: str = "the tokens"):
        if getattr(tokens, "ndim", None) != 1:
            raise ValueError(f"[TokenWindows] tokens must be a 1-D array, got {tokens!r:.80}")
        self.block_size = check_batch_size(block_size, "block_size")
        if len(tokens) < self.block_size + 1:
            raise ValueError(
                f"[TokenWindows] block_size {self.block_size} needs at least "
                f"{self.block_size + 1} tokens, {name} has {len(tokens)}"
            )
        self.tokens = tokens
        self.name = name

    @property
    def num_windows(self) -> int:
        """How many start positions a window can have."""
        return len(self.tokens) - self.block_size

    def batch(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows starting at ``starts``, as ``(x, y)``.

        Args:
            starts: 1-D start positions in ``[0, num_windows)``.

        Returns:
            Two C-contiguous int32 arrays of shape ``(len(starts), block_size)``; ``y`` is
            ``x`` shifted by one token.

        Example:
            >>> x, y = TokenWindows(np.arange(6), block_size=3).batch(np.array([2]))
            >>> x.tolist(), y.tolist()
            ([[2, 3, 4]], [[3, 4, 5]])
        """
        starts = np.asarray(starts, dtype=np.int64)
        if starts.size and (starts.min() < 0 or starts.max() >= self.num_windows):
            raise ValueError(
                f"[TokenWindows] starts must be in [0, {self.num_windows}), got "
                f"{int(starts.min())}..{int(starts.max())}"
            )
        rows = np.asarray(self.tokens[starts[:, None] + np.arange(self.block_size + 1)])
        rows = rows.astype(np.int32)
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])

    def __len__(self) -> int:
        return self.num_windows


class TokenLoader(EpochCounter):
    """``batches_per_epoch`` batches of random windows per epoch, for ``Trainer.fit``.

    An epoch is a fixed number of batches (a corpus has far more windows than one pass
    needs). Iterating runs epoch ``epoch`` and moves to the next; ``set_epoch(e)`` makes the
    next iteration epoch ``e``, as ``fit`` does when it resumes.

    Args:
        windows: the :class:`TokenWindows` to draw from.
        batch_size: windows per batch.
        batches_per_epoch: batches per epoch.
        seed: seeds where the windows start (a non-negative int).
        stream: separates loaders that share a seed (see :data:`SPLIT_STREAMS`).
        shard: in a distributed job (``gm.distributed.init()``), ``batch_size`` is per
            rank: each batch of the job's ``size * batch_size`` windows is drawn as one
            process would draw it, and rank ``r`` takes its ``r``-th block of
            ``batch_size`` windows, so the ranks' draws are disjoint and N ranks at batch
            b read exactly what one process reads at batch N * b. ``None``: shard
            whenever the process is in a job; ``False``: every rank draws alike.

    Example:
        >>> loader = TokenLoader(windows, batch_size=12, batches_per_epoch=100)  # doctest: +SKIP
        >>> trainer.fit(loader, epochs=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        windows: TokenWindows,
        batch_size: int,
        batches_per_epoch: int,
        *,
        seed: int = 0,
        stream: int = 0,
        shard: bool | None = None,
    ):
        if not isinstance(windows, TokenWindows):
            raise TypeError(f"[TokenLoader] windows must be TokenWindows, got {windows!r:.80}")
        self.windows = windows
        self.batch_size = check_batch_size(batch_size)
        self.batches_per_epoch = check_batch_size(batches_per_epoch, "batches_per_epoch")
        self.seed = check_seed(seed)
        self.stream = check_seed(stream, "stream")
        self.shard_rank, self.shard_count = check_shard(shard)
        self._next_epoch = 0

    def epoch_starts(self, epoch: int) -> np.ndarray:
        """Where every window this rank reads in epoch ``epoch`` starts, one row per batch.

        Args:
            epoch: the epoch number.

        Returns:
            An int64 array of shape ``(batches_per_epoch, batch_size)``.

        Example:
            >>> loader.epoch_starts(0).shape  # doctest: +SKIP
            (200, 12)
        """
        job_batch = self.batch_size * self.shard_count
        count = self.batches_per_epoch * job_batch
        starts = window_starts(self.seed, epoch, count, self.windows.num_windows, self.stream)
        rows = starts.reshape(self.batches_per_epoch, job_batch)
        return rows[:, rank_block(self.shard_rank, self.batch_size)]

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = self.next_epoch()
        return (self.windows.batch(row) for row in self.epoch_starts(epoch))

    def __repr__(self) -> str:
        return (
            f"TokenLoader(batch_size={self.batch_size}, batches_per_epoch="
            f"{self.batches_per_epoch}, block_size={self.windows.block_size}, seed={self.seed})"
        )


class TokenDataset:
    """A token file (or array) split by position into train and validation windows.

    Args:
        source: a token file's path, an open :class:`TokenFile`, or a 1-D id array.
        block_size: the tokens of ``x`` per window.
        validation_fraction: the share of tokens, at the end, kept for validation.
        tokenizer: the tokenizer of an array ``source`` (a file carries its own).

    Example:
        >>> data = TokenDataset("corpus.tokens", block_size=64)  # doctest: +SKIP
        >>> train = data.loader("train", batch_size=12, batches_per_epoch=200)  # doctest: +SKIP
        >>> validation = data.loader("validation", 12, 20)  # doctest: +SKIP
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | TokenFile | np.ndarray,
        block_size: int,
        validation_fraction: float = 0.1,
        tokenizer: Tokenizer | None = None,
    ):
        if isinstance(source, (str, os.PathLike)):
            source = TokenFile(source)
        if isinstance(source, TokenFile):
            tokens: Any = source.tokens
            self.tokenizer: Tokenizer | None = source.tokenizer
        else:
            tokens = np.asarray(source)
            if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
                raise ValueError(
                    f"[TokenDataset] source must be a token file or a 1-D integer array, got "
                    f"shape {tokens.shape} and dtype {tokens.dtype}"
                )
            self.tokenizer = tokenizer
        self.tokens = tokens
        self.block_size = check_batch_size(block_size, "block_size")
        train, validation = split_by_position(tokens, validation_fraction)
        self.validation_fraction = float(validation_fraction)
        self.train = TokenWindows(train, self.block_size, "the train split")
        self.validation = (
            TokenWindows(validation, self.block_size, "the validation split")
            if validation_fraction > 0
            else None
        )

    def split(self, name: str) -> TokenWindows:
        """The windows of one split.

        Args:
            name: ``"train"`` or ``"validation"``.

        Returns:
            The split's :class:`TokenWindows`.

        Example:
            >>> data.split("validation").num_windows  # doctest: +SKIP
            28300
        """
        if name not in SPLIT_STREAMS:
            raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {name!r}")
        windows = self.train if name == "train" else self.validation
        if windows is None:
            raise ValueError("there is no validation split: validation_fraction is 0")
        return windows

    def loader(
        self,
        split: str,
        batch_size: int,
        batches_per_epoch: int,
        *,
        seed: int = 0,
        shard: bool | None = None,
    ) -> TokenLoader:
        """A :class:`TokenLoader` over one split.

        Args:
            split: ``"train"`` or ``"validation"``.
            batch_size: windows per batch (per rank in a distributed job).
            batches_per_epoch: batches per epoch.
            seed: seeds where the windows start.
            shard: shard the draws by rank in a distributed job (see :class:`TokenLoader`).

        Returns:
            The loader.

        Example:
            >>> loader = data.loader("train", 12, 200, seed=0)  # doctest: +SKIP
        """
        windows = self.split(split)
        return TokenLoader(
            windows,
            batch_size,
            batches_per_epoch,
            seed=seed,
            stream=SPLIT_STREAMS[split],
            shard=shard,
        )

    def stream_loader(
        self, split: str, batch_size: int, seq_len: int, *, seed: int = 0, shard: bool | None = None
    ) -> TokenStreamLoader:
        """A :class:`TokenStreamLoader` over one split: consecutive batches for truncated
        backpropagation through time.

        Args:
            split: ``"train"`` or ``"validation"``.
            batch_size: streams, one per batch row.
            seq_len: the tokens of ``x`` per row and batch.
            seed: seeds each epoch's starting offset.
            shard: give each rank of a distributed job its own block of streams (see
                :class:`TokenStreamLoader`).

        Returns:
            The loader.

        Example:
            >>> loader = data.stream_loader("train", 32, 64)  # doctest: +SKIP
        """
        windows = self.split(split)
        return TokenStreamLoader(
            windows.tokens,
            batch_size,
            seq_len,
            seed=seed,
            stream=SPLIT_STREAMS[split],
            shard=shard,
        )

    def __repr__(self) -> str:
        validation = 0 if self.validation is None else len(self.validation.tokens)
        return (
            f"TokenDataset(tokens={len(self.tokens)}, block_size={self.block_size}, "
            f"train_tokens={len(self.train.tokens)}, validation_tokens={validation})"
        )
