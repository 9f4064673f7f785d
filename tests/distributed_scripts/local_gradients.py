"""compute_gradients in a 2-rank job gives each rank its own batch's gradient (it is not a
collective), with and without loss scaling.

Usage: mpirun -n 2 python local_gradients.py [loss_scaling]
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import mlp, regression_data

import gometal as gm

gm.set_num_threads(1)
job = gm.distributed.init()
loss_scaling = sys.argv[1:] == ["loss_scaling"]
trainer = gm.Trainer(mlp(seed=1), "mse", "adam", batch_size=8, loss_scaling=loss_scaling)
x, y = regression_data()
rows = slice(8 * job.rank, 8 * job.rank + 8)  # a batch of this rank's own
got = trainer.compute_gradients(x[rows], y[rows])
alone = gm.Trainer(mlp(seed=1), "mse", "adam", batch_size=8, distributed=False)
expected = alone.compute_gradients(x[rows], y[rows])
matches = all(np.allclose(got[name], expected[name], rtol=1e-6, atol=0) for name in expected)
print(f"rank {job.rank}: local gradients {'match' if matches else 'differ'}", flush=True)
