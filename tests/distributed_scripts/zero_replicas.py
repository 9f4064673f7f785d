"""Trains the MLP of replica_models on every rank twice: with the optimizer sharded by
ZeroRedundancyOptimizer and without; each rank saves both runs' weights, and its slots of
both (its shards with ZeRO, whole slots without) and their shapes.

Usage: mpirun -n N python zero_replicas.py OPTIMIZER PER_RANK_BATCH OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import OPTIMIZERS, mlp, train

import gometal as gm
from gometal.train.zero_sharding import ZeroRedundancyOptimizer

optimizer_name, batch, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
gm.set_num_threads(1)
job = gm.distributed.init()
for mode in ("plain", "zero"):
    model = mlp(seed=1 + job.rank)
    optimizer = OPTIMIZERS[optimizer_name]()
    if mode == "zero":
        optimizer = ZeroRedundancyOptimizer(optimizer)
    trainer = gm.Trainer(model, "mse", optimizer, batch_size=batch)
    differing = train(trainer, batch)
    weights = set(model.get_weights())
    slots = {
        name: value
        for name, value in trainer.read_state().variables.items()
        if name.rsplit(".", 1)[0] in weights
    }
    np.savez(f"{out_dir}/{mode}_weights{job.rank}.npz", **model.get_weights())
    np.savez(f"{out_dir}/{mode}_slots{job.rank}.npz", **slots)
    print(f"{mode} rank {job.rank} of {job.size}: weights differed after {differing} steps")
