"""Trains the MLP of replica_models twice on every rank, with blocking all-reduces and with
overlapped ones (start and wait per bucket), in buckets small enough that each layer's
gradients make a bucket; each rank saves both runs' weights.

Usage: mpirun -n N python overlap_replicas.py OPTIMIZER PER_RANK_BATCH OUT_DIR
"""

from __future__ import annotations

import os
import sys

import numpy as np
from replica_models import OPTIMIZERS, mlp, train

import gometal as gm
from gometal.train.data_parallel import BUCKET_VARIABLE, OVERLAP_VARIABLE

optimizer_name, batch, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
gm.set_num_threads(1)
job = gm.distributed.init()
# 400 floats: the MLP's 12x24, 24, 24x16, 16, 16x4 and 4 values fall into four buckets.
os.environ[BUCKET_VARIABLE] = str(400 * 4 / 2**20)
for mode, overlap in (("blocking", "0"), ("overlapped", "1")):
    os.environ[OVERLAP_VARIABLE] = overlap
    model = mlp(seed=1 + job.rank)
    trainer = gm.Trainer(model, "mse", OPTIMIZERS[optimizer_name](), batch_size=batch)
    differing = train(trainer, batch)
    np.savez(f"{out_dir}/{mode}{job.rank}.npz", **model.get_weights())
    print(f"{mode} rank {job.rank} of {job.size}: weights differed after {differing} steps")
