"""Where a 2-rank training step's time goes, against one process at 2 threads.

Three configurations at the workload's global batch, run in turn for each round so that
they meet similar machine conditions:
  2x1       mpirun -n 2, 1 thread per rank, half the batch per rank; every rank times
            its steps and, with GOMETAL_PROFILE=1, its kernels: the step's compute (every
            kernel but the collectives) and its collective kernels (the exposed all-reduce
            time: the exchange itself plus the wait for the slower rank). Each rank then
            times a blocking all-reduce of the model's gradient size right after a
            barrier: the exchange alone, no rank late.
  1x1 half  one process, 1 thread, half the batch: one rank's compute with no peer
  1x2       one process, 2 threads, the whole batch
Every configuration also reports the CPU milliseconds its processes used per step (all
threads, all ranks): on a machine whose other load takes most of the cores, wall-clock
times measure the share the scheduler gave each configuration as much as its work.

So a 2x1 step = its compute (against 1x1 half: what running beside the peer costs the
kernels) + the exposed exchange + the wait for the slower rank (the collective kernels'
time less the exchange alone), and its speed against 1x2 is 1x2's step over 2x1's.

B, 3 rounds, load average 8.6-9.5 on the 2 cores (so the wall-clock times hold mostly
waiting for a core), medians: CPU ms per step 2x1 38.8 (both ranks), 2 x 1x1 half 34.1,
1x2 33.6. Splitting the batch costs +1.5 % CPU (each rank's per-step work at half the
batch); the exchange costs the other +14 % (about 2.4 ms per rank per step): a blocking
all-reduce of B's 548,386 gradient floats alone took 1.3 ms CPU per rank (mpirun -n 2, the
default libnbc algorithm; ring, binomial and Rabenseifner took 1.7-3.2 ms in the same
conditions), the MPI_Tests and wake-ups of the overlapped buckets the rest. That is the
0.87x per CPU-second of bench_distributed. In wall-clock the ranks' collective kernels took
26-59 ms per step, of which the exchange alone 6-20 ms and the rest the wait for the
slower rank: under this load a rank waits mostly for its peer to get a core back.

On an AMD EPYC with AVX-512, 3 rounds, medians of CPU ms per step: B (load 12) 2x1 30.4, 2 x
1x1 half 28.8, 1x2 29.1 (the exchange +5.6 %); D (load 7) 2x1 56.0, 2 x 1x1 half 51.4, 1x2
55.7 (+9 %). A blocking all-reduce of B's layout of buckets (386, 524,288 and about 23,700 floats)
alone took 0.41-0.63 ms CPU per rank, of D's (thirteen of at most 65,536) 1.05-1.59 ms, rank
0 more than rank 1 (libnbc's binomial tree for 2 ranks: rank 0 sums); Open MPI's ring and
Rabenseifner algorithms (coll_libnbc_iallreduce_algorithm 1 and 3) spread it evenly but cost
as much or more in all (B 0.55-1.15 ms, D 1.30-1.87 ms per rank) and took longer.

Usage: python benchmarks/bench_distributed_breakdown.py [--workload B] [--rounds 3] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RESULT_TAG = "BREAKDOWN "
COLLECTIVE_KERNEL = re.compile(r"all_reduce_mean(_start|_wait)? ")
PROFILE_LINE = re.compile(r"\s+([\d.]+)%\s+([\d.]+) us\s+(.*)")


def _kernel_milliseconds(profile: str) -> tuple[float, float]:
    """``(collective ms, other kernels' ms)`` per step from an engine profile table; the
    largest plan's table (the training step's) when several were printed."""
    tables: list[tuple[float, float]] = []
    for line in profile.splitlines():
        if line.startswith("gometal profile:"):
            tables.append((0.0, 0.0))
            continue
        match = PROFILE_LINE.match(line)
        if match is None or not tables:
            continue
        micros = float(match.group(2)) / 1e3
        collective, other = tables[-1]
        if COLLECTIVE_KERNEL.match(match.group(3)):
            tables[-1] = (collective + micros, other)
        else:
            tables[-1] = (collective, other + micros)
    return max(tables, key=sum) if tables else (0.0, 0.0)


def _child(workload: str, threads: int, steps: int, profile_dir: str, half: bool) -> None:
    """One rank (or the lone process, on the first half of the batch with ``half``):
    times ``steps`` steps, then its exchange alone."""
    import gc

    import numpy as np

    import gometal as gm
    from _frameworks import _setup_gometal, gometal_model
    from _workload import WORKLOADS, make_batch

    rank, size = 0, 1
    if "OMPI_COMM_WORLD_SIZE" in os.environ:
        job = gm.distributed.init()
        rank, size = job.rank, job.size
    # The profile table goes to stderr when the plan is dropped: one file per rank.
    profile_path = Path(profile_dir) / f"profile{rank}.txt"
    profile_file = open(profile_path, "w")  # noqa: SIM115 (closed after the plan is dropped)
    os.dup2(profile_file.fileno(), 2)
    os.environ["GOMETAL_PROFILE"] = "1"
    x, y = make_batch(workload)
    part = slice(rank * len(x) // size, (rank + 1) * len(x) // size)
    if half:
        part = slice(0, len(x) // 2)
    setup = _setup_gometal(WORKLOADS[workload], x[part], y[part], threads)
    for _ in range(3):
        setup.step()
    gm.distributed.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        setup.step()
    cpu_ms = (time.process_time() - cpu_start) / steps * 1e3
    gm.distributed.barrier()
    step_ms = (time.perf_counter() - start) / steps * 1e3
    exchange_ms = 0.0
    if size > 1:
        gradient_floats = sum(
            w.size for w in gometal_model(gm, WORKLOADS[workload]).get_weights().values()
        )
        gradients = np.ones(gradient_floats, np.float32)
        times = []
        for _ in range(10):
            gm.distributed.barrier()
            t0 = time.perf_counter()
            gm.distributed.all_reduce_mean(gradients)
            times.append(time.perf_counter() - t0)
        exchange_ms = statistics.median(times) * 1e3
    setup = None
    gc.collect()  # drops the plan, which prints its profile table
    gm.set_num_threads(threads)
    sys.stderr.flush()
    profile_file.close()
    collective_ms, compute_ms = _kernel_milliseconds(profile_path.read_text())
    result = {"rank": rank, "step_ms": step_ms, "cpu_ms": cpu_ms, "compute_ms": compute_ms}
    result |= {"collective_ms": collective_ms, "exchange_ms": exchange_ms}
    print(RESULT_TAG + json.dumps(result), flush=True)


def _run(workload: str, ranks: int, threads: int, steps: int, half: bool = False) -> list[dict]:
    """One configuration as a fresh job; every rank's result."""
    import gometal as gm

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    with tempfile.TemporaryDirectory() as profile_dir:
        child = ["--child", "--workload", workload, "--threads", str(threads)]
        child += ["--steps", str(steps), "--profile-dir", profile_dir]
        child += ["--half"] if half else []
        if ranks > 1:
            command = gm.distributed.mpirun_command(
                ranks, str(Path(__file__).resolve()), child, launcher_args=["--oversubscribe"]
            )
        else:
            command = [sys.executable, str(Path(__file__).resolve()), *child]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_TAG)]
    return sorted((json.loads(line[len(RESULT_TAG) :]) for line in lines), key=lambda r: r["rank"])


