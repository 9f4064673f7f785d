"""Trains the CNN of sync_batch_norm_models on every rank, each on its slice of every global
batch; each rank saves its weights (running statistics included).

Usage: mpirun -n N python sync_batch_norm_replicas.py OPTIMIZER sync|trainer|local OUT_DIR
(trainer: plain batch norm layers, ``Trainer(sync_batch_norm=True)``)
"""

from __future__ import annotations

import sys

import numpy as np
from sync_batch_norm_models import PER_RANK_BATCH, cnn, global_batches, optimizer

import gometal as gm

optimizer_name, mode, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
gm.set_num_threads(1)
job = gm.distributed.init()
model = cnn(sync=mode == "sync", seed=1 + job.rank)
trainer = gm.Trainer(
    model,
    "cross_entropy",
    optimizer(optimizer_name),
    batch_size=PER_RANK_BATCH,
    sync_batch_norm=mode == "trainer",
)
mine = slice(job.rank * PER_RANK_BATCH, (job.rank + 1) * PER_RANK_BATCH)
differing = 0
for x, y in global_batches(job.size * PER_RANK_BATCH):
    trainer.train_batch(x[mine], y[mine])
    # Without sync each rank keeps the running statistics of its own slices (as torch's DDP
    # with broadcast_buffers=False): compare the trained weights.
    trained = {n: w for n, w in model.get_weights().items() if ".running_" not in n}
    weights = np.concatenate([w.ravel() for w in trained.values()])
    differing += int(not np.array_equal(gm.distributed.broadcast(weights), weights))
np.savez(f"{out_dir}/rank{job.rank}.npz", **model.get_weights())
print(
    f"{mode} rank {job.rank} of {job.size}: weights differed from rank 0's after {differing} steps"
)
