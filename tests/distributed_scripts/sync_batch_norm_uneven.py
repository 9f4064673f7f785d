"""One training step of the CNN of sync_batch_norm_models with synchronized batch norm, the
ranks holding different numbers of images (5, 4, 3, ...: rank r the r-th slice); each rank
saves its running statistics.

Usage: mpirun -n N python sync_batch_norm_uneven.py OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np
from sync_batch_norm_models import cnn, global_batches, optimizer, uneven_slices

import gometal as gm

out_dir = sys.argv[1]
gm.set_num_threads(1)
job = gm.distributed.init()
model = cnn(sync=True)
mine = uneven_slices(job.size)[job.rank]
trainer = gm.Trainer(model, "cross_entropy", optimizer("sgd_momentum"), batch_size=5)
x, y = next(global_batches(uneven_slices(job.size)[-1].stop))
trainer.train_batch(x[mine], y[mine])
running = {n: w for n, w in model.get_weights().items() if ".running_" in n}
np.savez(f"{out_dir}/rank{job.rank}.npz", **running)
print(f"rank {job.rank} of {job.size}: {mine.stop - mine.start} images")