def main() -> None:
    """Runs the rounds and prints each round's breakdown and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="B", choices=["B", "D"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--profile-dir", help=argparse.SUPPRESS)
    parser.add_argument("--half", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.workload, args.threads, args.steps, args.profile_dir, args.half)
        return
    keys = ("2x1 step", "1x1 half step", "1x2 step", "compute", "exposed exchange", "peer wait")
    rounds: dict[str, list[float]] = {key: [] for key in (*keys, "ratio")}
    for round_index in range(args.rounds):
        load = os.getloadavg()[0]
        ranks = _run(args.workload, 2, 1, args.steps)
        alone = _run(args.workload, 1, 1, args.steps, half=True)[0]
        two_threads = _run(args.workload, 1, 2, args.steps)[0]
        step = max(r["step_ms"] for r in ranks)
        compute = statistics.mean(r["compute_ms"] for r in ranks)
        collective = statistics.mean(r["collective_ms"] for r in ranks)
        exchange = min(statistics.mean(r["exchange_ms"] for r in ranks), collective)
        values = (
            step,
            alone["step_ms"],
            two_threads["step_ms"],
            compute,
            exchange,
            collective - exchange,
        )
        for key, value in zip(keys, values, strict=True):
            rounds[key].append(value)
        rounds["ratio"].append(two_threads["step_ms"] / step)
        cpu = {
            "2x1": sum(r["cpu_ms"] for r in ranks),
            "2 x 1x1 half": 2 * alone["cpu_ms"],
            "1x2": two_threads["cpu_ms"],
        }
        for key, value in cpu.items():
            rounds.setdefault(f"CPU {key}", []).append(value)
        per_rank = ", ".join(
            f"rank {r['rank']} compute {r['compute_ms']:.1f} collectives {r['collective_ms']:.1f}"
            for r in ranks
        )
        print(
            f"round {round_index} ({args.workload}, load {load:.1f}): "
            + ", ".join(f"{key} {value:.1f} ms" for key, value in zip(keys, values, strict=True))
            + f"; 2x1/1x2 {rounds['ratio'][-1]:.2f}x ({per_rank}); CPU ms per step: "
            + ", ".join(f"{key} {value:.1f}" for key, value in cpu.items()),
            flush=True,
        )
    print(
        f"{args.workload} medians over {args.rounds} rounds: "
        + ", ".join(f"{key} {statistics.median(rounds[key]):.1f} ms" for key in keys)
        + f"; 2x1/1x2 {statistics.median(rounds['ratio']):.2f}x; CPU ms per step: "
        + ", ".join(
            f"{key[4:]} {statistics.median(values):.1f}"
            for key, values in rounds.items()
            if key.startswith("CPU ")
        )
    )


if __name__ == "__main__":
    main()
