"""Data-parallel training over MPI: ``gm.distributed``.

Start N processes with ``mpirun -n N python train.py``; each calls ``init()`` and builds
the same model and ``Trainer``. The trainer checks the ranks built the same model, starts
every rank from rank 0's weights, gives each rank its own dropout stream and averages the
gradients over the ranks inside its compiled step, before the optimizer update (so
clipping, loss scaling and learning-rate schedules see the global gradient).
``ArrayLoader``, ``fit`` on arrays and ``gm.vision.DataLoader`` give each rank its shard of
every epoch (as torch's ``DistributedSampler(drop_last=False)``: padded by repeating the
epoch's first samples, so every rank takes the same steps); ``TokenLoader`` and
``TokenStreamLoader`` give each rank its block of the job's batch. ``evaluate`` and the
validation inside ``fit`` read exact shards instead (``order[rank::size]``, no padding, so
no sample counts twice) and pool the ranks' sums and metric inputs: every rank gets the
whole set's loss, accuracy and metrics; ``fit``'s training loss pools the ranks' batches.
Only rank 0 prints progress and writes checkpoints. ``launch`` starts the ranks with the
MPI launcher of the installed extra, on this machine or ``hosts``.

Example:
    >>> import gometal as gm  # doctest: +SKIP
    >>> job = gm.distributed.init()  # doctest: +SKIP
    >>> trainer = gm.Trainer(model, "cross_entropy", "adam")  # doctest: +SKIP
    >>> trainer.fit((x, y), epochs=3)  # each rank its shard  # doctest: +SKIP
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
