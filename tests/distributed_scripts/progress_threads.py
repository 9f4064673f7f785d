"""Trains the MLP of replica_models with overlapped all-reduces and prints how many threads
the process runs once it joined the job and after the last step: the progress of the buckets in
flight either runs between the engine's kernels (GOMETAL_MPI_PROGRESS=steps, no thread) or
on a progress thread (GOMETAL_MPI_PROGRESS=thread).

Usage: mpirun -n N python progress_threads.py PER_RANK_BATCH
"""

from __future__ import annotations

import os
import sys

from replica_models import OPTIMIZERS, mlp, train

import gometal as gm
from gometal.train.data_parallel import BUCKET_VARIABLE, OVERLAP_VARIABLE


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


batch = int(sys.argv[1])
gm.set_num_threads(1)
job = gm.distributed.init()
before = thread_count()  # the Trainer's set-up runs collectives already
# Buckets of 400 floats: the MLP's layers make four, three of them overlapped.
os.environ[BUCKET_VARIABLE] = str(400 * 4 / 2**20)
os.environ[OVERLAP_VARIABLE] = "1"
trainer = gm.Trainer(mlp(seed=1), "mse", OPTIMIZERS["adam"](), batch_size=batch)
train(trainer, batch)
print(f"rank {job.rank}: threads {before} -> {thread_count()}")
