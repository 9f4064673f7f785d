"""A 2-rank run saved after one epoch and resumed in new processes must continue bit for bit.

Usage:
    mpirun -n 2 python resume.py through OUT_DIR   # two epochs, a checkpoint after the first
    mpirun -n 2 python resume.py resumed OUT_DIR   # loads the checkpoint, runs the second
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import SIZES, regression_data

import gometal as gm

mode, out_dir = sys.argv[1], sys.argv[2]
gm.set_num_threads(1)
job = gm.distributed.init()
x, y = regression_data()
loader = gm.training.ArrayLoader(x, y, batch_size=8, seed=5)  # 10 steps per epoch


def run_epoch(trainer: gm.Trainer, epoch: int) -> None:
    loader.set_epoch(epoch)
    for xb, yb in loader:
        trainer.train_batch(xb, yb)


if mode == "through":
    model = gm.ModelBuilder((SIZES[0],)).dense(32).tanh().dropout(0.3).dense(SIZES[3]).build(seed=2)
    trainer = gm.Trainer(model, "mse", "adam", batch_size=8)
    run_epoch(trainer, 0)
    trainer.save(f"{out_dir}/checkpoint.safetensors")
else:
    trainer = gm.Trainer.load(f"{out_dir}/checkpoint.safetensors")
run_epoch(trainer, 1)
np.savez(f"{out_dir}/{mode}{job.rank}.npz", **trainer.model.get_weights())
