"""Measures this machine's all-reduce latency and bandwidth (2 ranks) and workloads A's, B's
and D's compute per step (1 thread), then prints the ring cost model's predicted scaling
efficiency for 8 to 256 ranks (gm.distributed.cost_model: a model, not a measurement).

Usage: mpirun -n 2 python scaling_model.py [--latency-us L --bandwidth-gbs B] [--hidden H]
    (--latency-us/--bandwidth-gbs replace the measured link, e.g. by a network's; --hidden
    is the fraction of the all-reduce overlapped with the backward pass, default 0)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import gometal as gm
from gometal import _core
from gometal.distributed.cost_model import Link, fit_link, scaling_efficiency

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _frameworks import gometal_model
from _workload import WORKLOADS, make_batch

parser = argparse.ArgumentParser()
parser.add_argument("--latency-us", type=float)
parser.add_argument("--bandwidth-gbs", type=float)
parser.add_argument("--hidden", type=float, default=0.0)
args = parser.parse_args()
gm.set_num_threads(1)
job = gm.distributed.init()


def timed(function, repeats: int, rounds: int = 5) -> float:
    """The fastest round's time per call: the least disturbed by the machine's other load."""
    best = float("inf")
    for _ in range(rounds):
        gm.distributed.barrier()
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


sizes = [2**k for k in range(8, 23, 2)]  # floats: 1 KiB to 16 MiB
buffers = [np.ones(n, np.float32) for n in sizes]
seconds = [timed(lambda b=b: _core.all_reduce_sum(b), 10) for b in buffers]
link = fit_link([4 * n for n in sizes], seconds, job.size)
if args.latency_us is not None and args.bandwidth_gbs is not None:
    link = Link(args.latency_us * 1e-6, args.bandwidth_gbs * 1e9)
header = (
    f"link: latency {link.latency * 1e6:.1f} us, bandwidth {link.bandwidth / 1e9:.2f} GB/s; "
    f"{args.hidden:.0%} of the all-reduce hidden; predicted efficiency at N ranks:"
)
lines = [header]
for name in ("A", "B", "D"):
    spec = WORKLOADS[name]
    model = gometal_model(gm, spec)
    x, y = make_batch(name)
    trainer = gm.Trainer(model, "cross_entropy", "adam", batch_size=spec.batch, distributed=False)
    trainer.train_batch(x, y)
    step = timed(lambda t=trainer, x=x, y=y: t.train_batch(x, y), 5, rounds=3)
    nbytes = 4 * sum(int(np.prod(s)) for s in model.weight_shapes.values())
    predicted = ", ".join(
        f"{p}: {scaling_efficiency(step, nbytes, p, link, args.hidden):.2f}"
        for p in (8, 16, 32, 64, 128, 256)
    )
    lines.append(
        f"{name}: {step * 1e3:.1f} ms/step, {nbytes / 1e6:.1f} MB of gradients; {predicted}"
    )
if job.rank == 0:
    print("\n".join(lines), flush=True)
