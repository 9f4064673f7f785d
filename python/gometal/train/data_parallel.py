"""Data-parallel training across processes: what the training step and ``Trainer`` need.

A process joins a job with ``gm.distributed.init()`` (the distributed layer, above train),
which attaches the job's communicator to the compiled engine. From here on train talks to
that communicator only through ``gometal._core``: the step averages each gradient over the
ranks with the ``all_reduce_mean`` op (inside the compiled step, before the optimizer), and
a distributed ``Trainer`` checks that every rank built the same model, then copies rank 0's
weights to every rank.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _core
from ..graph.composites import op

# Seeds of different ranks' dropout streams lie this far apart (a large odd constant, the
# 64-bit golden ratio, so nearby seeds of nearby ranks never coincide).
_RANK_SEED_STRIDE = 0x9E3779B97F4A7C15
_SEED_MASK = (1 << 63) - 1
# The most float32 values one gradient all-reduce carries: 25 MiB, torch DDP's bucket_cap_mb.
BUCKET_FLOATS = 25 * 2**20 // 4
# Without GOMETAL_BUCKET_MB a bucket holds a sixteenth of the model's gradient values,
# within 64 Ki floats (256 KiB) and BUCKET_FLOATS: see default_bucket_floats.
DEFAULT_BUCKETS = 16
MIN_BUCKET_FLOATS = 2**16
# Environment variables: the bucket size in MiB, and "0" for blocking all-reduces.
BUCKET_VARIABLE = "GOMETAL_BUCKET_MB"
OVERLAP_VARIABLE = "GOMETAL_OVERLAP_ALLREDUCE"


def job_rank_and_size() -> tuple[int, int]:
    """``(rank, size)`` of this process's job; ``(0, 1)`` outside one.

    Example:
        >>> job_rank_and_size()
        (0, 1)
    """
    rank, size, _ = _core.communicator_info()
    return rank, size


def is_leading_rank() -> bool:
    """Whether this process prints progress and writes files: rank 0, or a lone process.

    Example:
        >>> is_leading_rank()
        True
    """
    return job_rank_and_size()[0] == 0


def wait_for_every_rank() -> None:
    """Returns once every rank of the job called it (at once outside a job).

    Example:
        >>> wait_for_every_rank()
    """
    if _core.communicator_info()[2]:
        _core.barrier()


def resolve_distributed(distributed: Any, optimizer: Any) -> bool:
    """``Trainer(distributed=...)``: ``None`` follows ``gm.distributed.init()``.

    Args:
        distributed: ``True``, ``False`` or ``None``.
        optimizer: the trainer's optimizer (a host-driven one cannot be distributed).

    Returns:
        Whether the training step averages gradients over the job's ranks.

    Raises:
        TypeError: ``distributed`` is not a bool or ``None``.
        ValueError: ``True`` before ``gm.distributed.init()``, or with L-BFGS.

    Example:
        >>> resolve_distributed(None, gm.optim.SGD())  # doctest: +SKIP
        False
    """
    attached = _core.communicator_info()[2]
    if distributed is None:
        distributed = attached
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True, False or None, got {distributed!r}")
    if distributed and not attached:
        raise ValueError(
            "Trainer(distributed=True) needs the job's communicator: call "
            "gm.distributed.init() first (in each process started by mpirun)"
        )
    if distributed and optimizer.host_driven:
        raise ValueError(
            f"distributed training needs an in-graph optimizer, got the host-driven "
            f"{type(optimizer).__name__}"
        )
    return distributed


def replica_seed(seed: int, distributed: bool) -> int:
    """The engine seed of this rank: its own dropout stream; rank 0, and a process that
    is not distributed, keep ``seed``.

    Example:
        >>> replica_seed(5, False)
        5
    """
    rank = job_rank_and_size()[0] if distributed else 0
    return seed if rank == 0 else (seed + rank * _RANK_SEED_STRIDE) & _SEED_MASK


def default_bucket_floats(gradient_floats: int) -> int:
    """The bucket size (floats) for a model of ``gradient_floats`` gradient values: a
    sixteenth of them, within ``MIN_BUCKET_FLOATS`` (256 KiB) and ``BUCKET_FLOATS`` (25 MiB).

    Only the last bucket's exchange waits after the backward pass, so smaller buckets hide
    more of the all-reduce, until each exchange's fixed cost (one more collective that
    every rank waits in) outweighs what it hides. Measured on D, the GPT's 3.1 MiB of
    gradients (``benchmarks/profile_allreduce.py --steps 60 --windows 6``, 2 ranks x 1
    thread, the 2-core machine at a load of 9 to 14): at this default, 0.25 MiB for D, 83,
    90 and 82 % of the all-reduce hidden (with MPI's own, polling waits; the default
    sleeping waits make the blocking reference far cheaper: see ``profile_allreduce.py``)
    and an overlapped step of 134 to 140 ms; in one
    25 MiB bucket (torch DDP's size, which holds all of D, so that nothing can overlap)
    -35, -14 and -17 % (noise about zero) and 175 to 240 ms. In other runs 0.19 MiB
    buckets hid 72 % (median of 5) and 0.39 MiB ones 65 %. Below 256 KiB a bucket is
    mostly fixed cost. Throughput, both sizes in one job (``benchmarks/
    bench_distributed_buckets.py``, load 16): a 25 MiB step took 0.91 to 1.08 times the
    default's on D (median of 5 runs 1.03: no loss) and 1.40 times on B. On an AMD EPYC
    (``bench_distributed.py --workloads D --bucket-mb 0.5 --env GOMETAL_BUCKET_MB=1``,
    other load 1.6-1.9 cores) the default ran 1.07x the samples/s of 1 MiB buckets (rounds
    1.05..1.24; per CPU-second 1.01x) and 0.96x those of 0.5 MiB ones (rounds 0.69..1.19;
    per CPU-second 0.98x, rounds 0.96..1.06): neither size is clearly better.

    Args:
        gradient_floats: the values of every gradient the step averages.

    Returns:
        The most floats one bucket holds.

    Example:
        >>> default_bucket_floats(809_856)  # workload D's GPT: 0.25 MiB buckets
        65536
    """
    share = -(-int(gradient_floats) // DEFAULT_BUCKETS)
    return min(BUCKET_FLOATS, max(MIN_BUCKET_FLOATS, share))


def bucket_floats_from_environment(gradient_floats: int | None = None) -> int:
    """The bucket size (floats): ``GOMETAL_BUCKET_MB`` MiB when set, else
    ``default_bucket_floats(gradient_floats)``, or 25 MiB when that is not given.

    Args:
        gradient_floats: the values of every gradient the step averages.

    Raises:
        ValueError: the variable is not a positive number.

    Example:
        >>> bucket_floats_from_environment() == BUCKET_FLOATS  # doctest: +SKIP
        True
    """
    text = os.environ.get(BUCKET_VARIABLE, "")
    if not text:
        if gradient_floats is None:
            return BUCKET_FLOATS
        return default_bucket_floats(gradient_floats)
    try:
        mib = float(text)
    except ValueError:
        mib = 0.0
    if not mib > 0:
        raise ValueError(f"{BUCKET_VARIABLE} must be a positive number of MiB, got {text!r}")
    return max(1, int(mib * 2**20) // 4)


def averaged_over_ranks(
    g: Any,
    grads: Mapping[str, int],
    bucket_floats: int | None = None,
    overlap: bool | None = None,
) -> dict[str, int]:
    """The gradients averaged over the job's ranks, in buckets: each bucket's gradients are
    flattened into one buffer that one all-reduce averages, then cut back apart.

    One collective per bucket rather than per gradient: every collective waits for the
    slowest rank, and on a loaded machine each wait costs a scheduling slice. Buckets take
    the gradients in the order the backward pass can finish them (``backward_order``),
    whatever order the parameters were declared in. With ``overlap`` each bucket but the last is an
    ``all_reduce_mean_start`` and an ``all_reduce_mean_wait``: the engine starts the
    exchange as soon as the bucket's last gradient exists and waits for it just before the
    first node that reads the mean (an optimizer update), so the exchange runs behind the
    rest of the backward pass. The last bucket, filled when the backward pass ends, has
    nothing left to hide behind and is one blocking ``all_reduce_mean``; that also keeps
    the backward pass's own chain out of the schedule's eager class (which holds a start
    and the nodes that only feed starts), so the earlier buckets' products and packing run
    as soon as they are ready rather than after the whole backward pass. Without
    ``overlap`` every bucket is blocking. The values are the same either way, bit for bit.

    Args:
        g: the training graph.
        grads: parameter name -> gradient node.
        bucket_floats: the most floats a bucket holds (a larger gradient is its own bucket);
            ``None``: ``GOMETAL_BUCKET_MB`` MiB when set, else ``default_bucket_floats``
            of the gradients' values.
        overlap: non-blocking buckets (start and wait) rather than blocking ones; ``None``:
            when the job has more than one rank (one rank has nothing to exchange) and
            ``GOMETAL_OVERLAP_ALLREDUCE`` is not ``0``.

    Returns:
        Parameter name -> the averaged gradient node, in the order of ``grads``.

    Example:
        >>> averaged_over_ranks(g, {"dense_0.weight": grad})  # doctest: +SKIP
    """
    sizes = {name: int(np.prod(g.shape(grad))) for name, grad in grads.items()}
    bucket_floats, overlap = bucket_settings(sum(sizes.values()), bucket_floats, overlap)
    averaged: dict[str, int] = {}
    ordered = {name: sizes[name] for name in backward_order(g, grads)}
    buckets = gradient_buckets(ordered, bucket_floats)
    for index, bucket in enumerate(buckets):
        last = index == len(buckets) - 1
        if len(bucket) == 1:
            averaged[bucket[0]] = bucket_mean(g, grads[bucket[0]], last, overlap)
            continue
        flat = [op(g, "reshape", grads[name], shape=[sizes[name]]) for name in bucket]
        reduced = bucket_mean(g, op(g, "concat", *flat, axis=0), last, overlap)
        start = 0
        for name in bucket:
            piece = op(g, "slice", reduced, axis=0, start=start, end=start + sizes[name])
            averaged[name] = op(g, "reshape", piece, shape=list(g.shape(grads[name])))
            start += sizes[name]
    return {name: averaged[name] for name in grads}


def bucket_settings(
    gradient_floats: int, bucket_floats: int | None, overlap: bool | None
) -> tuple[int, bool]:
    """``(bucket_floats, overlap)`` with ``None`` resolved as ``averaged_over_ranks`` says.

    Example:
        >>> bucket_settings(10, 100, False)
        (100, False)
    """
    if bucket_floats is None:
        bucket_floats = bucket_floats_from_environment(gradient_floats)
    if overlap is None:
        overlap = job_rank_and_size()[1] > 1 and os.environ.get(OVERLAP_VARIABLE, "1") != "0"
    return bucket_floats, overlap


def backward_order(g: Any, grads: Mapping[str, int]) -> list[str]:
    """The names of ``grads`` in the order the backward pass can finish their gradients:
    by each gradient node's depth (the longest path to it from the graph's sources), so a
    gradient that autodiff assembles late (a concatenation of a packed weight's pieces)
    still counts from the pieces it needs. Equal depths (gradients that are variables
    themselves) keep the reverse of the declaration order, as torch's DDP takes it.

    Args:
        g: the training graph.
        grads: parameter name -> gradient node.

    Returns:
        The names, the earliest gradient's first.

    Example:
        >>> backward_order(g, {"w1": grad_w1, "w2": grad_w2})  # doctest: +SKIP
        ['w2', 'w1']
    """
    depth: dict[int, int] = {}
    for root in grads.values():
        pending = [root]
        while pending:
            node = pending[-1]
            if node in depth:
                pending.pop()
                continue
            inputs = g.inputs_of(node)
            missing = [i for i in inputs if i not in depth]
            if missing:
                pending.extend(missing)
                continue
            depth[node] = 1 + max((depth[i] for i in inputs), default=-1)
            pending.pop()
    position = {name: index for index, name in enumerate(grads)}
    return sorted(grads, key=lambda name: (depth[grads[name]], -position[name]))


def gradient_buckets(sizes: Mapping[str, int], bucket_floats: int) -> list[list[str]]:
    """The gradients' names cut into buckets of at most ``bucket_floats`` values (a larger
    gradient is a bucket of its own), in the order of ``sizes`` (``backward_order``'s).

    Example:
        >>> gradient_buckets({"d": 12, "c": 1, "b": 5, "a": 12}, 10)
        [['d'], ['c', 'b'], ['a']]
    """
    buckets: list[list[str]] = []
    bucket: list[str] = []
    filled = 0
    for name in sizes:
        if bucket and filled + sizes[name] > bucket_floats:
            buckets.append(bucket)
            bucket, filled = [], 0
        bucket.append(name)
        filled += sizes[name]
    if bucket:
        buckets.append(bucket)
    return buckets


def bucket_mean(g: Any, value: int, last: bool, overlap: bool, parts: int = 0) -> int:
    """The mean of ``value`` over the ranks as one bucket's collective: a start and a wait
    when ``overlap`` and not ``last``, else one blocking ``all_reduce_mean``; with ``parts``
    only this rank's part of it (a reduce-scatter, the ops' ``parts`` attribute).

    Example:
        >>> mean = bucket_mean(g, flat_gradients, last=False, overlap=True)  # doctest: +SKIP
    """
    attrs = {"parts": parts} if parts else {}
    if last or not overlap:
        return op(g, "all_reduce_mean", value, **attrs)
    return op(g, "all_reduce_mean_wait", op(g, "all_reduce_mean_start", value, **attrs), value)


def use_sync_batch_norm(model: Any, enabled: bool = True) -> int:
    """Makes every ``BatchNorm`` of ``model`` combine its batch statistics over the job's
    ranks (``enabled``) or use its own rank's (the default, as torch's DDP); what
    ``Trainer(sync_batch_norm=True)`` calls before it builds its step (torch:
    ``SyncBatchNorm.convert_sync_batchnorm``).

    Args:
        model: a ``gm.Model``.
        enabled: the ``sync`` every batch norm layer gets.

    Returns:
        The number of batch norm layers changed.

    Example:
        >>> use_sync_batch_norm(model)  # doctest: +SKIP
        1
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"sync_batch_norm must be True or False, got {enabled!r}")
    changed = 0
    for layer in model.layers:
        if getattr(layer, "kind", "") == "batch_norm" and layer.sync != enabled:
            layer.sync = enabled
            changed += 1
    return changed


