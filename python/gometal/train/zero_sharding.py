"""ZeRO stage 1: optimizer state sharded over the ranks of a data-parallel job.

``ZeroRedundancyOptimizer(gm.optim.Adam(...))`` (the name and the wrapping of torch's
``torch.distributed.optim.ZeroRedundancyOptimizer``, DeepSpeed's ``zero_optimization.stage
= 1``) is given to a distributed ``Trainer`` in place of the optimizer it wraps. Every
parameter is cut, flattened, into ``size`` equal shards (the last padded with zeros); rank r
keeps the optimizer slots of shard r only (``<param>.exp_avg`` has ``ceil(n / size)``
values instead of ``n``), updates that shard from the averaged gradient, and an
``all_gather`` gives every rank the whole updated parameter. The update is the wrapped
optimizer's, shard by shard, so the weights are those of the unsharded run (within float32
rounding: Adam's fused kernel runs as its decomposition here) and bit-identical across ranks.
A shard's offset is the one value of the graph that differs between ranks; the collectives,
their order and their sizes are the same on every rank.

The gradients are not all-reduced whole: each bucket of them is laid out rank by rank
(every parameter's shard 0, then every shard 1, ...) and reduce-scattered (the all-reduce
ops with ``parts``), so rank r receives only the mean of its shards, half the traffic of an
all-reduce in a ring. The buckets overlap the backward pass as ``averaged_over_ranks``'s
do. Norm clipping reads the global norm: each rank's sum of squares of its shards, summed
over the ranks. With two ranks a shard's mean is the all-reduce's, bit for bit.

Checkpoints hold whole slots, as an unsharded run stores them, so a ZeRO-1 checkpoint
resumes with or without ZeRO: ``Trainer.save`` (on every rank) puts every rank's shards
together (``unsharded_state``, a collective) and ``Trainer.load`` cuts them back to this
rank's shard (``sharded_state``).

Example:
    >>> gm.distributed.init()  # doctest: +SKIP
    >>> optimizer = ZeroRedundancyOptimizer(gm.optim.Adam(1e-3))  # doctest: +SKIP
    >>> trainer = gm.Trainer(model, "cross_entropy", optimizer)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from .. import _core
from ..graph.composites import const, op
from . import optim
from .data_parallel import (
    backward_order,
    broadcast_array,
    bucket_mean,
    bucket_settings,
    gradient_buckets,
    job_rank_and_size,
)
from .optim.clipping import NORM_EPSILON, clip_by_value
from .session import SessionState


def shard_length(values: int, ranks: int) -> int:
    """The values of one rank's shard of a parameter of ``values`` values: ``ceil(values /
    ranks)`` (the last shard padded with zeros).

    Example:
        >>> shard_length(10, 3)
        4
    """
    return -(-values // ranks)


class _ShardUpdates:
    """A graph view for the wrapped optimizer: it reads shards as its parameters, and its
    writes of a shard become an all-gather of the new shard into the whole parameter."""

    def __init__(self, graph: _core.Graph, shards: Mapping[int, tuple[int, tuple[int, ...]]]):
        self._graph = graph
        self._shards = dict(shards)  # shard node -> (parameter variable, parameter shape)
        self._ranks = job_rank_and_size()[1]
        self.slot_writes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)

    def op(self, name: str, inputs: list[int], attrs: Mapping[str, Any] | None = None) -> int:
        """``_core.Graph.op``, with writes of a shard turned into writes of its parameter."""
        attrs = dict(attrs or {})
        if name == "assign" and inputs[0] in self._shards:
            return self._write_parameter(inputs[0], inputs[1])
        if name == "adam_update" and inputs[0] in self._shards:
            return self._adam(inputs, attrs)
        return self._graph.op(name, list(inputs), attrs)

    def _write_parameter(self, shard: int, new_shard: int) -> int:
        g = self._graph
        variable, shape = self._shards[shard]
        size = int(np.prod(shape))
        whole = g.op("all_gather", [new_shard], {"parts": self._ranks})
        if int(g.shape(whole)[0]) != size:
            whole = op(g, "slice", whole, axis=0, start=0, end=size)
        return g.op("assign", [variable, op(g, "reshape", whole, shape=list(shape))], {})

    def _adam(self, inputs: list[int], attrs: Mapping[str, Any]) -> int:
        # The fused adam_update writes in place; here its registry decomposition, so that
        # the new shard is a value to gather (the kernel forms 1 - beta in float32 too).
        if len(inputs) != 6:
            raise ValueError(
                "ZeroRedundancyOptimizer does not combine with loss scaling (a guarded "
                "adam_update); train without loss_scaling"
            )
        g = self._graph
        param, avg, avg_sq, grad, step_size, correction = inputs
        one = np.float32(1.0)
        if attrs.get("weight_decay", 0.0):
            grad = op(g, "add", grad, op(g, "mul", const(g, attrs["weight_decay"]), param))
        keep1 = float(one - np.float32(attrs["beta1"]))
        keep2 = float(one - np.float32(attrs["beta2"]))
        new_avg = op(g, "add", avg, op(g, "mul", const(g, keep1), op(g, "sub", grad, avg)))
        new_avg_sq = op(
            g,
            "add",
            op(g, "mul", const(g, attrs["beta2"]), avg_sq),
            op(g, "mul", op(g, "mul", const(g, keep2), grad), grad),
        )
        denom = op(
            g, "add", op(g, "div", op(g, "sqrt", new_avg_sq), correction), const(g, attrs["eps"])
        )
        new_param = op(g, "sub", param, op(g, "mul", step_size, op(g, "div", new_avg, denom)))
        self.slot_writes += [
            g.op("assign", [avg, new_avg], {}),
            g.op("assign", [avg_sq, new_avg_sq], {}),
        ]
        return self._write_parameter(param, new_param)


class ZeroRedundancyOptimizer(optim.Optimizer):
    """Wraps an in-graph optimizer so that each rank keeps and updates 1/N of its slots.

    Args:
        optimizer: the optimizer to shard (an instance or a name, as ``Trainer`` takes).

    Raises:
        ValueError: a host-driven optimizer (L-BFGS), or one already wrapped.

    Example:
        >>> ZeroRedundancyOptimizer(gm.optim.Adam(1e-3)).slot_names
        ('exp_avg', 'exp_avg_sq')
    """

    def __init__(self, optimizer: Any):
        inner = optim.get(optimizer)
        if inner.host_driven or isinstance(inner, ZeroRedundancyOptimizer):
            raise ValueError(
                f"ZeroRedundancyOptimizer needs an in-graph optimizer, got {type(inner).__name__}"
            )
        super().__init__(inner.lr)
        self.optimizer = inner

    @property
    def slot_names(self) -> tuple[str, ...]:
        return self.optimizer.slot_names

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.optimizer.state_names

    def emit_updates(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
        step_offsets: Mapping[str, float] | None = None,
    ) -> list[int]:
        """The wrapped optimizer's updates of this rank's shards, then the all-gathers.

        Args:
            g: the training graph.
            params: parameter name -> variable node id.
            grads: parameter name -> (averaged) gradient node id.
            lr_node: the runtime learning-rate scalar.
            step_node: the step number of this update (1 on the first step).
            step_offsets: steps a parameter sat out, by name.

        Returns:
            Effect node ids.

        Example:
            >>> effects = zero.emit_updates(g, params, grads, lr, step)  # doctest: +SKIP
        """
        inner = self.optimizer
        rank, ranks = job_rank_and_size()
        shard_params: dict[str, int] = {}
        shards: dict[int, tuple[int, tuple[int, ...]]] = {}
        for name, param in params.items():
            shape = tuple(int(d) for d in g.shape(param))
            shard_params[name] = self._shard(g, param, shape, rank, ranks)
            shards[shard_params[name]] = (param, shape)
        if ranks == 1:
            clipped = optim.clip_gradients(
                g, {n: grads[n] for n in params}, inner.clip_grad_norm, inner.clip_grad_value
            )
            shard_grads = {
                name: self._shard(g, clipped[name], shards[shard_params[name]][1], 0, 1)
                for name in params
            }
        else:
            shard_grads = _clipped_shards(
                g,
                shard_means_over_ranks(g, {n: grads[n] for n in params}, ranks),
                inner.clip_grad_norm,
                inner.clip_grad_value,
            )
        view = _ShardUpdates(g, shards)
        # Clipping happened above, on the whole gradient; the shards must not clip again.
        saved = inner.clip_grad_norm, inner.clip_grad_value
        inner.clip_grad_norm = inner.clip_grad_value = None
        try:
            effects = inner.emit_updates(
                view, shard_params, shard_grads, lr_node, step_node, step_offsets
            )
        finally:
            inner.clip_grad_norm, inner.clip_grad_value = saved
        return [*effects, *view.slot_writes]

    @staticmethod
    def _shard(g: _core.Graph, value: int, shape: tuple[int, ...], rank: int, ranks: int) -> int:
        size = int(np.prod(shape))
        length = shard_length(size, ranks)
        flat = op(g, "reshape", value, shape=[size])
        if length * ranks != size:
            flat = op(g, "pad", flat, axis=0, before=0, after=length * ranks - size)
        if ranks == 1:
            return flat
        return op(g, "slice", flat, axis=0, start=rank * length, end=(rank + 1) * length)

    def get_config(self) -> dict[str, Any]:
        """``{"class_name": "ZeroRedundancyOptimizer", "config": {"optimizer": ...}}``.

        Example:
            >>> ZeroRedundancyOptimizer(gm.optim.SGD(0.1)).get_config()["class_name"]
            'ZeroRedundancyOptimizer'
        """
        return {
            "class_name": type(self).__name__,
            "config": {"optimizer": self.optimizer.get_config()},
        }

    def __repr__(self) -> str:
        return f"ZeroRedundancyOptimizer({self.optimizer!r})"


def reduces_own_gradients(optimizer: Any) -> bool:
    """Whether ``optimizer`` reduces the ranks' gradients itself (a
    ``ZeroRedundancyOptimizer``: a reduce-scatter of the shards), so the training step
    must hand it this rank's own.

    Example:
        >>> reduces_own_gradients(gm.optim.Adam())  # doctest: +SKIP
        False
    """
    return isinstance(optimizer, ZeroRedundancyOptimizer)


def shard_means_over_ranks(
    g: _core.Graph,
    grads: Mapping[str, int],
    ranks: int,
    bucket_floats: int | None = None,
    overlap: bool | None = None,
) -> dict[str, int]:
    """This rank's shard of every gradient, averaged over the ranks, by reduce-scatters.

    Each gradient is flattened, padded to ``ranks`` shards of ``shard_length`` values and
    seen as ``(ranks, length)``; a bucket's gradients are put side by side along the second
    axis, so that the bucket's row r holds every shard r, and one reduce-scatter gives rank
    r the mean of its row. Buckets as ``averaged_over_ranks`` cuts them (of the padded
    sizes), overlapped alike.

    Args:
        g: the training graph.
        grads: parameter name -> this rank's gradient node.
        ranks: the job's size.
        bucket_floats: as ``averaged_over_ranks``'s.
        overlap: as ``averaged_over_ranks``'s.

    Returns:
        Parameter name -> a ``(shard_length,)`` node: the mean of that shard's gradient.

    Example:
        >>> shard_means_over_ranks(g, {"dense_0.weight": grad}, 2)  # doctest: +SKIP
    """
    lengths = {n: shard_length(int(np.prod(g.shape(grad))), ranks) for n, grad in grads.items()}
    padded = {name: length * ranks for name, length in lengths.items()}
    bucket_floats, overlap = bucket_settings(sum(padded.values()), bucket_floats, overlap)
    rows: dict[str, int] = {}
    for name, grad in grads.items():
        size = int(np.prod(g.shape(grad)))
        flat = op(g, "reshape", grad, shape=[size])
        if padded[name] != size:
            flat = op(g, "pad", flat, axis=0, before=0, after=padded[name] - size)
        rows[name] = op(g, "reshape", flat, shape=[ranks, lengths[name]])
    means: dict[str, int] = {}
    buckets = gradient_buckets({n: padded[n] for n in backward_order(g, grads)}, bucket_floats)
    for index, bucket in enumerate(buckets):
        width = sum(lengths[name] for name in bucket)
        side_by_side = rows[bucket[0]]
        if len(bucket) > 1:
            side_by_side = op(g, "concat", *(rows[name] for name in bucket), axis=1)
        flat = op(g, "reshape", side_by_side, shape=[ranks * width])
        mine = bucket_mean(g, flat, index == len(buckets) - 1, overlap, parts=ranks)
        start = 0
        for name in bucket:
            means[name] = op(g, "slice", mine, axis=0, start=start, end=start + lengths[name])
            start += lengths[name]
    return {name: means[name] for name in grads}


def _clipped_shards(
    g: _core.Graph, shards: Mapping[str, int], max_norm: float | None, max_value: float | None
) -> dict[str, int]:
    """``optim.clip_gradients`` on shards: the norm is the global one (each rank's sum of
    squares, summed over the ranks; padding adds zeros), so every rank scales alike."""
    out = dict(shards)
    if max_norm is not None:
        squares = None
        for shard in out.values():
            term = op(g, "sum", op(g, "square", shard), axes=[])
            squares = term if squares is None else op(g, "add", squares, term)
        ranks = job_rank_and_size()[1]
        total = op(g, "mul", op(g, "all_reduce_mean", squares), const(g, float(ranks)))
        norm = op(g, "sqrt", total)
        scale = op(g, "div", const(g, max_norm), op(g, "add", norm, const(g, NORM_EPSILON)))
        scale = op(g, "minimum", scale, const(g, 1.0))
        out = {name: op(g, "mul", shard, scale) for name, shard in out.items()}
    if max_value is not None:
        out = clip_by_value(g, out, max_value)
    return out


def _slot_names(
    variables: Mapping[str, np.ndarray], optimizer: ZeroRedundancyOptimizer, shapes: Mapping
) -> list[tuple[str, tuple[int, ...]]]:
    """(slot variable, its parameter's shape) for every sharded slot present."""
    return [
        (f"{param}.{slot}", tuple(shape))
        for param, shape in shapes.items()
        for slot in optimizer.slot_names
        if f"{param}.{slot}" in variables
    ]


def unsharded_state(
    state: SessionState, optimizer: ZeroRedundancyOptimizer, weight_shapes: Mapping
) -> SessionState:
    """``state`` (this rank's, from ``read_state``) with every slot whole: each rank's shard
    put together in rank order, as an unsharded run stores it. A collective: every rank
    calls it, in the same order (the shards travel by one broadcast per rank).

    Args:
        state: this rank's state, with its shards.
        optimizer: the trainer's ``ZeroRedundancyOptimizer``.
        weight_shapes: the model's weight shapes by name (``model.weight_shapes``).

    Returns:
        A new state; the same on every rank.

    Example:
        >>> whole = unsharded_state(trainer.read_state(), optimizer, model.weight_shapes)  # doctest: +SKIP
    """
    rank, ranks = job_rank_and_size()
    variables = dict(state.variables)
    for name, shape in _slot_names(variables, optimizer, weight_shapes):
        size = int(np.prod(shape))
        length = shard_length(size, ranks)
        parts = []
        for root in range(ranks):
            part = np.array(variables[name], dtype=np.float32, order="C").reshape(-1)
            if part.size != length:
                raise ValueError(
                    f"{name} holds {part.size} values on rank {rank}, a shard of {ranks} "
                    f"ranks has {length}"
                )
            parts.append(broadcast_array(part, root) if ranks > 1 else part)
        variables[name] = np.concatenate(parts)[:size].reshape(shape)
    return replace(state, variables=variables)


def sharded_state(
    state: SessionState, optimizer: ZeroRedundancyOptimizer, weight_shapes: Mapping
) -> SessionState:
    """``state`` with whole slots (``unsharded_state``'s, or an unsharded run's) cut to this
    rank's shard, for ``restore_state``: the inverse of ``unsharded_state``.

    Args:
        state: a state holding whole slots.
        optimizer: the trainer's ``ZeroRedundancyOptimizer``.
        weight_shapes: the model's weight shapes by name.

    Returns:
        A new state holding this rank's shards.

    Example:
        >>> trainer.restore_state(sharded_state(whole, optimizer, model.weight_shapes))  # doctest: +SKIP
    """
    rank, ranks = job_rank_and_size()
    variables = dict(state.variables)
    for name, shape in _slot_names(variables, optimizer, weight_shapes):
        size = int(np.prod(shape))
        whole = np.asarray(variables[name], dtype=np.float32).reshape(-1)
        if whole.size != size:
            raise ValueError(f"{name} holds {whole.size} values, its parameter has {size}")
        length = shard_length(size, ranks)
        padded = np.zeros(length * ranks, np.float32)
        padded[:size] = whole
        variables[name] = padded[rank * length : (rank + 1) * length].copy()
    return replace(state, variables=variables)


def whole_slot_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    optimizer: ZeroRedundancyOptimizer,
    weight_shapes: Mapping,
) -> dict[str, tuple[int, ...]]:
    """``shapes`` (the engine's variable shapes) with every sharded slot given its
    parameter's whole shape, as ``unsharded_state`` returns it.

    Example:
        >>> whole_slot_shapes({"w.exp_avg": (2,)}, ZeroRedundancyOptimizer("adam"), {"w": (3,)})
        {'w.exp_avg': (3,)}
    """
    whole = {name: tuple(shape) for name, shape in shapes.items()}
    for name, shape in _slot_names(whole, optimizer, weight_shapes):
        whole[name] = shape
    return whole
