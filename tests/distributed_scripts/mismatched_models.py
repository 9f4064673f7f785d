"""Rank 1 builds a wider first layer; every rank must raise the same clear error at init.

Usage: mpirun -n 2 python mismatched_models.py
"""

from __future__ import annotations

from replica_models import SIZES, mlp

import gometal as gm

gm.set_num_threads(1)
job = gm.distributed.init()
model = mlp(seed=1, hidden=SIZES[1] + (1 if job.rank == 1 else 0))
try:
    gm.Trainer(model, "mse", "adam", batch_size=8)
except ValueError as error:
    print(f"rank {job.rank} refused: {error}", flush=True)
else:
    print(f"rank {job.rank} accepted the models", flush=True)