def _describe(engine: Any) -> list[list[Any]]:
    return [
        [name, list(engine.variable_shape(name)), engine.variable_dtype(name)]
        for name in engine.variable_names()
    ]


def first_difference(
    reference: Sequence[Sequence[Any]], mine: Sequence[Sequence[Any]], rank: int
) -> str:
    """How rank ``rank``'s variables differ from rank 0's, first difference only ("" if none).

    Args:
        reference: rank 0's ``[name, shape, dtype]`` entries, in declaration order.
        mine: rank ``rank``'s entries.
        rank: the rank ``mine`` comes from, for the message.

    Returns:
        E.g. ``"dense_1.weight has shape [8, 3] on rank 1, [8, 4] on rank 0"``.

    Example:
        >>> first_difference([["w", [2], "float32"]], [["w", [3], "float32"]], 1)
        'w has shape [3] on rank 1, [2] on rank 0'
    """
    here = f"on rank {rank}"
    for ours, theirs in zip(mine, reference):
        if ours[0] != theirs[0]:
            return f"variable {ours[0]} {here} where rank 0 has {theirs[0]}"
        if list(ours[1]) != list(theirs[1]):
            return f"{ours[0]} has shape {list(ours[1])} {here}, {list(theirs[1])} on rank 0"
        if ours[2] != theirs[2]:
            return f"{ours[0]} has dtype {ours[2]} {here}, {theirs[2]} on rank 0"
    if len(mine) != len(reference):
        extra = mine[len(reference)] if len(mine) > len(reference) else reference[len(mine)]
        return (
            f"{len(mine)} variables {here}, {len(reference)} on rank 0 "
            f"(the first without a match: {extra[0]})"
        )
    return ""


