"""fit on arrays in a 2-rank job: each rank trains on its shard, only rank 0 prints.

Usage: mpirun -n 2 python fit_replicas.py PER_RANK_BATCH OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import mlp, regression_data

import gometal as gm

batch, out_dir = int(sys.argv[1]), sys.argv[2]
gm.set_num_threads(1)
job = gm.distributed.init()
trainer = gm.Trainer(mlp(seed=1 + job.rank), "mse", "adam", batch_size=batch)
x, y = regression_data()
trainer.fit((x, y), epochs=2, batch_size=batch, seed=4, verbose=2, validation=(x[:32], y[:32]))
np.savez(f"{out_dir}/rank{job.rank}.npz", **trainer.model.get_weights())
