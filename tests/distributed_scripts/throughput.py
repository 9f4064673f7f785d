"""Training throughput of workload B's CNN (benchmarks/_frameworks.cnn_model), for comparing
N ranks x T threads with one process at the same global batch; rank 0 prints samples/s.

Usage:
    mpirun -n 2 python throughput.py --batch 16 --threads 1     # 2 ranks, global batch 32
    python throughput.py --batch 32 --threads 2                 # 1 process, same batch
    mpirun -n 2 python throughput.py --batch 16 --threads 1 --local   # no all-reduce
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import gometal as gm

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _frameworks import cnn_model
from _workload import IMAGE_SHAPE

parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, required=True, help="samples per rank and step")
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--local", action="store_true", help="each rank trains alone")
args = parser.parse_args()

gm.set_num_threads(args.threads)
in_job = "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ
job = gm.distributed.init() if in_job else None
rng = np.random.default_rng(0)
x = rng.standard_normal((args.batch, *IMAGE_SHAPE), dtype=np.float32)
y = rng.integers(0, 2, args.batch).astype(np.int32)
trainer = gm.Trainer(
    cnn_model(gm),
    "cross_entropy",
    "adam",
    batch_size=args.batch,
    distributed=not args.local and in_job,
)
for _ in range(3):
    trainer.train_batch(x, y)  # compile and warm up
gm.distributed.barrier()
start, cpu = time.perf_counter(), time.process_time()
for _ in range(args.steps):
    trainer.train_batch(x, y)
gm.distributed.barrier()
wall = time.perf_counter() - start
size = job.size if job else 1
if gm.distributed.rank() == 0:
    print(
        f"ranks {size} x threads {args.threads}, batch {args.batch}/rank"
        f"{' (local)' if args.local else ''}: {args.batch * size * args.steps / wall:.1f} samples/s, "
        f"{wall / args.steps * 1e3:.1f} ms/step, rank 0 CPU {cpu and (time.process_time() - cpu) / wall:.2f}",
        flush=True,
    )
