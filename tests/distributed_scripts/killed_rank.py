"""Rank 1 dies (SIGKILL) in the middle of training; the job must stop, not hang, and the
checkpoint saved before stays intact.

Usage: mpirun -n 2 python killed_rank.py OUT_DIR
"""

from __future__ import annotations

import os
import signal
import sys

from replica_models import mlp, regression_data

import gometal as gm

gm.set_num_threads(1)
job = gm.distributed.init()
trainer = gm.Trainer(mlp(seed=1), "mse", gm.optim.SGD(0.05), batch_size=8)
x, y = regression_data()
for step in range(10_000):
    if step == 3:
        trainer.save(f"{sys.argv[1]}/checkpoint.safetensors")
    if step == 5 and job.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    trainer.train_batch(x[:8], y[:8])
print(f"rank {job.rank}: finished without noticing", flush=True)
