"""One timed configuration of bench_distributed.py: workload B or D trained by gometal (under
mpirun, or one process) or by PyTorch DDP over gloo (under mpirun); rank 0 prints one JSON
line with the samples/s of each window, the samples per CPU-second the job's processes used
(every rank's threads; a rank that spins while it waits spends CPU there, one that sleeps
does not) and the CPU cores other processes used meanwhile.

Usage (bench_distributed.py runs these):
    mpirun -n 2 python bench_distributed_worker.py gometal B --threads 1
    python bench_distributed_worker.py gometal B --threads 2
    mpirun -n 2 python bench_distributed_worker.py torch-ddp B --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from _frameworks import make_setup, torch_model
from _timing import _cpu_seconds
from _workload import (
    GPT_EMBD,
    GPT_HEADS,
    GPT_LAYERS,
    GPT_VOCAB,
    GPT_WEIGHT_DECAY,
    LEARNING_RATE,
    WORKLOADS,
    make_batch,
)

RESULT_TAG = "BENCH_DISTRIBUTED "


def mpi_rank_and_size() -> tuple[int, int]:
    """This process's rank and the job's size from the launcher's environment ((0, 1) alone)."""
    for rank, size in (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE")):
        if size in os.environ:
            return int(os.environ[rank]), int(os.environ[size])
    return 0, 1


def gometal_job(workload: str, threads: int, rank: int, size: int):
    """``(step, barrier, sum_over_ranks)`` of gometal on this rank's part of the batch."""
    import gometal as gm

    if size > 1:
        gm.distributed.init()
    x, y = make_batch(workload)
    part = slice(rank * len(x) // size, (rank + 1) * len(x) // size)
    setup = make_setup("gometal", workload, x[part], y[part], threads)

    def total(value: float) -> float:
        return float(gm.distributed.all_reduce_mean(np.array([value]))[0]) * size

    return setup.step, gm.distributed.barrier, total


def torch_ddp_job(workload: str, threads: int, rank: int, size: int):
    """``(step, barrier, sum_over_ranks)`` of PyTorch DDP (gloo) on this rank's part."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29541")
    dist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(0)
    spec = WORKLOADS[workload]
    x, y = make_batch(workload)
    part = slice(rank * len(x) // size, (rank + 1) * len(x) // size)
    xt, yt = torch.from_numpy(x[part]), torch.from_numpy(y[part]).long()
    if spec.model == "gpt":
        from _torch_gpt import TorchGPT

        net = TorchGPT(GPT_VOCAB, spec.block, GPT_LAYERS, GPT_HEADS, GPT_EMBD)
        optimizer = net.optimizer(lr=LEARNING_RATE, weight_decay=GPT_WEIGHT_DECAY)
        model = torch.nn.parallel.DistributedDataParallel(net)
        xt = xt.long()

        def loss():
            return model(xt, yt)
    else:
        model = torch.nn.parallel.DistributedDataParallel(torch_model(torch, spec))
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

        def loss():
            return torch.nn.functional.cross_entropy(model(xt), yt)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    def total(value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor[0])

    return step, dist.barrier, total


def agreed_warm_up(step, total, rank: int, warmup_s: float, warmup_steps: int) -> int:
    """Runs the same number of warm-up steps on every rank: ``warmup_steps``, then as many
    as rank 0 estimates fill ``warmup_s``. Ranks that each stopped by their own clock could
    stop one step apart, and the rank that took one more step waited forever in its
    collectives while the others sat in the next barrier. Returns the steps run."""
    start = time.perf_counter()
    for _ in range(warmup_steps):
        step()
    elapsed = time.perf_counter() - start
    more = 0
    if rank == 0 and elapsed < warmup_s:
        more = int((warmup_s - elapsed) / (elapsed / warmup_steps)) + 1
    more = round(total(float(more)))
    for _ in range(more):
        step()
    return warmup_steps + more


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=["gometal", "torch-ddp"])
    parser.add_argument("workload", choices=["B", "D"])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    args = parser.parse_args()
    rank, size = mpi_rank_and_size()
    job = gometal_job if args.framework == "gometal" else torch_ddp_job
    step, barrier, total = job(args.workload, args.threads, rank, size)
    agreed_warm_up(step, total, rank, args.warmup_s, 3)
    barrier()
    start = time.perf_counter()
    for _ in range(3):
        step()
    # Every rank takes the same number of steps per window: rank 0's estimate.
    estimate = max(1, round(args.window_s * 3 / (time.perf_counter() - start)))
    steps = int(total(float(estimate) if rank == 0 else 0.0))
    rates, loads, per_cpu = [], [], []
    for _ in range(args.windows):
        barrier()
        cpu0, start = _cpu_seconds(), time.perf_counter()
        for _ in range(steps):
            step()
        barrier()
        elapsed = time.perf_counter() - start
        cpu1 = _cpu_seconds()
        own = total(cpu1[1] - cpu0[1]) if cpu0 and cpu1 else 0.0
        busy = cpu1[0] - cpu0[0] if cpu0 and cpu1 else 0.0
        rates.append(steps * WORKLOADS[args.workload].batch / elapsed)
        per_cpu.append(steps * WORKLOADS[args.workload].batch / own if own > 0 else None)
        loads.append(round(max(0.0, busy - own) / elapsed, 3))
    if rank == 0:
        result = {
            "framework": args.framework,
            "workload": args.workload,
            "ranks": size,
            "threads": args.threads,
            "samples_per_s": rates,
            "samples_per_cpu_s": per_cpu,
            "other_load": loads,
        }
        print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
