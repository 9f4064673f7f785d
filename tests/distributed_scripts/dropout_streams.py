"""Every rank trains a model with dropout on the same batch: the ranks draw different masks
(their losses differ) yet apply the same averaged gradient (their weights stay equal).

Usage: mpirun -n 2 python dropout_streams.py OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np
from replica_models import SIZES, regression_data

import gometal as gm

gm.set_num_threads(1)
job = gm.distributed.init()
model = gm.ModelBuilder((SIZES[0],)).dense(64).tanh().dropout(0.5).dense(SIZES[3]).build(seed=1)
trainer = gm.Trainer(model, "mse", "adam", batch_size=8)
x, y = regression_data()
losses = [trainer.train_batch(x[:8], y[:8]).loss for _ in range(3)]
np.savez(f"{sys.argv[1]}/rank{job.rank}.npz", losses=np.array(losses), **model.get_weights())
