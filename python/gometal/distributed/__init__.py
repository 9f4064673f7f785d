"""Data-parallel training over MPI: ``gm.distributed``.

Start N processes with ``mpirun -n N python train.py``; each calls ``init()`` and builds
the same model and ``Trainer``. The trainer checks the ranks built the same model, starts
every rank from rank 0's weights, gives each rank its own dropout stream and averages the
gradients over the ranks inside its compiled step, before the optimizer update (so
clipping, loss scaling and learning-rate schedules see the global gradient). Shard the
data with ``ArrayLoader(..., shard=True)``; only rank 0 prints progress.

Example:
    >>> import gometal as gm  # doctest: +SKIP
    >>> job = gm.distributed.init()  # doctest: +SKIP
    >>> trainer = gm.Trainer(model, "cross_entropy", "adam")  # distributed after init
"""

from __future__ import annotations

from .collectives import all_reduce_mean, broadcast
from .communicator import JobInfo, barrier, init, is_initialized, rank, shutdown, size
from .launch import find_launcher, launch, mpirun_command

__all__ = [
    "JobInfo",
    "all_reduce_mean",
    "barrier",
    "broadcast",
    "find_launcher",
    "init",
    "is_initialized",
    "launch",
    "mpirun_command",
    "rank",
    "shutdown",
    "size",
]
