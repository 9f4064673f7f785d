"""What an evaluation adds up batch by batch, and its pooling over a distributed job.

Each rank of a job evaluates its own shard (``ArrayLoader``'s exact shards read every
sample once). Pooling sums the ranks' sums and counts, never their averages, so the
loss and accuracy are those of one process over the whole set, however unevenly the
samples fell; the metrics merge every rank's state (``state()``/``merge_state()``), or,
for a metric without one (a user's), are fed every rank's labels and outputs, in rank
order, so any streaming metric gives the whole set's value. Every rank pools the same bytes in the same order and so gets the
same numbers, bit for bit.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from .metrics import AccuracyTotals


def pools_over_ranks(trainer: Any, batches: Any) -> bool:
    """Whether results over ``batches`` pool over the job's ranks: the trainer is
    distributed (every rank holds the same weights) and the loader yields only this rank's
    part of the data (sharded over a job of several ranks: its ``shard_count`` is above 1).

    Example:
        >>> pools_over_ranks(trainer, [])  # doctest: +SKIP
        False
    """
    count = getattr(batches, "shard_count", 1)
    sharded = isinstance(count, int) and count > 1 and _core.communicator_info()[2]
    return sharded and trainer.distributed


def exact_shard(batches: Any) -> Any:
    """The batches of a sharded loader without the padding training shards carry (a loader
    with ``iterate(pad_shards=...)``); other loaders as they are.

    Example:
        >>> exact_shard([1, 2])
        [1, 2]
    """
    iterate = getattr(batches, "iterate", None)
    return iterate(pad_shards=False) if callable(iterate) else batches


def _pooled_totals(a: AccuracyTotals | None, b: AccuracyTotals | None) -> Any:
    if a is None:
        return b
    return a if b is None else a + b


@dataclass
class EvaluationSums:
    """The sums of some batches' evaluation.

    Attributes:
        loss_sum: the sum over batches of (batch loss x batch samples).
        seen: the samples.
        totals: the pooled accuracy sums (``None`` before any batch).
        output_loss: per output of a multi-output model, its loss sum.
        output_totals: per output, its accuracy sums.
        metric_inputs: ``(output or None, labels, outputs)`` per batch, kept only while
            the metrics are fed after pooling.
    """

    loss_sum: float = 0.0
    seen: int = 0
    totals: AccuracyTotals | None = None
    output_loss: dict[str, float] = field(default_factory=dict)
    output_totals: dict[str, AccuracyTotals] = field(default_factory=dict)
    metric_inputs: list[tuple[str | None, Any, Any]] = field(default_factory=list)

    def add_batch(self, batch: Any) -> None:
        """Adds one ``BatchEvaluation`` (its loss is the batch mean)."""
        count = len(batch.labels)
        self.loss_sum += batch.loss * count
        self.totals = _pooled_totals(self.totals, batch.totals)
        self.seen += count
        for output, evaluation in batch.per_output.items():
            self.output_loss[output] = self.output_loss.get(output, 0.0) + evaluation.loss * count
            self.output_totals[output] = _pooled_totals(
                self.output_totals.get(output), evaluation.totals
            )

    def merge(self, other: EvaluationSums) -> EvaluationSums:
        """These sums and ``other``'s, pooled (``other``'s metric inputs after these)."""
        output_loss = dict(self.output_loss)
        output_totals = dict(self.output_totals)
        for output, loss_sum in other.output_loss.items():
            output_loss[output] = output_loss.get(output, 0.0) + loss_sum
            output_totals[output] = _pooled_totals(
                output_totals.get(output), other.output_totals[output]
            )
        return EvaluationSums(
            self.loss_sum + other.loss_sum,
            self.seen + other.seen,
            _pooled_totals(self.totals, other.totals),
            output_loss,
            output_totals,
            [*self.metric_inputs, *other.metric_inputs],
        )


def gather_from_ranks(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` outside a job).

    Pickled and exchanged in two all-gathers whatever the job's size (the lengths, then
    the pickles padded to the longest): exact, for any picklable value, and meant for
    results (a few arrays), not for bulk data.

    Args:
        value: this rank's value.

    Returns:
        The list of the ranks' values.

    Example:
        >>> gather_from_ranks({"seen": 3})
        [{'seen': 3}]
    """
    if not _core.communicator_info()[2]:
        return [value]
    mine = np.frombuffer(pickle.dumps(value), np.uint8)
    lengths = _core.all_gather_bytes(np.array([mine.size], np.int64))[:, 0]
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: mine.size] = mine
    pickles = _core.all_gather_bytes(padded)
    # This rank's value is unpickled too, so every rank holds equal objects built alike.
    return [pickle.loads(data[:length].tobytes()) for data, length in zip(pickles, lengths)]


def pooled_over_ranks(sums: EvaluationSums) -> EvaluationSums:
    """The sums of every rank's shard, on every rank (rank 0's first).

    Example:
        >>> pooled_over_ranks(EvaluationSums(loss_sum=2.0, seen=4)).seen
        4
    """
    pooled = EvaluationSums()
    for ranks_sums in gather_from_ranks(sums):
        pooled = pooled.merge(ranks_sums)
    return pooled
