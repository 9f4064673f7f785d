"""Trains the MLP of replica_models on every rank; each rank saves its weights.

Usage: mpirun -n N python train_replicas.py OPTIMIZER PER_RANK_BATCH OUT_DIR [loss_scaling]
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import OPTIMIZERS, mlp, train

import gometal as gm

optimizer_name, batch, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
gm.set_num_threads(1)
job = gm.distributed.init()
# Each rank draws different initial weights: the trainer must start all from rank 0's.
model = mlp(seed=1 + job.rank)
loss_scaling = sys.argv[4:] == ["loss_scaling"]
trainer = gm.Trainer(
    model, "mse", OPTIMIZERS[optimizer_name](), batch_size=batch, loss_scaling=loss_scaling
)
differing = train(trainer, batch)
np.savez(f"{out_dir}/rank{job.rank}.npz", **model.get_weights())
print(f"rank {job.rank} of {job.size}: weights differed from rank 0's after {differing} steps")
