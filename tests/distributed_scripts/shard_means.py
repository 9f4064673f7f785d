"""Each rank's gradients (values of its own) reduce-scattered into shard means, in small
buckets with overlap; writes this rank's inputs and shard means.

Usage: mpirun -n N python shard_means.py OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np

import gometal as gm
from gometal import _core
from gometal.train.zero_sharding import shard_means_over_ranks

# 15, 7, 8 and 1 values: shards of 8, 4, 4 and 1 on 2 ranks (three of them padded), 5, 3, 3
# and 1 on 3; buckets of at most 16 padded values.
SHAPES = {"a": (3, 5), "b": (7,), "c": (2, 2, 2), "d": (1,)}
BUCKET_FLOATS = 16

if __name__ == "__main__":
    out_dir = sys.argv[1]
    job = gm.distributed.init()
    g = _core.Graph()
    nodes = {name: g.variable(name, shape) for name, shape in SHAPES.items()}
    means = shard_means_over_ranks(g, nodes, job.size, BUCKET_FLOATS, overlap=True)
    engine = _core.Engine(g)
    engine.define("f", inputs=[], outputs=list(means.values()), effects=[], advance_rng=False)
    rng = np.random.default_rng(10 + job.rank)
    values = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()}
    for name, value in values.items():
        engine.set_variable(name, value)
    outputs = dict(zip(SHAPES, engine.run("f", [])))
    np.savez(f"{out_dir}/inputs{job.rank}.npz", **values)
    np.savez(f"{out_dir}/means{job.rank}.npz", **outputs)
    plan = engine.describe("f", 1)
    starts = sum(line.startswith("all_reduce_mean_start") for line in plan)
    print(f"rank {job.rank} of {job.size}: {starts} overlapped buckets")
