"""Workload B's CNN under PyTorch DDP (gloo), the peer of throughput.py: rank 0 prints
samples/s. Ranks read their number from mpirun's environment.

Usage: mpirun -n 2 python throughput_torch.py --batch 16 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _frameworks import torch_model
from _workload import IMAGE_SHAPE, WORKLOADS

parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, required=True, help="samples per rank and step")
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--steps", type=int, default=30)
args = parser.parse_args()

torch.set_num_threads(args.threads)
rank, size = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29533")
dist.init_process_group("gloo", rank=rank, world_size=size)
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch_model(torch, WORKLOADS["B"]))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
rng = np.random.default_rng(0)
x = torch.from_numpy(rng.standard_normal((args.batch, *IMAGE_SHAPE), dtype=np.float32))
y = torch.from_numpy(rng.integers(0, 2, args.batch))


def step() -> None:
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


for _ in range(3):
    step()
dist.barrier()
start = time.perf_counter()
for _ in range(args.steps):
    step()
dist.barrier()
wall = time.perf_counter() - start
if rank == 0:
    print(
        f"torch DDP gloo: ranks {size} x threads {args.threads}, batch {args.batch}/rank: "
        f"{args.batch * size * args.steps / wall:.1f} samples/s, {wall / args.steps * 1e3:.1f} ms/step",
        flush=True,
    )
dist.destroy_process_group()