def broadcast_array(x: np.ndarray, root: int) -> np.ndarray:
    """A copy of ``root``'s ``x`` on every rank (the same shape and dtype on each); a copy
    of ``x`` outside a job.

    Example:
        >>> broadcast_array(np.arange(3), 0)
        array([0, 1, 2])
    """
    values = np.array(x, copy=True, order="C")
    if _core.communicator_info()[2]:
        _core.broadcast_bytes(values, root)
    return values


def _broadcast_text(text: str, root: int) -> str:
    """``root``'s ``text`` on every rank (the others' ``text`` is ignored)."""
    rank = job_rank_and_size()[0]
    encoded = np.frombuffer(text.encode(), np.uint8) if rank == root else None
    length = np.array([0 if encoded is None else encoded.size], np.int64)
    _core.broadcast_bytes(length, root)
    data = encoded.copy() if encoded is not None else np.zeros(int(length[0]), np.uint8)
    _core.broadcast_bytes(data, root)
    return data.tobytes().decode()


def synchronize_replicas(engine: Any) -> None:
    """Checks every rank holds the same variables, then gives every rank rank 0's values.

    Every rank raises the same ``ValueError`` when one differs (no rank waits on a
    collective the others skip).

    Args:
        engine: this rank's engine (held under its lock by the caller).

    Raises:
        ValueError: a rank's variables differ from rank 0's (names, shapes, dtypes),
            naming the rank and the first difference.

    Example:
        >>> synchronize_replicas(engine)  # doctest: +SKIP
    """
    rank, size = job_rank_and_size()
    mine = _describe(engine)
    reference = json.loads(_broadcast_text(json.dumps(mine), 0))
    difference = first_difference(reference, mine, rank)
    flags = np.zeros(size, np.float32)
    flags[rank] = 1.0 if difference else 0.0
    differing = np.flatnonzero(_core.all_reduce_sum(flags))
    if differing.size:
        first = int(differing[0])
        message = _broadcast_text(difference if rank == first else "", first)
        raise ValueError(
            f"distributed training: the model on rank {first} differs from rank 0's: {message}"
        )
    for name in engine.variable_names():
        value = np.array(engine.get_variable(name), order="C")
        _core.broadcast_bytes(value, 0)
        engine.set_variable(name, value)
