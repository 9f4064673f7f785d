"""A ZeRO-1 run saved with whole slots and resumed: through (20 steps at once), or saved
after 10 steps by ``Trainer.save`` (rank 0 writes the slots made whole) and resumed in new
processes by ``Trainer.load``, each rank taking its shard back; each rank saves its final
weights and slots.

Usage: mpirun -n N python zero_resume.py through|first|resumed OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import mlp, regression_data

import gometal as gm

phase, out_dir = sys.argv[1], sys.argv[2]
gm.set_num_threads(1)
job = gm.distributed.init()
model = mlp(seed=1)
optimizer = gm.optim.ZeroRedundancyOptimizer(gm.optim.Adam(5e-3))
BATCH = 8  # rows per rank: the small-row product kernel's sizes
trainer = gm.Trainer(model, "mse", optimizer, batch_size=BATCH)
x, y = regression_data()
steps = range(20) if phase == "through" else range(10) if phase == "first" else range(10, 20)
if phase == "resumed":
    trainer = gm.Trainer.load(f"{out_dir}/saved.safetensors")
for step in steps:
    # Each rank its own rows of every global batch of BATCH * size.
    start = (step * job.size + job.rank) * BATCH % len(x)
    trainer.train_batch(x[start : start + BATCH], y[start : start + BATCH])
state = trainer.read_state()
if phase == "first":
    trainer.save(f"{out_dir}/saved.safetensors")
else:
    np.savez(f"{out_dir}/{phase}{job.rank}.npz", **state.variables)
print(f"{phase} rank {job.rank} done")
