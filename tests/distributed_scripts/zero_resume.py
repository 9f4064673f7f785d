"""A ZeRO-1 run saved with whole slots and resumed: through (20 steps at once), or saved
after 10 steps (rank 0 writes the unsharded state) and resumed in new processes, each rank
taking its shard back; each rank saves its final weights and slots.

Usage: mpirun -n N python zero_resume.py through|first|resumed OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import mlp, regression_data

import gometal as gm
from gometal.train.session import SessionState
from gometal.train.zero_sharding import ZeroRedundancyOptimizer, sharded_state, unsharded_state

phase, out_dir = sys.argv[1], sys.argv[2]
gm.set_num_threads(1)
job = gm.distributed.init()
model = mlp(seed=1)
optimizer = ZeroRedundancyOptimizer(gm.optim.Adam(5e-3))
# 32 rows per rank: products of up to 24 rows take a kernel of their own, whose resumed
# results differ from a run's in the last bit (an engine issue outside ZeRO, seen without it).
BATCH = 32
trainer = gm.Trainer(model, "mse", optimizer, batch_size=BATCH)
x, y = regression_data()
steps = range(20) if phase == "through" else range(10) if phase == "first" else range(10, 20)
if phase == "resumed":
    saved = np.load(f"{out_dir}/saved.npz")
    whole = SessionState({name: saved[name] for name in saved.files}, 0, int(saved["rng_step"]))
    whole.variables.pop("rng_step")
    trainer.restore_state(sharded_state(whole, optimizer, model.weight_shapes))
for step in steps:
    # Each rank its own rows of every global batch of BATCH * size.
    start = (step * job.size + job.rank) * BATCH % len(x)
    trainer.train_batch(x[start : start + BATCH], y[start : start + BATCH])
state = trainer.read_state()
if phase == "first":
    whole = unsharded_state(state, optimizer, model.weight_shapes)
    if job.rank == 0:
        np.savez(f"{out_dir}/saved.npz", rng_step=whole.rng_step, **whole.variables)
else:
    np.savez(f"{out_dir}/{phase}{job.rank}.npz", **state.variables)
print(f"{phase} rank {job.rank} done")
