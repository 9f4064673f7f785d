"""Each rank writes the sample positions ArrayLoader gives it for epochs 0 and 1.

Usage: mpirun -n N python shard_orders.py SAMPLES BATCH SHUFFLE(0|1) OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np

import gometal as gm

samples, batch, shuffle, out_dir = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    sys.argv[3] == "1",
    sys.argv[4],
)
job = gm.distributed.init()
x = np.arange(samples, dtype=np.float32)[:, None]
loader = gm.training.ArrayLoader(x, x[:, 0].copy(), batch_size=batch, shuffle=shuffle, seed=7)
epochs = {}
for epoch in (0, 1):
    loader.set_epoch(epoch)
    batches = [xb[:, 0].astype(np.int64) for xb, _ in loader]
    epochs[f"epoch{epoch}"] = np.concatenate(batches)
    epochs[f"sizes{epoch}"] = np.array([len(b) for b in batches])
np.savez(f"{out_dir}/rank{job.rank}.npz", **epochs)
